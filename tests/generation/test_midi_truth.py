"""The MIDI ground truth (tests/midi_truth.py) must be right before it can rate a transcriber: checked here with
plain numpy (no librosa, no basic-pitch), so a wrong score can't hide behind the code it is meant to test."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import numpy.typing as npt
import pytest

from tests.support.midi_truth import (
    BASS_RANGE,
    DRUM_NAMES,
    MELODY_RANGE,
    drum_scores,
    note_scores,
    render_song,
)


def _band_energy(mono: npt.NDArray[np.float32], sr: int, start_s: float, seconds: float) -> float:
    """Mean square of the high-passed signal (first difference: attacks of any drum stand out) in a window."""
    a, b = max(round(start_s * sr), 0), max(round((start_s + seconds) * sr), 0)
    x = np.diff(mono[a:b].astype(np.float64))
    return float(np.mean(x**2)) if x.size else 0.0


def _dominant_midi(mono: npt.NDArray[np.float32], sr: int, start_s: float, end_s: float) -> int:
    """The MIDI note nearest the strongest spectral peak in the middle of a note (the tones' fundamentals are
    their strongest partials)."""
    mid, half = (start_s + end_s) / 2, min(0.1, (end_s - start_s) / 3)
    x = mono[round((mid - half) * sr) : round((mid + half) * sr)].astype(np.float64)
    n = 1 << 16  # zero-padded: 0.34 Hz bins, fine enough to tell E1 from F1
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), n))
    hz = np.argmax(spectrum) * sr / n
    return round(69 + 12 * np.log2(hz / 440.0))


@pytest.mark.parametrize("jitter_ms", [0.0, 5.0])
def test_every_drum_hit_is_an_attack(jitter_ms: float) -> None:
    song = render_song(bpm=110, bars=4, rng=np.random.default_rng(3), melody=False, bass=False, jitter_ms=jitter_ms)
    mono, sr = song.mono, song.sample_rate
    assert {name for _, name in song.drums} == set(DRUM_NAMES)
    times = [t for t, _ in song.drums]
    checked = 0
    for t, name in song.drums:
        if any(t - 0.025 <= u < t for u in times):  # (with jitter) another hit just before: its attack is "before"
            continue
        after = _band_energy(mono, sr, t, 0.01)
        before = _band_energy(mono, sr, t - 0.012, 0.01)
        assert after > 4 * before + 1e-9, (t, name, after, before)
        checked += 1
    assert checked >= len(times) // 2
    # and nothing sounds where the truth has no hit: 30 ms after the middle of a gap of over 80 ms is quiet
    gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a > 0.08]
    loud = max(_band_energy(mono, sr, t, 0.01) for t in times)
    for a, b in gaps:
        assert _band_energy(mono, sr, (a + b) / 2 + 0.03, 0.01) < loud / 20, (a, b)


def test_drum_pattern() -> None:
    song = render_song(bpm=120, bars=8, rng=np.random.default_rng(0), melody=False, bass=False)
    beat = 0.5
    kicks, snares, hats = (song.drum_times(d) for d in DRUM_NAMES)
    assert hats == pytest.approx([i * beat / 2 for i in range(8 * 8)])  # every eighth
    assert snares == pytest.approx([b * 4 * beat + s * beat for b in range(8) for s in (1, 3)])  # 2 and 4
    bars = [[round((t % (4 * beat)) / (beat / 4)) for t in kicks if int(t // (4 * beat)) == b] for b in range(8)]
    assert all(positions[0] == 0 for positions in bars)  # always on 1
    assert bars[0] == [0, 10]  # 1 and the "and" of 3
    assert len({tuple(positions) for positions in bars}) > 1  # with variations


@pytest.mark.parametrize(("key", "part"), [("A minor", "bass"), ("A minor", "melody"), ("E major", "melody")])
def test_truth_pitches_are_what_sounds(key: str, part: str) -> None:
    song = render_song(
        bpm=100,
        bars=4,
        key=key,
        rng=np.random.default_rng(5),
        drums=False,
        bass=part == "bass",
        melody=part == "melody",
    )
    notes = getattr(song, part)
    assert len(notes) >= 4 * (2 if part == "bass" else 4)  # a few bass notes, several lead notes per bar
    low, high = BASS_RANGE if part == "bass" else MELODY_RANGE
    assert all(low <= pitch <= high for _, _, pitch in notes)
    for start, end, pitch in notes:
        assert end > start
        assert _dominant_midi(song.mono, song.sample_rate, start, end) == pitch, (start, pitch)
    assert len({pitch for _, _, pitch in notes}) >= 3  # a line, not one note


def test_melody_is_monophonic_and_in_key() -> None:
    song = render_song(bpm=140, bars=8, key="D minor", rng=np.random.default_rng(8), jitter_ms=5.0, chords=True)
    for (_, end, _), (start, _, _) in itertools.pairwise(song.melody):
        assert end <= start
    d_minor = {(2 + step) % 12 for step in (0, 2, 3, 5, 7, 8, 10)}
    assert {pitch % 12 for _, _, pitch in song.melody + song.bass} <= d_minor | {1}  # C# is the V chord's third


def test_render_is_deterministic_per_seed_and_well_formed() -> None:
    kwargs = {"bpm": 95, "bars": 2, "chords": True, "jitter_ms": 5.0, "stereo": True}
    a = render_song(rng=np.random.default_rng(11), **kwargs)
    b = render_song(rng=np.random.default_rng(11), **kwargs)
    c = render_song(rng=np.random.default_rng(12), **kwargs)
    assert np.array_equal(a.samples, b.samples)
    assert (a.drums, a.bass, a.melody) == (b.drums, b.bass, b.melody)
    assert a.melody != c.melody
    assert a.samples.dtype == np.float32
    assert a.samples.shape == (2, round((2 * 4 * 60 / 95 + 0.5) * 22_050))
    assert float(np.abs(a.samples).max()) == pytest.approx(0.9, abs=1e-6)
    assert all(0.0 <= t < a.duration_s for t, _ in a.drums)


def test_note_scores() -> None:
    ref = [(0.0, 0.4, 60), (0.5, 0.9, 64), (1.0, 1.4, 67), (1.5, 1.9, 72)]
    assert note_scores(ref, ref) == (1.0, 1.0, 1.0)
    # onsets 30 ms late and offsets anywhere still count; 70 ms late does not
    assert note_scores(ref, [(s + 0.03, e + 0.3, p) for s, e, p in ref]) == (1.0, 1.0, 1.0)
    assert note_scores(ref, [(s + 0.07, e, p) for s, e, p in ref]) == (0.0, 0.0, 0.0)
    # a semitone off is a different note
    assert note_scores(ref, [(s, e, p + 1) for s, e, p in ref])[2] == 0.0
    # half the notes missed: precision stays 1, recall halves
    precision, recall, f1 = note_scores(ref, ref[:2])
    assert (precision, recall) == (1.0, 0.5)
    assert f1 == pytest.approx(2 / 3)
    # one extra note: precision 4/5
    assert note_scores(ref, [*ref, (2.0, 2.4, 50)])[0] == pytest.approx(0.8)
    # a zero-length estimate still counts by its onset
    assert note_scores(ref[:1], [(0.0, 0.0, 60)]) == (1.0, 1.0, 1.0)


def test_drum_scores() -> None:
    ref = [0.0, 0.5, 1.0, 1.5]
    assert drum_scores(ref, ref) == (1.0, 1.0, 1.0)
    assert drum_scores(ref, list(reversed(ref))) == (1.0, 1.0, 1.0)
    assert drum_scores(ref, [t + 0.04 for t in ref]) == (1.0, 1.0, 1.0)
    assert drum_scores(ref, [t + 0.06 for t in ref]) == (0.0, 0.0, 0.0)
    precision, recall, f1 = drum_scores(ref, [0.0, 0.5, 0.75])
    assert (precision, recall) == pytest.approx((2 / 3, 0.5))
    assert f1 == pytest.approx(4 / 7)


def test_empty_lists_score_zero_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert note_scores([], []) == (0.0, 0.0, 0.0)
        assert note_scores([(0.0, 0.5, 60)], []) == (0.0, 0.0, 0.0)
        assert note_scores([], [(0.0, 0.5, 60)]) == (0.0, 0.0, 0.0)
        assert drum_scores([], []) == (0.0, 0.0, 0.0)
        assert drum_scores([0.5], []) == (0.0, 0.0, 0.0)
        assert drum_scores([], [0.5]) == (0.0, 0.0, 0.0)
