"""The arq worker: one generation at a time per GPU, models loaded at start-up, never on a job's hot path.

More GPUs means more worker processes on the same redis queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from arq import Worker, func
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import (
    JOB_GENERATE,
    PROGRESS_KEY,
    PROGRESS_TTL_S,
    ErrorCode,
    GenerateRequest,
    JobOutcome,
    JobProgress,
    JobStatus,
    explain,
)
from beatforge.queue import SERIALIZERS, redis_settings
from generation.audio import write_wav
from generation.errors import GenerationError, ModelUnavailable
from generation.models import ModelCache
from storage import jobs
from storage.artifacts import ArtifactStore
from storage.db import make_engine, make_sessionmaker, upgrade_locked

log = logging.getLogger(__name__)

#: Seconds between progress writes to redis; the bot edits Discord messages at most this often anyway.
PROGRESS_EVERY_S = 0.5


class ProgressPublisher:
    """Bridges the generation thread's per-step callback to redis on the event loop, throttled."""

    def __init__(self, ctx: dict[str, Any], job_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self.redis, self.key, self.loop = ctx["redis"], PROGRESS_KEY.format(job_id=job_id), loop
        self.started = time.monotonic()
        self.last_sent = 0.0

    async def publish(self, progress: JobProgress) -> None:
        await self.redis.set(self.key, progress.model_dump_json(), ex=PROGRESS_TTL_S)

    def on_step(self, done: int, total: int) -> None:
        """Runs in the generation thread once per decoding step: must stay cheap."""
        now = time.monotonic()
        if now - self.last_sent < PROGRESS_EVERY_S and done < total:
            return
        self.last_sent = now
        elapsed = now - self.started
        eta = elapsed / done * (total - done) if done else None
        progress = JobProgress(stage="generating", done=done, total=total, eta_s=eta)
        asyncio.run_coroutine_threadsafe(self.publish(progress), self.loop)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    ctx["engine"] = make_engine(settings.database_url)
    ctx["sessions"] = make_sessionmaker(ctx["engine"])
    ctx["store"] = ArtifactStore(settings.artifact_dir)
    ctx["models"] = cache = ModelCache(device=settings.resolved_device(), default=settings.default_model)
    try:
        await asyncio.to_thread(cache.get, None)
    except ModelUnavailable as exc:
        # Stay up and fail each job with the reason: a crash-looping worker leaves users' jobs hanging.
        log.error("default model unavailable", extra={"model": settings.default_model, "error": str(exc)})


async def shutdown(ctx: dict[str, Any]) -> None:
    if "engine" in ctx:
        await ctx["engine"].dispose()


async def _fail(
    sessions: async_sessionmaker[AsyncSession], job_id: int, code: ErrorCode, message: str
) -> dict[str, Any]:
    async with sessions() as session:
        await jobs.mark_failed(session, job_id, code=code, message=message)
    log.warning("job failed", extra={"job_id": job_id, "code": code.value, "reason": message})
    return JobOutcome(job_id=job_id, status=JobStatus.FAILED, error_code=code, message=message).model_dump(mode="json")


async def generate_beat(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Generate one beat. Every failure is recorded on the job row and returned as data, never raised."""
    sessions: async_sessionmaker[AsyncSession] = ctx["sessions"]
    settings: Settings = ctx["settings"]
    try:
        request = GenerateRequest.model_validate(payload)
    except ValidationError as exc:
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        reason = explain(exc)
        if isinstance(job_id, int) and job_id > 0:
            return await _fail(sessions, job_id, ErrorCode.INVALID_REQUEST, f"invalid job parameters ({reason})")
        log.error("unroutable job payload", extra={"reason": reason})
        return {"status": "failed", "error_code": ErrorCode.INVALID_REQUEST.value, "message": reason}

    job_id, params = request.job_id, request.params
    publisher = ProgressPublisher(ctx, job_id, asyncio.get_running_loop())
    stop = threading.Event()
    try:
        await publisher.publish(JobProgress(stage="loading", done=0, total=1))
        engine = await asyncio.to_thread(ctx["models"].get, params.model)
        async with sessions() as session:
            if not await jobs.mark_running(session, job_id, resolved_model=engine.name):
                log.info("job already finished, skipping re-run", extra={"job_id": job_id})
                return JobOutcome(job_id=job_id, status=JobStatus.DONE).model_dump(mode="json")
        audio = await asyncio.to_thread(
            engine.generate,
            params,
            guidance_scale=settings.guidance_scale,
            fade_out_s=settings.fade_out_s,
            on_progress=publisher.on_step,
            should_stop=stop.is_set,
        )
        await publisher.publish(JobProgress(stage="saving", done=1, total=1))
        store: ArtifactStore = ctx["store"]
        filename = f"beatforge-{job_id}-seed{params.seed}.wav"
        with store.writing(job_id, filename) as tmp:
            await asyncio.to_thread(write_wav, tmp, audio.samples, sample_rate=audio.sample_rate)
        record = store.record(job_id, filename, kind="audio")
        async with sessions() as session:
            await jobs.mark_done(session, job_id, artifacts=[record])
    except asyncio.CancelledError:
        # A shutdown (deploy, scale-down): arq re-queues the job, so put the row back in line too.
        stop.set()  # the thread cannot be killed; it checks this flag between decoding steps
        async with sessions() as session:
            await asyncio.shield(jobs.requeue(session, job_id))
        raise
    except GenerationError as exc:
        return await _fail(sessions, job_id, exc.code, str(exc))
    except Exception as exc:  # the job row must never stay "running" forever, whatever broke
        log.exception("job crashed", extra={"job_id": job_id})
        return await _fail(sessions, job_id, ErrorCode.INTERNAL, f"internal error ({type(exc).__name__})")
    log.info("job done", extra={"job_id": job_id, "audio_s": round(audio.duration_s, 2), "model": engine.name})
    return JobOutcome(job_id=job_id, status=JobStatus.DONE, audio_path=record.path).model_dump(mode="json")


def worker_settings(settings: Settings) -> dict[str, Any]:
    """arq settings sized for one GPU: one job at a time, few retries, frequent health checks."""
    return {
        "functions": [func(generate_beat, name=JOB_GENERATE)],  # the bot enqueues by this name
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "max_jobs": 1,
        "job_timeout": settings.job_timeout_s,
        "max_tries": 2,
        "job_completion_wait": 90,  # on SIGTERM, let the running beat finish (compose: stop_grace_period)
        "poll_delay": settings.worker_poll_delay_s,
        "allow_abort_jobs": True,
        "health_check_interval": 30,
        "keep_result": 3600,
        **SERIALIZERS,
    }


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    return Worker(**{**worker_settings(settings), **overrides})
