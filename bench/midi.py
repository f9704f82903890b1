"""MIDI transcription quality: basic-pitch on the full mix against beatforge's per-stem pipeline, on the same renders.

Each render is a song from ``tests/support/midi_truth.py`` with a known score: kick/snare/hat, a bass line in
octave 2 and a monophonic lead in octaves 4-5, 8 bars, stereo, at MusicGen's 32 kHz; tempos 85-174 bpm, eight
keys, a soft chord pad (not in the score, so reporting it costs precision) on every other render and 5 ms of random
timing jitter per hit and note on half of them (the two alternate out of step, so every combination occurs). For every
render, in one run:

* baseline: basic-pitch's note model on the whole mix (``PitchTracker().notes(mono_mix, sr)``, which runs it
  through ``generation/midi/pitch_model.py``, with basic-pitch's default thresholds, which is what its CLI does),
  its notes split into bass (up to ``BASS_MAX_PITCH``) and melody (above)
  at the pipeline's own bass boundary. basic-pitch has no drum output, so its drum columns are "n/a": its note
  onsets fall on the same beat grid as the drums, and scoring them as drum hits would measure the song's rhythm,
  not drum detection;
* beatforge: ``generation.midi.transcribe.transcribe`` (offline harmonic/percussive + low-band stem split, drum hits
  by onset, band rules and kit-adapted templates, ghost snares matched to the kit's own snare, one basic-pitch pass
  over the bass + other stems split at B3, bass onsets moved to the attack, the melody taken as the top voice
  without the bass's partials under a held lead note, its shortest note set by the tempo).

Scores are mir_eval F1 (``tests/support/midi_truth.py``: 50 ms onset window; notes also need the pitch within 50 cents,
offsets ignored); drums per class. Time is CPU seconds (``time.process_time``: all threads of this process)
and wall seconds per second of audio, after one warm-up call each (numba's first-call compile is not counted).

    OMP_NUM_THREADS=1 .venv/bin/python bench/midi.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/midi.py --bars 4 --seeds 1 2

``--set gm`` measures the same way on the realistic set instead (``tests/support/gm_render.py``): real compositions
(Bach chorales, Corelli, Mozart from music21's corpus) played by sampled General MIDI basses and leads over a GM drum
kit, rendered by fluidsynth. ``--soundfont musescore`` is the set transcription is tuned on; ``timgm6mb`` is held
out (measure on it, never tune on it):

    OMP_NUM_THREADS=1 .venv/bin/python bench/midi.py --set gm --soundfont musescore
    OMP_NUM_THREADS=1 .venv/bin/python bench/midi.py --set gm --soundfont timgm6mb
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import librosa
import numpy as np

from generation.midi.notes import Note
from generation.midi.transcribe import BASS_MAX_PITCH, PitchTracker, Transcription, transcribe
from tests.support.gm_render import DEV_SONGS, SOUNDFONTS, GmSong, render_gm_song
from tests.support.midi_truth import DRUM_NAMES, Song, drum_scores, note_scores, render_song

SAMPLE_RATE = 32_000  # MusicGen's
TEMPOS = (85, 95, 105, 120, 128, 140, 150, 174)
KEYS = ("A minor", "E major", "D minor", "C major", "F# minor", "A# major", "G minor", "D major")
PARTS = (*DRUM_NAMES, "bass", "melody")
T = TypeVar("T")

Scores = dict[str, tuple[float, float, float] | None]  # part -> (precision, recall, F1), None: no such output


def _tuples(notes: tuple[Note, ...] | list[Note]) -> list[tuple[float, float, int]]:
    return [(n.start_s, n.end_s, n.pitch) for n in notes]


def score_baseline(song: Song, notes: list[Note]) -> Scores:
    bass = [n for n in notes if n.pitch <= BASS_MAX_PITCH]
    melody = [n for n in notes if n.pitch > BASS_MAX_PITCH]
    out: Scores = dict.fromkeys(DRUM_NAMES)
    out["bass"] = note_scores(song.bass, _tuples(bass))
    out["melody"] = note_scores(song.melody, _tuples(melody))
    return out


def score_pipeline(song: Song, result: Transcription) -> Scores:
    out: Scores = {
        drum: drum_scores(song.drum_times(drum), [h.time_s for h in result.drums if h.drum == drum])
        for drum in DRUM_NAMES
    }
    out["bass"] = note_scores(song.bass, _tuples(result.bass))
    out["melody"] = note_scores(song.melody, _tuples(result.melody))
    return out


def from_gm(song: GmSong) -> Song:
    """A GM render as the synthetic set's type, so both are scored by the same code."""
    return Song(
        samples=song.samples,
        sample_rate=song.sample_rate,
        bpm=song.bpm,
        key=song.spec.key or "",
        drums=[(h.time_s, h.drum) for h in song.drums],
        bass=_tuples(song.bass),
        melody=_tuples(song.melody),
    )


