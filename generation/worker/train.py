"""Training jobs (/admin train): a LoRA fine-tuned on the clips of a zip an admin uploaded, on the training queue.

Only workers started with the ``train`` role take them (``beatforge worker --roles train``), so a run of many
minutes never holds up beats. The zip is unpacked into a scratch folder (clips and captions only, within a byte
cap: ``beatforge.training_zip``), :func:`generation.training.loop.train` runs in a thread with the job's stop
flag (❌ Cancel), its steps, loss and time left are published as the job's progress, and the model is written
under ``train_models_dir`` and registered in the database: every worker and the bot see it by name
(``/admin model use NAME``).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from beatforge.config import Settings
from beatforge.contract import JobProgress, JobRequest, TrainParams
from beatforge.fleet import ModelInfo, publish_models
from beatforge.training_zip import ZipRefused, extract_zip
from generation.device import resolve_device
from generation.errors import GenerationError
from generation.music.registry import ModelRegistry, load_registry
from generation.training.config import TrainConfig, TrainingError, TrainResult
from generation.training.loop import train
from generation.worker.progress import ETA_MIN_TIMED_STEPS, PROGRESS_EVERY_S, ProgressPublisher
from generation.worker.run import JobRun, run_job
from storage import jobs
from storage.backends import ArtifactUnavailable
from storage.model_registry import ModelAlreadyRegistered, add_model

log = logging.getLogger(__name__)


async def train_model(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Fine-tune a model on an uploaded zip of captioned clips and register it."""
    await run_job(ctx, payload, _train, JobRequest[TrainParams])


def models_dir(settings: Settings) -> Path:
    """Where trained models are written: ``train_models_dir``, or ``models`` beside the artifact folder."""
    return settings.train_models_dir or settings.artifact_dir.parent / "models"


class TrainingProgress:
    """``on_progress`` for :func:`train`: runs in the training thread, publishes at most every half second
    (and the last step), the time left from the steps per second since the first step."""

    def __init__(self, progress: ProgressPublisher, loop: asyncio.AbstractEventLoop) -> None:
        self.progress, self.loop = progress, loop
        self.first: tuple[int, float] | None = None
        self.last_sent = 0.0

    def __call__(self, step: int, total: int, loss: float, _val: float | None) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (step, now)
        if now - self.last_sent < PROGRESS_EVERY_S and step < total:
            return
        self.last_sent = now
        timed = step - self.first[0]
        eta = (now - self.first[1]) / timed * (total - step) if timed >= ETA_MIN_TIMED_STEPS else None
        snapshot = JobProgress(stage="training", done=step, total=total, eta_s=0.0 if step >= total else eta, loss=loss)
        asyncio.run_coroutine_threadsafe(self.progress.publish(snapshot), self.loop)


def _config(settings: Settings, p: TrainParams, data: Path, cache: Path) -> TrainConfig:
    return TrainConfig(
        data_dir=data,
        base=p.base,
        name=p.name,
        out=models_dir(settings) / p.name,
        steps=p.steps,
        seed=p.seed,
        window_s=settings.train_window_s,
        # one checkpoint at the end of a short run; a long one keeps one every 100 steps for a resume
        checkpoint_every=max(100, min(p.steps, 500)),
        val_every=max(50, p.steps),
        cache_dir=cache,
    )


async def _train(run: JobRun[TrainParams]) -> bool:
    context, p = run.context, run.params
    settings = context.settings
    # the database's rows as they are now: another run (or an admin) may have taken the name since start-up
    context.models.registry = await load_registry(settings.model_registry_file, context.sessions)
    if p.name in context.models.registry:
        raise TrainingError([f"a model named {p.name!r} exists already: choose another name"])
    if (models_dir(settings) / p.name).exists():
        raise TrainingError([f"a model folder named {p.name!r} exists already on the training worker"])
    try:  # s3: the bot sent it to the bucket, maybe from another machine
        zip_path = await context.artifacts.fetch_path(p.upload)
    except ArtifactUnavailable as exc:
        raise GenerationError(f"the uploaded zip could not be fetched from storage\n{exc}") from exc
    if not await run.mark_running(p.base):
        return False
    with tempfile.TemporaryDirectory(prefix=f"beatforge-train-{run.job_id}-") as scratch:
        data = Path(scratch) / "data"
        try:
            limit = int(settings.train_max_unpacked_mb * 2**20)
            await asyncio.to_thread(extract_zip, zip_path, data, max_unpacked_bytes=limit)
        except ZipRefused as exc:
            raise TrainingError(exc.problems) from exc
        config = _config(settings, p, data, Path(scratch) / "cache")
        await run.progress.publish(JobProgress(stage="training", done=0, total=p.steps))
        result = await _run_training(run, config, context.models.registry)
    await _register(run, result)
    return True


async def _run_training(run: JobRun[TrainParams], config: TrainConfig, registry: ModelRegistry) -> TrainResult:
    device = resolve_device(run.context.settings.device)
    on_progress = TrainingProgress(run.progress, asyncio.get_running_loop())
    stop: threading.Event = run.stop  # ❌ Cancel: the task is cancelled and sets it; the loop checkpoints and stops
    return await asyncio.to_thread(
        train,
        config,
        registry=registry,
        device=device,
        register=False,
        on_progress=on_progress,
        should_stop=stop.is_set,
    )


async def _register(run: JobRun[TrainParams], result: TrainResult) -> None:
    """The model in the database (every worker's registry), and the bot's model list republished with it."""
    context, card = run.context, result.card
    async with context.sessions() as session:
        job = await jobs.get_job(session, run.job_id)
        lora = result.kind == "lora"
        try:
            await add_model(
                session,
                name=str(card["name"]),
                source=str(result.out.resolve()),
                kind=result.kind,
                base=str(card["base"]) if lora else None,
                licence=str(card.get("licence", "")),
                description=f"trained on this server from {card['data']['clips']} clips ({result.steps} steps)",
                stereo=bool(card.get("stereo", False)),
                added_by=job.user_id,
                guild_id=job.guild_id,  # that server's alone: others neither list nor pick it
            )
        except ModelAlreadyRegistered as exc:
            raise GenerationError(f"the model was trained ({result.out}) but its name was taken meanwhile") from exc
    registry = await load_registry(context.settings.model_registry_file, context.sessions)
    context.models.registry = registry
    infos = [
        ModelInfo(s.name, s.kind, s.licence, s.description, s.melody, s.stereo, s.base, s.engine)
        for s in registry.list()
    ]
    await publish_models(context.redis, infos, default=context.settings.default_model)
    log.info("trained model registered", extra={"model": card["name"], "out": str(result.out)})
