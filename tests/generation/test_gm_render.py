"""The realistic development set (tests/support/gm_render.py): its ground truth must be what the audio plays,
or every figure measured on it (bench/midi.py --set gm, the loop downbeat checks) is wrong."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from generation.midi.transcribe import BASS_MAX_PITCH
from tests.support.gm_render import (
    BEATS_PER_BAR,
    DEV_SONGS,
    GROOVES,
    TAIL_S,
    _truth,
    _write_midi,
    fluidsynth_available,
    render_gm_song,
)


def _need_fluidsynth() -> None:
    """Skip without fluidsynth on a developer machine; in CI (scripts/test installs it) a missing one fails."""
    if not fluidsynth_available():
        if os.environ.get("CI"):
            pytest.fail("fluidsynth and the GM SoundFonts must be installed in CI (scripts/test installs them)")
        pytest.skip("fluidsynth or a GM SoundFont is not installed (apt-get install fluidsynth ...; see scripts/test)")


@pytest.mark.parametrize("spec", DEV_SONGS, ids=lambda s: s.name)
def test_dev_song_scores_fit_the_transcriber_parts(spec, tmp_path: Path) -> None:
    """Bass notes sit at or under the pipeline's bass/melody split and lead notes above it, songs last 20-40 s
    (the truth alone: no rendering needed)."""
    _write_midi(spec, tmp_path / "song.mid")
    bass, melody, drums = _truth(tmp_path / "song.mid")
    assert bass and melody and drums
    assert max(n.pitch for n in bass) <= BASS_MAX_PITCH < min(n.pitch for n in melody)
    assert 20 <= spec.bars * BEATS_PER_BAR * 60 / spec.bpm <= 40
    assert 84 <= spec.bpm <= 150
    assert spec.groove in GROOVES


def test_short_song_renders_with_truth_where_the_audio_is() -> None:
    import librosa

    _need_fluidsynth()
    spec = replace(DEV_SONGS[0], name="test-short", bars=2)
    song = render_gm_song(spec, "musescore")
    sr = song.sample_rate
    bar_s = BEATS_PER_BAR * 60 / spec.bpm
    assert song.samples.dtype == np.float32 and song.samples.shape[0] == 2
    assert song.duration_s == pytest.approx(2 * bar_s + TAIL_S, abs=1e-3)
    assert song.downbeats_s == pytest.approx([0.0, bar_s])
    assert song.beats_per_bar == 4 and song.bpm == spec.bpm

    # the counts: every groove hit of the two bars is in the truth, each part has its notes
    expected = [h for bar in range(2) for h in GROOVES[spec.groove](bar, np.random.default_rng(0))]
    assert len(song.drums) == len(expected)
    for drum, key in (("kick", 36), ("snare", 38), ("hat", 42)):
        assert len(song.drum_times(drum)) == sum(1 for _, k, _ in expected if k == key)
    assert len(song.bass) >= 4 and len(song.melody) >= 4

    # the audio: an onset at every kick and snare the truth lists (fluidsynth adds no delay), and the bass's
    # harmonics sounding while the MIDI says each note plays
    hop = 256
    lead = 8 * hop  # silence in front, so the hit at 0 s shows as a rise too
    env = librosa.onset.onset_strength(y=np.concatenate([np.zeros(lead, np.float32), song.mono]), sr=sr, hop_length=hop)
    typical = float(np.median(env))
    for t in song.drum_times("kick") + song.drum_times("snare"):
        frame = round((t * sr + lead) / hop)
        assert env[max(0, frame - 2) : frame + 4].max() > 3 * typical, f"no onset at the hit at {t:.3f} s"
    spec_mag = np.abs(librosa.stft(song.mono, n_fft=4096, hop_length=hop))
    freqs = librosa.fft_frequencies(sr=sr, n_fft=4096)
    ratios = []
    for note in song.bass:  # energy on the note's first three harmonics against just beside them
        f0 = float(librosa.midi_to_hz(note.pitch))
        on = sum(spec_mag[(freqs > f0 * h * 0.985) & (freqs < f0 * h * 1.015)].sum(axis=0) for h in (1, 2, 3))
        off = sum(spec_mag[(freqs > f0 * h * 1.04) & (freqs < f0 * h * 1.07)].sum(axis=0) for h in (1, 2, 3))
        a, b = round(note.start_s * sr / hop) + 4, round(note.end_s * sr / hop)
        ratios.append(on[a:b].mean() / max(off[a:b].mean(), 1e-9))
    assert float(np.median(ratios)) > 2.0, "the bass the truth lists is not what sounds"
    # nothing sounds before the first hit, which is at 0 s
    assert float(np.max(np.abs(song.samples[:, : int(0.002 * sr)]))) < 0.05
    assert song.drums[0].time_s == 0.0


def test_cached_render_is_identical() -> None:
    _need_fluidsynth()
    spec = replace(DEV_SONGS[0], name="test-short", bars=2)
    first, again = render_gm_song(spec, "musescore"), render_gm_song(spec, "musescore")
    np.testing.assert_array_equal(first.samples, again.samples)
    assert first.bass == again.bass and first.drums == again.drums
