"""The two engines side by side: seconds of audio per second of generation, MusicGen against ACE-Step 1.5.

Both run through the engine interface the worker uses (``MusicEngine.generate_batch``), in one run, row after
row in turn (so a busy spell on a shared machine slows every row), for each of ``--seconds`` and ``--batches``
takes per call; the table shows the median of ``--repeats`` timed calls after one warm-up. A batch of N counts
N x seconds of audio. MusicGen samples with ``SamplingParams()`` (top-k 250, guidance 3); ACE-Step with its own
defaults (``BEATFORGE_ACESTEP_*``: 8 steps, shift 3).

``--models`` names what to load (registry names, ids or directories): by default the two tiny random models the
tests use (``debug``, ``debug-acestep``), which say how much of a call is the engines' own overhead; on a GPU,
the real checkpoints (``small``, ``medium``, ``acestep``) once their weights are in the Hugging Face cache.

    OMP_NUM_THREADS=2 .venv/bin/python bench/engines.py
    .venv/bin/python bench/engines.py --device cuda --models small medium acestep --seconds 30 120 --batches 1 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the tiny MusicGen's pad id is outside its vocabulary

import torch

from beatforge.contract import SamplingParams
from generation.music.engine import GenerationItem, MusicEngine
from generation.music.model_cache import ModelCache

PROMPT = "dark psychedelic trap, 808s, 140 bpm"


def timed(engine: MusicEngine, seconds: float, batch: int) -> float:
    items = [GenerationItem(PROMPT, seed, seconds) for seed in range(batch)]
    started = time.perf_counter()
    engine.generate_batch(items, sampling=SamplingParams())
    if engine.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["debug", "debug-acestep"])
    parser.add_argument("--seconds", nargs="+", type=float, default=[10.0, 30.0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cache = ModelCache(device=args.device, default=args.models[0], max_resident=len(args.models), memory_gb=1e6)
    engines = {name: cache.get(name) for name in args.models}
    rows = [(name, s, b) for name in args.models for s in args.seconds for b in args.batches]
    times: dict[tuple[str, float, int], list[float]] = {row: [] for row in rows}
    for name, s, b in rows:  # warm-up
        timed(engines[name], s, b)
    for _ in range(args.repeats):
        for name, s, b in rows:
            times[(name, s, b)].append(timed(engines[name], s, b))

    print(f"device {args.device}, torch threads {torch.get_num_threads()}, median of {args.repeats} calls")
    print("| model | engine | seconds | batch | wall s | audio-s/s | x real time |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, s, b in rows:
        wall = statistics.median(times[(name, s, b)])
        engine = engines[name]
        label = engine.capabilities.label
        print(f"| {name} | {label} | {s:g} | {b} | {wall:.3f} | {s * b / wall:.1f} | {s / wall:.1f} |")


if __name__ == "__main__":
    main()
