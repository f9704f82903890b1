"""What a training run is asked to do, and what it hands back: plain data, so a CLI, a worker job and a checkpoint
all describe a run the same way (a checkpoint stores it to refuse a resume that would mix two runs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from generation.errors import GenerationError
from generation.music.registry import NAME_PATTERN

Precision = Literal["fp32", "bf16", "fp16"]
#: ``on_progress(step, total, train_loss, val_loss)``: called after every optimizer step; ``val_loss`` is None
#: except at the steps that ran a validation pass.
TrainProgress = Callable[[int, int, float, "float | None"], None]
StopCheck = Callable[[], bool]


class TrainingError(GenerationError):
    """Training cannot start or go on; ``problems`` lists every reason found, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"cannot train ({count}):\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """One run. ``steps`` (optimizer steps) wins over ``epochs``; with neither, one epoch.

    ``window_s``: clips are cut into windows of this many seconds (the sequence length trained on).
    ``caption_dropout``: share of windows trained with the empty condition, so classifier-free guidance keeps a
    meaningful unconditional branch. ``val_fraction``: share of *clips* (not windows) held out, so a clip's
    windows never sit on both sides.
    """

    data_dir: Path
    base: str
    name: str
    out: Path
    full: bool = False
    steps: int | None = None
    epochs: int | None = None
    lr: float = 1e-4
    warmup: int = 10
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    batch_size: int = 4
    grad_accum: int = 1
    precision: Precision = "bf16"
    grad_checkpointing: bool = False
    val_fraction: float = 0.1
    val_every: int = 50
    checkpoint_every: int = 100
    resume: bool = False
    seed: int = 0
    window_s: float = 10.0
    caption_dropout: float = 0.1
    weight_decay: float = 0.01
    cache_dir: Path | None = None

    def problems(self) -> list[str]:
        """Values no run can use, in words (the data's problems are found later, by :mod:`.data`)."""
        found = []
        if not NAME_PATTERN.match(self.name):
            found.append(f"--name {self.name!r}: use lowercase letters, digits, '.', '_' and '-' (at most 64)")
        positive = {"lr": self.lr, "batch_size": self.batch_size, "grad_accum": self.grad_accum}
        positive |= {"window_s": self.window_s, "checkpoint_every": self.checkpoint_every, "val_every": self.val_every}
        if not self.full:
            positive |= {"rank": self.rank, "alpha": self.alpha}
        found += [f"--{k.replace('_', '-')} must be positive, not {v}" for k, v in positive.items() if v <= 0]
        for key, value in (("steps", self.steps), ("epochs", self.epochs)):
            if value is not None and value < 1:
                found.append(f"--{key} must be at least 1, not {value}")
        if self.warmup < 0:
            found.append(f"--warmup must not be negative, not {self.warmup}")
        for key, share in (("dropout", self.dropout), ("val_fraction", self.val_fraction)):
            if not 0 <= share < 1:
                found.append(f"--{key.replace('_', '-')} must be in [0, 1), not {share}")
        if not 0 <= self.caption_dropout <= 1:
            found.append(f"caption dropout must be in [0, 1], not {self.caption_dropout}")
        return found

    def hyper_parameters(self) -> dict[str, Any]:
        """What the model card and a checkpoint record (paths left out: they say nothing about the model)."""
        data = asdict(self)
        for key in ("data_dir", "out", "resume", "cache_dir"):
            data.pop(key)
        return data

    def identity(self) -> dict[str, Any]:
        """What must match for ``--resume`` to continue a checkpoint (the rest, e.g. steps, may change)."""
        keys = ("base", "full", "rank", "alpha", "window_s", "batch_size", "grad_accum", "seed")
        return {k: getattr(self, k) for k in keys if self.full is False or k not in ("rank", "alpha")}


@dataclass(frozen=True, slots=True)
class TrainResult:
    """A finished run: where it went and how it ended."""

    out: Path
    kind: Literal["lora", "finetune"]
    steps: int
    train_loss: float
    val_loss: float | None
    card: dict[str, Any]
    registered: bool = False
    register_error: str | None = None