def songs(args: argparse.Namespace) -> Iterator[tuple[str, Song]]:
    """(row label, song) for every render of the chosen set."""
    if args.set == "gm":
        for spec in DEV_SONGS:
            label = f"{spec.name} {spec.bpm:g}"
            yield label, from_gm(render_gm_song(spec, args.soundfont, sample_rate=SAMPLE_RATE))
        return
    for seed in args.seeds:
        for i, bpm in enumerate(TEMPOS):
            key = KEYS[i % len(KEYS)]
            chords = (i + seed) % 2 == 0
            jitter = 5.0 if (i // 2 + seed) % 2 == 0 else 0.0
            song = render_song(
                bpm=bpm,
                bars=args.bars,
                key=key,
                chords=chords,
                jitter_ms=jitter,
                stereo=True,
                sample_rate=SAMPLE_RATE,
                rng=np.random.default_rng(seed * 1000 + bpm),
            )
            yield f"{bpm} {key}{' +pad' if chords else ''}{' 5ms' if jitter else ''} s{seed}", song


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """fn's result, CPU seconds (every thread of this process), wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _f1(value: tuple[float, float, float] | None) -> str:
    return "n/a" if value is None else f"{value[2]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=8, help="bars per render (4/4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="one render per tempo per seed")
    parser.add_argument("--set", choices=("synthetic", "gm"), default="synthetic", help="which songs (see above)")
    parser.add_argument(
        "--soundfont", choices=tuple(SOUNDFONTS), default="musescore", help="GM set: tuning (musescore) or held out"
    )
    args = parser.parse_args()

    print(
        f"python {platform.python_version()}, librosa {librosa.__version__}, numpy {np.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} cores"
    )
    tracker = PitchTracker()
    warm = render_song(bpm=120, bars=2, rng=np.random.default_rng(0), sample_rate=SAMPLE_RATE, stereo=True)
    transcribe(warm.samples, SAMPLE_RATE, tracker=tracker)
    tracker.notes(warm.mono, SAMPLE_RATE)

    what = f"GM renders ({args.soundfont})" if args.set == "gm" else f"{args.bars}-bar renders"
    print(f"{what} at {SAMPLE_RATE} Hz; F1 per part, baseline (basic-pitch on the mix) / beatforge")
    header = f"{'render':34}" + "".join(f"{part:>14}" for part in PARTS)
    print(header)
    rows: list[tuple[Scores, Scores]] = []
    audio_s = base_cpu = base_wall = ours_cpu = ours_wall = 0.0
    for name, song in songs(args):
        notes, cpu, wall = timed(lambda song=song: tracker.notes(song.mono, SAMPLE_RATE))
        base_cpu, base_wall = base_cpu + cpu, base_wall + wall
        result, cpu, wall = timed(lambda song=song: transcribe(song.samples, SAMPLE_RATE, tracker=tracker))
        ours_cpu, ours_wall = ours_cpu + cpu, ours_wall + wall
        audio_s += song.duration_s
        base, ours = score_baseline(song, notes), score_pipeline(song, result)
        rows.append((base, ours))
        print(f"{name:34}" + "".join(f"{_f1(base[p]) + ' / ' + _f1(ours[p]):>14}" for p in PARTS), flush=True)

    def mean(which: int, part: str, k: int) -> str:
        values = [row[which][part] for row in rows]
        if any(v is None for v in values):
            return "n/a"
        return f"{statistics.fmean(v[k] for v in values if v is not None):.2f}"

    for k, label in ((2, "F1"), (0, "precision"), (1, "recall")):
        cells = "".join(f"{mean(0, p, k) + ' / ' + mean(1, p, k):>14}" for p in PARTS)
        print(f"{'mean ' + label + ' (' + str(len(rows)) + ' renders)':34}{cells}")
    print()
    print(f"{'time per second of audio':34}{'CPU s/s':>10}{'wall s/s':>10}")
    print(f"{'baseline: basic-pitch on the mix':34}{base_cpu / audio_s:10.3f}{base_wall / audio_s:10.3f}")
    print(f"{'beatforge transcribe':34}{ours_cpu / audio_s:10.3f}{ours_wall / audio_s:10.3f}")
    print(f"({audio_s:.0f} s of audio in all)")


if __name__ == "__main__":
    main()
