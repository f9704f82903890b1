"""Everything checked and computed before the first step: the data found and encoded, the base loaded, the output
folders and the checkpoint to resume. Every problem found on the way is collected and raised together as one
:class:`TrainingError`, so a bad data folder costs one report, not one failed run per problem.
"""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generation.errors import GenerationError
from generation.music.registry import ModelRegistry
from generation.training import checkpoint as ckpt
from generation.training.codes import ClipCodes, CodeCache
from generation.training.config import TrainConfig, TrainingError
from generation.training.data import find_clips, fingerprint
from generation.training.model import Trainee, load_trainee, resolve_base


@dataclass(slots=True)
class Windows:
    """Windows of codes (n, codebooks, frames) with one caption each."""

    codes: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return int(self.codes.shape[0])


@dataclass(slots=True)
class Prepared:
    trainee: Trainee
    train: Windows
    val: Windows
    clips: list[ClipCodes]
    fingerprint: str
    total_steps: int
    identity: dict[str, object]
    resume_from: ckpt.Checkpoint | None

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.clips)


def partial_dir(out: Path) -> Path:
    """Where a run writes until it is complete; renamed to ``out`` at the end."""
    return out.with_name(out.name + ".partial")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _windows(clips: list[ClipCodes]) -> Windows:
    if not clips:
        return Windows(torch.zeros((0, 0, 0), dtype=torch.long), [])
    codes = torch.from_numpy(np.concatenate([c.codes for c in clips]))
    return Windows(codes, [c.clip.caption for c in clips for _ in range(c.codes.shape[0])])


def split(clips: list[ClipCodes], *, fraction: float, seed: int) -> tuple[list[ClipCodes], list[ClipCodes]]:
    """Whole clips held out (a clip's windows on both sides would flatter the validation loss); none from one clip."""
    if fraction <= 0 or len(clips) < 2:
        return clips, []
    count = min(len(clips) - 1, max(1, round(fraction * len(clips))))
    order = random.Random(seed).sample(range(len(clips)), len(clips))
    held = set(order[:count])
    return [c for i, c in enumerate(clips) if i not in held], [c for i, c in enumerate(clips) if i in held]


def _output_problems(config: TrainConfig) -> list[str]:
    partial = partial_dir(config.out)
    found = []
    if config.out.exists():
        found.append(f"{config.out} already exists; choose another --out (or --name), or remove it")
    has_checkpoint = ckpt.latest(partial / "checkpoints") is not None
    if config.resume and not has_checkpoint:
        found.append(f"--resume: no checkpoint in {partial / 'checkpoints'}")
    elif not config.resume and has_checkpoint:
        found.append(f"{partial} holds an unfinished run: pass --resume to continue it, or remove it to start over")
    return found


def _steps(config: TrainConfig, windows: int) -> int:
    if config.steps is not None:
        return config.steps
    per_step = config.batch_size * config.grad_accum
    return max(1, math.ceil((config.epochs or 1) * windows / per_step))


def prepare(config: TrainConfig, registry: ModelRegistry, *, device: str) -> Prepared:
    """Check and load everything; raises :class:`TrainingError` listing every problem found."""
    problems = config.problems() + _output_problems(config)
    clips, found = find_clips(config.data_dir)
    spec, base_problems = resolve_base(config.base, registry)
    problems += found + base_problems
    if spec is None or not clips:
        raise TrainingError(problems)
    seed_everything(config.seed)  # LoRA's initial weights are drawn here
    try:
        trainee = load_trainee(spec, config, device=device)
    except GenerationError as exc:
        raise TrainingError([*problems, str(exc)]) from exc
    cache_dir = config.cache_dir or config.out.parent / ".training-codes"
    cache = CodeCache(trainee.model, window_s=config.window_s, directory=cache_dir)
    encoded, found = cache.codes(clips)
    problems += found
    train_clips, val_clips = split(encoded, fraction=config.val_fraction, seed=config.seed)
    train, val = _windows(train_clips), _windows(val_clips)
    if encoded and len(train) < config.batch_size:
        problems.append(
            f"too little data: {len(train)} training windows of {config.window_s:g} s, fewer than --batch-size "
            f"{config.batch_size}; add clips, shorten --window-s or lower --batch-size"
        )
    identity = {**config.identity(), "data": fingerprint([c.clip for c in encoded])}
    resume_from = None
    if config.resume and not problems:
        latest = ckpt.latest(partial_dir(config.out) / "checkpoints")
        assert latest is not None  # _output_problems reported a missing one
        resume_from = ckpt.read(latest)
        problems += ckpt.mismatches(resume_from, identity, trainee.trainable())
    if problems:
        raise TrainingError(problems)
    if not config.resume:
        shutil.rmtree(partial_dir(config.out), ignore_errors=True)  # leftovers of a run with no checkpoint
    return Prepared(
        trainee, train, val, encoded, str(identity["data"]), _steps(config, len(train)), identity, resume_from
    )
