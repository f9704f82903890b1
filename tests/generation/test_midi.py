"""MIDI export: the parts' files, the stems, the pack on disk, bad input, and the command line."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from cli.main import main
from generation.audio.io import read_audio, write_wav
from generation.errors import AudioParameterError
from generation.midi import drums
from generation.midi.drums import detect_drums, quantize
from generation.midi.export import export_midi
from generation.midi.files import BASS_PROGRAM, MELODY_PROGRAM, midi_files, summary_text
from generation.midi.notes import DrumHit, Note, Transcription
from generation.midi.stems import split_hpss
from generation.midi.transcribe import (
    PitchTracker,
    drop_bass_partials,
    drop_overtones,
    drop_quiet_short,
    melody_min_note_ms,
    top_voice,
    transcribe,
)
from tests.support.synth import render_beat

SR = 22_050


@pytest.fixture(scope="module")
def tracker() -> PitchTracker:
    return PitchTracker()


def _tones(pitches: list[int], *, note_s: float = 0.5, sr: int = SR) -> np.ndarray:
    """A plain melody of harmonic tones with soft attacks, one after another."""
    n = int(note_s * sr)
    t = np.arange(n) / sr
    env = np.minimum(1.0, np.minimum(t / 0.01, (note_s - t) / 0.05))
    parts = []
    for p in pitches:
        f = 440.0 * 2 ** ((p - 69) / 12)
        parts.append(sum(np.sin(2 * np.pi * h * f * t) / h for h in (1, 2, 3)) * env * 0.3)
    return np.concatenate(parts).astype(np.float32)[None]


def test_pitch_tracker_finds_a_melody(tracker: PitchTracker) -> None:
    melody = [60, 64, 67, 72, 67, 64]
    notes = tracker.notes(_tones(melody)[0], SR)
    assert [n.pitch for n in notes] == melody
    starts = np.array([n.start_s for n in notes])
    assert np.all(np.abs(starts - 0.5 * np.arange(len(melody))) < 0.05)
    assert all(1 <= n.velocity <= 127 and n.end_s > n.start_s for n in notes)
    assert tracker.notes(_tones(melody)[0], SR, min_pitch=65) == [n for n in notes if n.pitch >= 65]
    assert tracker.notes(np.zeros(SR, np.float32), SR) == []


def test_the_offline_split_sums_back_to_the_mix_and_puts_drums_in_the_drum_stem(rng: np.random.Generator) -> None:
    drums = render_beat(bpm=100, bars=2, sample_rate=SR, bass=False, rng=rng).samples
    tones = render_beat(bpm=100, bars=2, sample_rate=SR, drums=False, chords=True, rng=rng).samples
    for mix in (drums, tones, drums + tones):
        stems = split_hpss(mix, SR)
        assert all(s.shape == mix.shape for _, s in stems.items())
        assert np.abs(stems.drums + stems.bass + stems.other - mix).max() < 1e-3
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    assert rms(split_hpss(drums, SR).drums) > 0.6 * rms(drums)
    assert rms(split_hpss(tones, SR).drums) < 0.1 * rms(tones)
    # the bass line (A2..E3) lives below the crossover, the chords (A4..) above it
    stems = split_hpss(tones, SR)
    freqs = np.fft.rfftfreq(tones.shape[-1], 1 / SR)
    power = {name: np.abs(np.fft.rfft(x[0])) ** 2 for name, x in (("mix", tones), *stems.items())}
    low, high = freqs < 150, freqs > 400
    assert power["bass"][low].sum() > 0.8 * power["mix"][low].sum()
    assert power["bass"][high].sum() < 0.01 * power["bass"].sum()
    assert power["other"][high].sum() > 0.9 * power["mix"][high].sum()


def test_drum_hits_are_sorted_into_kick_snare_and_hat(rng: np.random.Generator) -> None:
    render = render_beat(bpm=120, bars=4, sample_rate=SR, bass=False, rng=rng)
    hits = detect_drums(render.mono, SR)
    by_drum = {d: [h.time_s for h in hits if h.drum == d] for d in ("kick", "snare", "hat")}
    beat = 0.5
    # kick on beats 1 and 3, snare on 2 and 4, hats on every eighth, those under the kicks and snares too
    expected = {
        "kick": [b * 4 * beat + k * 2 * beat for b in range(4) for k in range(2)],
        "snare": [b * 4 * beat + (2 * k + 1) * beat for b in range(4) for k in range(2)],
        "hat": [i * beat / 2 for i in range(32)],
    }
    for drum, times in expected.items():
        assert len(by_drum[drum]) == len(times), (drum, by_drum[drum])
        assert np.abs(np.array(by_drum[drum]) - np.array(times)).max() < 0.03, drum
    assert detect_drums(np.zeros(SR, np.float32), SR) == []


def _snare(n: int, amp: float, rng: np.random.Generator) -> np.ndarray:
    """A snare: a 190 Hz shell tone and band-passed noise, decaying over ~60 ms."""
    t = np.arange(n) / SR
    noise = np.convolve(rng.standard_normal(n), np.hanning(9) * np.cos(np.pi * np.arange(9) / 2.5), "same")
    return (amp * np.exp(-t / 0.06) * (0.6 * np.sin(2 * np.pi * 190 * t) + 0.4 * noise)).astype(np.float32)


def test_ghost_snares_matching_the_kits_snare_are_found(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    y = np.zeros(6 * SR, np.float32)
    n = SR // 4
    t = np.arange(n) / SR
    for b in range(6):  # a kick on every beat, the backbeat snare on its "and", a ghost snare 28 dB down before it
        y[b * SR : b * SR + n] += (np.exp(-t / 0.08) * np.sin(2 * np.pi * 55 * t)).astype(np.float32)
        y[b * SR + SR // 2 : b * SR + SR // 2 + n] += _snare(n, 1.0, rng)
        y[b * SR + SR // 4 : b * SR + SR // 4 + n] += _snare(n, 0.04, rng)
        for at in (b * SR, b * SR + SR // 2):  # closed hats with the kick and the snare
            y[at : at + n] += (0.3 * np.exp(-t / 0.02) * np.diff(rng.standard_normal(n + 1))).astype(np.float32)
    ghosts = [b + 0.25 for b in range(6)]

    def snares() -> list[float]:
        return [h.time_s for h in detect_drums(y, SR) if h.drum == "snare"]

    found = snares()
    assert all(any(abs(s - g) < 0.03 for s in found) for g in ghosts), found
    assert len(found) == 12, found
    monkeypatch.setattr(drums, "GHOST_MATCH", 2.0)  # no match possible: the band rules alone miss the ghosts
    assert not any(any(abs(s - g) < 0.03 for s in snares()) for g in ghosts)


def test_ghost_snares_under_a_hat_are_found_where_no_note_starts(rng: np.random.Generator) -> None:
    y = np.zeros(6 * SR, np.float32)
    n = SR // 4
    t = np.arange(n) / SR
    for b in range(6):  # hats on every sixteenth of a 1 s beat, a ghost snare under the second one
        y[b * SR : b * SR + n] += (np.exp(-t / 0.08) * np.sin(2 * np.pi * 55 * t)).astype(np.float32)
        y[b * SR + SR // 2 : b * SR + SR // 2 + n] += _snare(n, 1.0, rng)
        y[b * SR + SR // 4 : b * SR + SR // 4 + n] += _snare(n, 0.04, rng)
        for at in (b * SR + k * n for k in range(4)):
            y[at : at + n] += (0.1 * np.exp(-t / 0.02) * np.diff(rng.standard_normal(n + 3), 3)).astype(np.float32)
    ghosts = [b + 0.25 for b in range(6)]

    def found(onsets: list[float] | None) -> int:
        hits = [h.time_s for h in detect_drums(y, SR, pitched_onsets=onsets) if h.drum == "snare"]
        return sum(any(abs(s - g) < 0.03 for s in hits) for g in ghosts)

    assert found([]) == 6
    assert found(None) == 0  # no notes known: a hat's low range may hold a note's attack, so none is looked for
    assert found([g + 0.01 for g in ghosts[:3]]) == 3  # a note starting there explains the low range instead


def test_quantize_snaps_to_sixteenths_and_merges_duplicates() -> None:
    beats = np.arange(0, 4, 0.5)
    hits = [DrumHit(0.13, "hat", 90), DrumHit(0.118, "hat", 80), DrumHit(0.49, "kick", 100), DrumHit(1.01, "snare", 70)]
    snapped = quantize(hits, beats)
    assert [(h.time_s, h.drum) for h in snapped] == [(0.125, "hat"), (0.5, "kick"), (1.0, "snare")]
    assert quantize(hits, np.array([1.0])) == hits  # no grid, no change


def test_quieter_overtones_are_dropped_but_doublings_and_later_notes_stay() -> None:
    low = Note(0.0, 1.0, 45, 100)
    twelfth, fifth_harmonic = Note(0.01, 1.0, 64, 40), Note(0.02, 1.0, 73, 30)
    doubled = Note(0.0, 1.0, 57, 100)  # an octave doubling as loud as its root stays
    later = Note(0.5, 1.0, 57, 40)  # the same pitch as a new note, not at the root's onset
    notes = [low, twelfth, fifth_harmonic, doubled, later]
    assert drop_overtones(notes, notes) == [low, doubled, later]


def test_top_voice_keeps_the_highest_note_of_each_onset() -> None:
    lead, under = Note(0.0, 0.5, 72, 60), Note(0.03, 0.5, 64, 90)  # a louder lower note at the same onset goes
    held = Note(0.2, 0.6, 67, 50)  # a note starting under a sustained lead note is a later onset: it stays
    solo = Note(1.0, 1.5, 60, 40)
    assert top_voice([lead, under, held, solo]) == [lead, held, solo]


def test_bass_partials_under_a_held_lead_note_are_dropped() -> None:
    bass = [Note(0.5, 1.0, 48, 100), Note(1.5, 2.0, 50, 100)]
    held = Note(0.0, 1.2, 79, 80)  # the lead holds G5 over the bass's C3
    partial = Note(0.51, 0.9, 67, 40)  # G4: C3's third harmonic, starting with it, under the held lead
    new_lead = Note(1.52, 2.0, 74, 80)  # D5 two octaves over D3, but nothing higher is held: a lead note
    short = Note(0.9, 1.1, 60, 40)  # the lead's end is too close to count as held, and C4 starts with no bass
    assert drop_bass_partials([held, partial, short, new_lead], bass) == [held, short, new_lead]


def test_short_melody_notes_need_a_fast_tempo_and_a_firm_onset() -> None:
    assert melody_min_note_ms(124.0, 127.7) == pytest.approx(0.8 * 15000 / 124)  # 0.8 of a sixteenth
    assert melody_min_note_ms(90.0, 127.7) == 127.7  # slower: basic-pitch's own minimum stays
    assert melody_min_note_ms(None, 127.7) == 127.7
    firm, faint = Note(0.0, 0.105, 76, 80), Note(0.2, 0.305, 74, 40)  # both shorter than 127.7 ms
    long_faint = Note(0.4, 0.8, 72, 30)
    assert drop_quiet_short([firm, faint, long_faint], 127.7) == [firm, long_faint]


def _transcription(bpm: float | None = 93.0) -> Transcription:
    return Transcription(
        drums=(DrumHit(0.0, "kick", 110), DrumHit(0.0, "hat", 70), DrumHit(0.3226, "snare", 100)),
        bass=(Note(0.0, 0.6, 45, 90), Note(0.65, 1.2, 48, 80)),
        melody=(Note(0.1, 0.5, 69, 70), Note(0.5, 0.9, 72, 60), Note(0.5, 0.9, 76, 60)),
        bpm=bpm,
        key="A minor",
        separation="harmonic/percussive split (offline)",
        quantized=True,
        duration_s=1.5,
    )


def test_midi_files_carry_tempo_programs_and_the_drum_channel() -> None:
    files = midi_files(_transcription())
    assert set(files) == {"drums.mid", "bass.mid", "melody.mid", "full.mid"}
    parsed = {name: pretty_midi.PrettyMIDI(io.BytesIO(data)) for name, data in files.items()}
    for midi in parsed.values():
        _, tempi = midi.get_tempo_changes()
        assert tempi[0] == pytest.approx(93.0, abs=0.01)
    (drums,) = parsed["drums.mid"].instruments
    assert drums.is_drum and sorted(n.pitch for n in drums.notes) == [36, 38, 42]
    (bass,) = parsed["bass.mid"].instruments
    assert bass.program == BASS_PROGRAM and [n.pitch for n in bass.notes] == [45, 48]
    assert bass.notes[1].start == pytest.approx(0.65, abs=0.01) and bass.notes[0].velocity == 90
    (melody,) = parsed["melody.mid"].instruments
    assert melody.program == MELODY_PROGRAM and len(melody.notes) == 3
    full = parsed["full.mid"].instruments
    assert [(i.is_drum, len(i.notes)) for i in full] == [(True, 3), (False, 2), (False, 3)]
    _, tempi = pretty_midi.PrettyMIDI(io.BytesIO(midi_files(_transcription(None))["full.mid"])).get_tempo_changes()
    assert tempi[0] == pytest.approx(120.0)  # no steady beat: 120 so seconds still line up


def test_summary_says_what_was_found_and_how() -> None:
    text = summary_text(_transcription(), source="beat #4")
    assert "beat #4" in text and "93.0 bpm" in text and "A minor" in text
    assert "3 hits (1 kick, 1 snare, 1 hat), quantised" in text and "Bass: 2 notes" in text
    assert "Melody: 3 notes" in text and "harmonic/percussive split" in text
    assert "no steady beat" in summary_text(_transcription(None), source="x")


def test_export_writes_the_pack_and_stems_with_a_preview_over_the_limit(
    tmp_path: Path, tracker: PitchTracker, rng: np.random.Generator
) -> None:
    render = render_beat(bpm=110, bars=4, sample_rate=SR, chords=True, rng=rng)
    files = export_midi(
        render.samples, sample_rate=SR, tracker=tracker, out_dir=tmp_path, stem="t", source="test", with_stems=True,
        preview_limit=400_000,
    )  # fmt: skip
    with zipfile.ZipFile(files.pack) as zf:
        assert sorted(zf.namelist()) == ["README.txt", "bass.mid", "drums.mid", "full.mid", "melody.mid"]
        assert zf.read("README.txt").decode() == files.summary
        drums = pretty_midi.PrettyMIDI(io.BytesIO(zf.read("drums.mid"))).instruments[0]
    assert files.info["drum_hits"] == len(drums.notes) > 20 and abs(files.info["bpm"] - 110) < 1.5
    assert files.info["bass_notes"] > 0 and files.info["key"] == "A minor" and files.info["quantized"]
    assert files.stems is not None and files.stems.stat().st_size > 400_000
    with zipfile.ZipFile(files.stems) as zf:
        assert sorted(zf.namelist()) == ["bass.flac", "drums.flac", "other.flac"]
        data, sr = sf.read(io.BytesIO(zf.read("drums.flac")))
        assert sr == SR and data.shape[0] == render.samples.shape[-1]
    assert files.stems_preview is not None and files.stems_preview.stat().st_size <= 400_000
    with zipfile.ZipFile(files.stems_preview) as zf:
        assert sorted(zf.namelist()) == ["bass.mp3", "drums.mp3", "other.mp3"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_audio_without_drums_gets_no_drum_hits(tracker: PitchTracker) -> None:
    tr = transcribe(_tones([60, 64, 67, 72]), SR, tracker=tracker)
    assert tr.drums == () and [n.pitch for n in tr.melody] == [60, 64, 67, 72]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_bad_input_is_refused_with_a_reason(tmp_path: Path, tracker: PitchTracker) -> None:
    with pytest.raises(AudioParameterError, match="empty"):
        read_audio(_write(tmp_path / "empty.wav", b""))
    with pytest.raises(AudioParameterError, match="not a readable audio file"):
        read_audio(_write(tmp_path / "notes.wav", b"these are my notes, not audio"))
    good = tmp_path / "good.wav"
    write_wav(good, _tones([60, 62]), sample_rate=SR)
    with pytest.raises(AudioParameterError, match="not a readable audio file"):
        read_audio(_write(tmp_path / "corrupt.wav", good.read_bytes()[:30]))  # header cut short
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(20 * 60 * 1000, np.int16), 1000, subtype="PCM_16")  # 20 minutes at 1 kHz
    with pytest.raises(AudioParameterError, match=r"^long.wav is 20:00 long; the limit is 10:00$"):
        read_audio(long, max_seconds=600)  # said once, not re-worded as "not a readable audio file (...)"
    (tmp_path / "stems.wav").mkdir()
    with pytest.raises(AudioParameterError, match=r"^stems.wav is a folder, not an audio file$"):
        read_audio(tmp_path / "stems.wav")
    with pytest.raises(AudioParameterError) as refused:
        read_audio(_write(tmp_path / "lyrics.wav", b"my lyrics\n"), name="my song.wav")
    assert str(refused.value).startswith("my song.wav is not a readable audio file")
    assert str(tmp_path) not in str(refused.value) and "lyrics.wav" not in str(refused.value)
    with pytest.raises(AudioParameterError, match="silent"):
        transcribe(np.zeros((2, SR * 3), np.float32), SR, tracker=tracker)
    with pytest.raises(AudioParameterError, match="non-finite"):
        transcribe(np.full((1, SR), np.nan, np.float32), SR, tracker=tracker)


def test_cli_writes_the_pack_and_reports_bad_files(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = tmp_path / "My Beat.wav"
    write_wav(audio, render_beat(bpm=95, bars=3, sample_rate=SR, rng=rng).samples, sample_rate=SR)
    assert main(["--json", "midi", str(audio), "--out", str(tmp_path / "out"), "--stems", "--zip"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["midi"].endswith("my-beat-midi.zip") and report["stems"].endswith("my-beat-stems.zip")
    assert Path(report["midi"]).is_file() and Path(report["stems"]).is_file()
    assert report["drum_hits"] > 0 and captured.err == ""  # --json: the result alone, no human summary

    assert main(["midi", str(_write(tmp_path / "x.mp3", b"")), "--out", str(tmp_path / "bad")]) == 2  # bad input
    assert "x.mp3 is empty" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_stems_too_big_for_any_preview_get_none(
    tmp_path: Path, tracker: PitchTracker, rng: np.random.Generator
) -> None:
    render = render_beat(bpm=120, bars=2, sample_rate=SR, rng=rng)
    files = export_midi(
        render.samples, sample_rate=SR, tracker=tracker, out_dir=tmp_path, stem="t", source="t", with_stems=True,
        preview_limit=5_000,
    )  # fmt: skip
    assert files.stems is not None and files.stems_preview is None  # the bot links to the full stems instead
