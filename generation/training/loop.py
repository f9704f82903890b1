"""The training loop, and :func:`train`, the one call a CLI or a worker job makes.

Each optimizer step takes ``batch_size x grad_accum`` windows. Which windows, and which of their captions are
dropped, is a pure function of the seed and the step (a seeded permutation per epoch, a seeded draw per micro-batch),
so a resumed run sees the same batches it would have seen without the stop. Everything else random (dropout) is
restored from the checkpoint's generator states.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from datetime import UTC, datetime
from typing import Any, Literal

import torch

from generation.errors import GenerationCancelled, GenerationError
from generation.hf import evaluating
from generation.music.registry import ModelRegistry, RegistryError
from generation.training import checkpoint as ckpt
from generation.training.card import register_output, write_card
from generation.training.config import StopCheck, TrainConfig, TrainingError, TrainProgress, TrainResult
from generation.training.objective import loss as objective_loss
from generation.training.prepare import Prepared, Windows, partial_dir, prepare
from generation.training.schedule import make_optimizer

log = logging.getLogger(__name__)

#: Gradients are clipped to this norm: one odd batch must not undo an adapter.
MAX_GRAD_NORM = 1.0


def effective_precision(config: TrainConfig, device: str) -> str:
    """fp32 on a CPU (autocast there would be bf16 on slow kernels, for no memory we need); as asked on CUDA."""
    return config.precision if device.startswith("cuda") else "fp32"


class TrainingRun:
    """The optimizer, the schedule and the step counter of one prepared run (restored from its checkpoint)."""

    def __init__(self, config: TrainConfig, prepared: Prepared, device: str) -> None:
        self.config, self.prepared, self.device = config, prepared, device
        self.precision = effective_precision(config, device)
        self.trainable = prepared.trainee.trainable()
        self.optimizer, self.scheduler = make_optimizer(
            self.trainable.values(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            warmup=config.warmup,
            total=prepared.total_steps,
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.history = ckpt.History()
        self.step = 0
        self.checkpoints = partial_dir(config.out) / "checkpoints"
        self._orders: dict[int, torch.Tensor] = {}
        if prepared.resume_from is not None:
            ckpt.restore(
                prepared.resume_from,
                trainable=self.trainable,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
            )
            self.step, self.history = prepared.resume_from.step, prepared.resume_from.history
            log.info("training resumed", extra={"step": self.step})

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def _indices(self, micro: int) -> torch.Tensor:
        """The windows of micro-batch ``micro``: consecutive slots of an endless run of seeded epoch permutations."""
        n, size = len(self.prepared.train), self.config.batch_size
        picked = []
        for slot in range(micro * size, micro * size + size):
            epoch = slot // n
            if epoch not in self._orders:
                self._orders = {epoch: torch.randperm(n, generator=torch.Generator().manual_seed(self._seed(epoch)))}
            picked.append(self._orders[epoch][slot % n])
        return torch.stack(picked)

    def _seed(self, salt: int) -> int:
        return (self.config.seed * 1_000_003 + salt) % 2**63

    def _loss(self, windows: Windows, index: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        trainee = self.prepared.trainee
        captions = [windows.captions[int(i)] for i in index]
        with self._autocast():
            return objective_loss(trainee.model, trainee.processor, windows.codes[index], captions, drop)

    def train_step(self) -> float:
        config, total = self.config, 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for part in range(config.grad_accum):
            micro = self.step * config.grad_accum + part
            index = self._indices(micro)
            draw = torch.rand(len(index), generator=torch.Generator().manual_seed(self._seed(-1 - micro)))
            loss = self._loss(self.prepared.train, index, draw < config.caption_dropout) / config.grad_accum
            if not torch.isfinite(loss):
                raise GenerationError(f"the loss is {loss.item()} at step {self.step + 1}; lower --lr or use bf16/fp32")
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()  # type: ignore[no-untyped-call]
            total += float(loss.item())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), MAX_GRAD_NORM)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return total

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean loss over every held-out window, captions kept, dropout off."""
        val = self.prepared.val
        if len(val) == 0:
            return None
        trainee, size, weighted = self.prepared.trainee, self.config.batch_size, 0.0
        evaluating(trainee.model)
        try:
            for start in range(0, len(val), size):
                index = torch.arange(start, min(start + size, len(val)))
                weighted += float(self._loss(val, index, torch.zeros(len(index), dtype=torch.bool))) * len(index)
        finally:
            trainee.train_mode()
        return weighted / len(val)

    def save_checkpoint(self) -> None:
        ckpt.save(
            self.checkpoints,
            step=self.step,
            identity=self.prepared.identity,
            history=self.history,
            trainable=self.trainable,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
        )

    def run(self, on_progress: TrainProgress | None, should_stop: StopCheck | None) -> None:
        total, config = self.prepared.total_steps, self.config
        while self.step < total:
            if should_stop is not None and should_stop():
                self.save_checkpoint()
                raise GenerationCancelled(f"training stopped at step {self.step} of {total}; --resume continues it")
            loss = self.train_step()
            self.history.train.append((self.step, loss))
            val = None
            if self.step % config.val_every == 0 or self.step == total:
                val = self.validate()
                if val is not None:
                    self.history.val.append((self.step, val))
            if self.step % config.checkpoint_every == 0 and self.step < total:
                self.save_checkpoint()
            if on_progress is not None:
                on_progress(self.step, total, loss, val)

    def card(self) -> dict[str, Any]:
        prepared, config = self.prepared, self.config
        spec = prepared.trainee.spec
        # the loss of the last 10 % of steps: one batch's loss is too noisy to stand for the run
        tail = [v for _, v in self.history.train[-max(1, len(self.history.train) // 10) :]]
        return {
            "name": config.name,
            "kind": "finetune" if config.full else "lora",
            "base": spec.name,
            "base_source": spec.source,
            "licence": spec.licence or "unknown (as the base model's)",
            "stereo": spec.stereo,
            "data": {
                "fingerprint": prepared.fingerprint,
                "clips": len(prepared.clips),
                "seconds": round(prepared.seconds, 3),
                "windows": len(prepared.train) + len(prepared.val),
                "val_windows": len(prepared.val),
            },
            "hyper_parameters": config.hyper_parameters(),
            "precision": self.precision,
            "device": self.device,
            "steps": self.step,
            "train_loss": sum(tail) / len(tail) if tail else math.nan,
            "val_loss": self.history.val[-1][1] if self.history.val else None,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def train(
    config: TrainConfig,
    *,
    registry: ModelRegistry | None = None,
    device: str = "cpu",
    register: bool = True,
    on_progress: TrainProgress | None = None,
    should_stop: StopCheck | None = None,
) -> TrainResult:
    """Fine-tune ``config.base`` on ``config.data_dir`` and write ``config.out`` (adapter or model, card, loss plot).

    Blocking and CPU/GPU-bound: a worker calls it in a thread, with ``should_stop`` reading a ``threading.Event``.
    The output directory appears only once complete (written as ``<out>.partial``, then renamed); a stopped or
    crashed run leaves its last checkpoint there for ``config.resume``. With ``register``, the result is added to
    ``registry``'s file (a failure to register is reported in the result, not raised: the weights are fine).

    Raises:
        TrainingError: the data, the options, the base or the checkpoint are unusable; ``problems`` lists them all.
        GenerationCancelled: ``should_stop`` returned True; a checkpoint of the last step was written first.
        GenerationError: the run failed (the loss diverged, out of memory).
    """
    registry = registry if registry is not None else ModelRegistry()
    prepared = prepare(config, registry, device=device)
    run = TrainingRun(config, prepared, device)
    started = time.perf_counter()
    try:
        run.run(on_progress, should_stop)
    except torch.OutOfMemoryError as exc:
        raise GenerationError(
            "out of memory: lower --batch-size (raise --grad-accum), or --grad-checkpointing"
        ) from exc
    partial = partial_dir(config.out)
    partial.mkdir(parents=True, exist_ok=True)
    prepared.trainee.save(partial)
    card = run.card()
    write_card(partial, card, run.history)
    shutil.rmtree(partial / "checkpoints", ignore_errors=True)
    partial.replace(config.out)
    log.info("training done", extra={"out": str(config.out), "steps": run.step, "s": time.perf_counter() - started})
    registered, error = False, None
    if register:
        try:
            register_output(config.out, registry)
            registered = True
        except RegistryError as exc:
            error = str(exc)
    kind: Literal["lora", "finetune"] = "finetune" if config.full else "lora"
    return TrainResult(config.out, kind, run.step, card["train_loss"], card["val_loss"], card, registered, error)


__all__ = ["TrainConfig", "TrainResult", "TrainingError", "TrainingRun", "train"]
