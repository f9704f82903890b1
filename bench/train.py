"""Fine-tuning speed and memory: optimizer steps per second and peak memory, LoRA against a full decoder fine-tune.

Each mode runs in its own process (so one mode's peak memory is not the other's), through the library's own step
(``generation.training.loop.TrainingRun.train_step``: caption dropout, the delay-pattern loss, AdamW, clipping) on
random codes, since a step's cost does not depend on what the codes are. Timing starts after ``--warmup-steps``.
Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA (the tensors: weights, activations, optimizer state) and
the process's peak resident set on a CPU (everything, the Python runtime included).

``--arch tiny`` is the tests' random model; ``--arch small`` / ``medium`` the real MusicGen architectures with random
weights (``generation.music.tiny.build_real_arch``).

    OMP_NUM_THREADS=2 .venv/bin/python bench/train.py                       # tiny, CPU
    .venv/bin/python bench/train.py --arch small --window-s 2 --batch-size 1 --steps 3
    .venv/bin/python bench/train.py --arch small --device cuda --precision bf16 --window-s 10 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the tiny model's pad id is outside its vocabulary

import torch

from bench.machine import busy_cpu_seconds, machine
from generation.music.registry import BUILTINS
from generation.music.tiny import build_real_arch, build_tiny_musicgen
from generation.training.config import TrainConfig
from generation.training.loop import TrainingRun
from generation.training.model import make_trainable
from generation.training.prepare import Prepared, Windows, seed_everything


def _child(args: argparse.Namespace) -> dict[str, object]:
    """One mode, in this process: build, warm up, time; returns the row."""
    seed_everything(0)
    if args.arch == "tiny":
        model, processor = build_tiny_musicgen()
    else:
        model, processor = build_real_arch(args.arch, device="cpu")
    model.float()
    config = TrainConfig(
        data_dir=Path("bench-train-unused"),
        base="debug",
        name="bench",
        out=Path("bench-train-unused"),  # never written: the bench saves nothing
        full=args.mode == "full",
        steps=args.warmup_steps + args.steps,
        batch_size=args.batch_size,
        precision=args.precision,
        grad_checkpointing=args.grad_checkpointing,
        window_s=args.window_s,
        rank=args.rank,
    )
    trainee = make_trainable(model, processor, BUILTINS["debug"], config, device=args.device)
    frames = round(args.window_s * 50)
    codebooks, vocab = int(model.decoder.config.num_codebooks), int(model.decoder.config.vocab_size)
    windows = Windows(torch.randint(0, vocab, (max(8, args.batch_size), codebooks, frames)), ["a dark trap beat"] * 8)
    empty = Windows(torch.zeros((0, codebooks, frames), dtype=torch.long), [])
    prepared = Prepared(trainee, windows, empty, [], "", config.steps or 1, {}, None)
    run = TrainingRun(config, prepared, args.device)
    cuda = args.device.startswith("cuda")
    for _ in range(args.warmup_steps):
        run.train_step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        run.train_step()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    trainable = sum(p.numel() for p in trainee.trainable().values())
    return {
        "mode": args.mode,
        "steps_s": args.steps / wall,
        "windows_s": args.steps * args.batch_size / wall,
        "peak_gib": peak / 2**30,
        "trainable": trainable,
        "precision": run.precision,
        "machine": machine(args.device, torch.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("tiny", "small", "medium"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", nargs="+", choices=("lora", "full"), default=["lora", "full"])
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="bf16")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--mode", choices=("lora", "full"), help=argparse.SUPPRESS)  # the child's one mode
    args = parser.parse_args()
    if args.mode is not None:
        print(json.dumps(_child(args)))
        return
    rows = []
    wall, everyone = time.perf_counter(), busy_cpu_seconds()
    ours = resource.getrusage(resource.RUSAGE_CHILDREN)
    for mode in args.modes:
        child = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        done = subprocess.run(child, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{mode}: failed\n{done.stderr[-2000:]}")
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not rows:
        sys.exit(1)
    wall = time.perf_counter() - wall
    finished = busy_cpu_seconds()
    spent = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = spent.ru_utime + spent.ru_stime - ours.ru_utime - ours.ru_stime
    print(f"machine: {rows[0]['machine']}")
    print(
        f"arch {args.arch}, {args.window_s:g} s windows, batch {args.batch_size}, {args.steps} timed steps "
        f"after {args.warmup_steps}, precision {rows[0]['precision']}"
        + (", gradient checkpointing" if args.grad_checkpointing else "")
    )
    print(f"{'mode':6} {'trainable':>12} {'steps/s':>9} {'windows/s':>10} {'peak GiB':>9}")
    for row in rows:
        print(
            f"{row['mode']:6} {row['trainable']:>12,} {row['steps_s']:>9.2f} {row['windows_s']:>10.2f} "
            f"{row['peak_gib']:>9.2f}"
        )
    if everyone is not None and finished is not None:  # a busy CPU makes every number here meaningless
        others = max(0.0, finished - everyone - mine) / wall
        print(f"other processes used {others:.2f} of {os.cpu_count()} cores on average while this ran ({wall:.0f} s)")


if __name__ == "__main__":
    main()
