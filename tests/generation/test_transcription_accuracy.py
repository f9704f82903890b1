"""How well ``generation.midi.transcribe`` hears a beat, scored against the score it was rendered from.

Three songs from ``tests/midi_truth.py`` (different tempos, keys and feels: plain, with a pad and human timing,
fast) go through the real pipeline (offline stem split, drum detector, basic-pitch on the bass and melody stems);
each part's F1 (mir_eval, 50 ms onsets) must stay at or above a floor set a little below what the pipeline
reached when the floors were calibrated, so a change that makes any part worse fails here even when the
pipeline still runs. The songs are rendered at 32 kHz because that is what MusicGen hands the pipeline.
``bench/midi.py`` measures the same thing on more songs, against basic-pitch on the full mix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from generation.midi.transcribe import PitchTracker, Transcription, transcribe
from tests.support.midi_truth import DRUM_NAMES, Song, drum_scores, note_scores, render_song

PARTS = (*DRUM_NAMES, "bass", "melody")
SONGS: dict[str, dict[str, Any]] = {
    "120 A minor": {"bpm": 120, "key": "A minor", "seed": 1},
    "96 E major +pad 5ms": {"bpm": 96, "key": "E major", "seed": 2, "chords": True, "jitter_ms": 5.0},
    "140 D minor 5ms": {"bpm": 140, "key": "D minor", "seed": 3, "jitter_ms": 5.0},
}
# F1 floors per song and part, about 0.07 (two or three notes or hits) under what the pipeline reached when they
# were set (in the comments). Why they are not higher: kicks, because every snare's 185 Hz body also passes as a
# kick and a kick alone between hi-hats raises no onset; hats, because one under a snare is not reported (by
# design, see generation/drums.py); bass and melody, because basic-pitch reports these bright synth tones'
# octaves and twelfths as notes of their own, and the pad's notes as melody.
FLOORS: dict[str, dict[str, float]] = {
    "120 A minor": {"kick": 0.65, "snare": 0.9, "hat": 0.8, "bass": 0.55, "melody": 0.68},  # .72 1 .86 .63 .75
    "96 E major +pad 5ms": {"kick": 0.65, "snare": 0.9, "hat": 0.8, "bass": 0.52, "melody": 0.42},  # .72 1 .86 .59 .49
    "140 D minor 5ms": {"kick": 0.68, "snare": 0.9, "hat": 0.8, "bass": 0.63, "melody": 0.67},  # .76 1 .86 .71 .74
}


def _render(spec: dict[str, Any]) -> Song:
    kwargs = {k: v for k, v in spec.items() if k != "seed"}
    return render_song(bars=6, rng=np.random.default_rng(spec["seed"]), sample_rate=32_000, stereo=True, **kwargs)


def part_f1(song: Song, result: Transcription, part: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of one part: a drum class's hit times, or the bass's or melody's notes."""
    if part in DRUM_NAMES:
        return drum_scores(song.drum_times(part), [h.time_s for h in result.drums if h.drum == part])
    est = [(n.start_s, n.end_s, n.pitch) for n in getattr(result, part)]
    return note_scores(getattr(song, part), est)


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, tuple[float, float, float]]]:
    """Every song transcribed once (the slow part: ~2 s each, plus numba's first-call compile)."""
    tracker = PitchTracker()
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name, spec in SONGS.items():
        song = _render(spec)
        result = transcribe(song.samples, song.sample_rate, tracker=tracker)
        out[name] = {part: part_f1(song, result, part) for part in PARTS}
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("song", SONGS)
def test_f1_floor(scores: dict[str, dict[str, tuple[float, float, float]]], song: str, part: str) -> None:
    precision, recall, f1 = scores[song][part]
    assert f1 >= FLOORS[song][part], f"{song} {part}: F1 {f1:.2f} (P {precision:.2f} R {recall:.2f})"
