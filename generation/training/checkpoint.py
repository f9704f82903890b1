"""Checkpoints: enough to continue a run as if it had never stopped.

A checkpoint holds the trainable weights, the optimizer and scheduler states, every random generator's state, the
step, the loss history, and the run's identity (:meth:`TrainConfig.identity`), which ``--resume`` compares so that a
checkpoint is never continued with another base, rank or batch layout. Each is written into a temporary folder and
renamed into place (``storage.files.atomic_directory``), so a crash mid-write leaves the previous checkpoint whole;
older ones are then removed.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from storage.files import atomic_directory

_PREFIX = "step-"


@dataclass(slots=True)
class History:
    """(step, loss) pairs: the training loss of every step and the validation loss where one was measured."""

    train: list[tuple[int, float]] = field(default_factory=list)
    val: list[tuple[int, float]] = field(default_factory=list)

    def to_data(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> History:
        return cls([(int(s), float(v)) for s, v in data["train"]], [(int(s), float(v)) for s, v in data["val"]])


@dataclass(slots=True)
class Checkpoint:
    step: int
    identity: dict[str, Any]
    history: History
    directory: Path


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (temporary folders never match the prefix)."""
    found = sorted(root.glob(f"{_PREFIX}*"), key=lambda p: int(p.name[len(_PREFIX) :])) if root.is_dir() else []
    return found[-1] if found else None


def save(
    root: Path,
    *,
    step: int,
    identity: dict[str, Any],
    history: History,
    trainable: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
) -> Path:
    target = root / f"{_PREFIX}{step:07d}"
    with atomic_directory(target) as tmp:
        torch.save({n: p.detach().cpu() for n, p in trainable.items()}, tmp / "trainable.pt")
        training = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()}
        if scaler is not None:
            training["scaler"] = scaler.state_dict()
        torch.save(training, tmp / "training.pt")
        state = {"step": step, "identity": identity, "history": history.to_data()}
        (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    for old in root.glob(f"{_PREFIX}*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def read(directory: Path) -> Checkpoint:
    state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    return Checkpoint(int(state["step"]), dict(state["identity"]), History.from_data(state["history"]), directory)


def mismatches(checkpoint: Checkpoint, identity: dict[str, Any], trainable: dict[str, torch.nn.Parameter]) -> list[str]:
    """Why ``checkpoint`` cannot continue this run (different settings, or weights of another shape)."""
    found = []
    for key, value in identity.items():
        had = checkpoint.identity.get(key)
        if key == "data" and had != value:
            found.append("--resume: the clips or captions changed since the checkpoint (a different data fingerprint)")
        elif had != value:
            found.append(f"--resume: the checkpoint was trained with {key}={had!r}, this run asks {value!r}")
    if found:
        return found
    weights = torch.load(checkpoint.directory / "trainable.pt", map_location="cpu", weights_only=True)
    if set(weights) != set(trainable):
        return ["--resume: the checkpoint's adapter does not fit this base model's layers"]
    return [
        f"--resume: {name} has shape {tuple(weights[name].shape)} in the checkpoint, {tuple(p.shape)} here"
        for name, p in trainable.items()
        if weights[name].shape != p.shape
    ][:3]


def restore(
    checkpoint: Checkpoint,
    *,
    trainable: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
) -> None:
    weights = torch.load(checkpoint.directory / "trainable.pt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(weights[name])
    # our own file, written by save(): it holds numpy and Python RNG states, which weights_only refuses
    training = torch.load(checkpoint.directory / "training.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    if scaler is not None and "scaler" in training:
        scaler.load_state_dict(training["scaler"])
    _set_rng_state(training["rng"])
