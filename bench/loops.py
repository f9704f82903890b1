"""Loop quality: beatforge's make_loop against the reference system's naive cut, on the same synthetic renders.

Each render is a drum + bass (+ chords on every other one) beat from ``tests/support/synth.py`` at a known tempo, with
5 ms of random timing jitter per hit and the first downbeat at 0 s (as MusicGen's output starts), 12 bars long.
For every render, in one run:

* baseline: the reference system's approach (audio-loop-gen's BeatDetect strategy): librosa's plain
  ``beat_track`` tempo, taken at face value, gives the loop length (``--bars`` bars of 4 beats), and the loop is
  the first that many seconds of the audio, hard-cut (``generation.loops.cut.naive_loop``). audio-loop-gen itself
  cuts from the first tracked beat to the *start* of the last beat, one beat shorter still; this baseline is the
  kinder version of it;
* beatforge: ``generation.loops.cut.make_loop(bars=--bars)``.

Both are rated by ``generation.loops.seam.seam_score`` (1.0: the seam changes the sound as much as the music does at
the same kind of moment; higher is worse) and by their tempo error (%) and loop-length error (ms) against the
render's ground truth (``--bars`` bars at the true tempo).

    .venv/bin/python bench/loops.py
    .venv/bin/python bench/loops.py --bars 8 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import librosa
import numpy as np

from generation.loops.cut import make_loop, naive_loop
from generation.loops.seam import seam_score
from tests.support.synth import render_beat

TEMPOS = (75, 90, 110, 120, 128, 140, 160, 174)
SAMPLE_RATE = 32_000  # MusicGen's


def librosa_tempo(mono: np.ndarray, sample_rate: int) -> float:
    """What the reference system does: librosa's beat tracker at its defaults (22.05 kHz, hop 512)."""
    y = librosa.resample(mono, orig_sr=sample_rate, target_sr=22_050)
    tempo, _ = librosa.beat.beat_track(y=y / np.abs(y).max(), sr=22_050)
    return float(np.atleast_1d(tempo)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=4, help="loop length in bars of 4 beats")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="one render per tempo per seed")
    parser.add_argument("--jitter-ms", type=float, default=5.0, help="timing jitter per hit (standard deviation)")
    args = parser.parse_args()
    if not 1 <= args.bars <= 8:
        parser.error("--bars must be 1..8 (the renders are 12 bars long)")

    print(f"python {platform.python_version()}, librosa {librosa.__version__}, numpy {np.__version__}")
    print(f"{args.bars}-bar loops from 12-bar renders at {SAMPLE_RATE} Hz, {args.jitter_ms:g} ms jitter")
    header = f"{'render':24} {'seam: naive':>12} {'beatforge':>10} {'bpm err %: naive':>17} {'beatforge':>10}"
    print(f"{header} {'len err ms: naive':>18} {'beatforge':>10} {'time ms':>8}")
    rows: list[tuple[float, float, float, float, float, float, float]] = []
    for seed in args.seeds:
        for i, bpm in enumerate(TEMPOS):
            chords = (i + seed) % 2 == 0
            rng = np.random.default_rng(seed * 1000 + bpm)
            render = render_beat(
                bpm=bpm, bars=12, jitter_ms=args.jitter_ms, chords=chords, stereo=True, rng=rng, sample_rate=SAMPLE_RATE
            )
            true_s = args.bars * render.bar_seconds

            guess = librosa_tempo(render.mono, SAMPLE_RATE)
            naive = naive_loop(render.samples, sr=SAMPLE_RATE, seconds=args.bars * 4 * 60 / guess)
            naive_seam = seam_score(naive, sr=SAMPLE_RATE)

            started = time.perf_counter()
            loop = make_loop(render.samples, sr=SAMPLE_RATE, bars=args.bars)
            elapsed = time.perf_counter() - started

            row = (
                naive_seam,
                loop.seam_score,
                100 * abs(guess / bpm - 1),
                100 * abs(loop.bpm_detected / bpm - 1),
                1000 * abs(naive.shape[-1] / SAMPLE_RATE - true_s),
                1000 * abs(loop.samples.shape[-1] / SAMPLE_RATE - true_s),
                1000 * elapsed,
            )
            rows.append(row)
            name = f"{bpm} bpm {'+chords' if chords else 'drums+bass'} s{seed}"
            print(
                f"{name:24} {row[0]:12.2f} {row[1]:10.2f} {row[2]:17.2f} {row[3]:10.3f} "
                f"{row[4]:18.1f} {row[5]:10.2f} {row[6]:8.0f}"
            )
    med = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(
        f"{'median (' + str(len(rows)) + ' renders)':24} {med[0]:12.2f} {med[1]:10.2f} {med[2]:17.2f} {med[3]:10.3f} "
        f"{med[4]:18.1f} {med[5]:10.2f} {med[6]:8.0f}"
    )
    worst = [max(column) for column in zip(*rows, strict=True)]
    print(
        f"{'worst':24} {worst[0]:12.2f} {worst[1]:10.2f} {worst[2]:17.2f} {worst[3]:10.3f} "
        f"{worst[4]:18.1f} {worst[5]:10.2f} {worst[6]:8.0f}"
    )


if __name__ == "__main__":
    main()
