"""The part every job kind shares: validate the payload, run the job's body, record the outcome on its row.

A job's outcome is its database row, which the bot reads: failures land there as data and are never raised
to arq, and the job functions return nothing (arq keeps no result, ``keep_result=0``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import ValidationError
from redis.exceptions import RedisError

from beatforge.contract import ArtifactKind, BeatParams, ErrorCode, JobKind, JobParams, JobProgress, JobRequest, explain
from beatforge.fleet import record_speed, speed_key
from beatforge.log import log_context
from generation.errors import AudioParameterError, GenerationError
from generation.music.registry import load_registry
from generation.worker.context import WorkerContext, worker_context
from generation.worker.progress import ProgressPublisher
from storage import jobs
from storage.artifacts import ArtifactRecord
from storage.backends import ArtifactsNotStored
from storage.jobs import JobView
from storage.reconcile import give_up

log = logging.getLogger(__name__)

#: The parameters of the kind a job body handles.
P = TypeVar("P", bound=JobParams)


@dataclass
class JobRun(Generic[P]):
    """What a job body gets: the worker's context, its request, a progress channel, a stop flag, and the files
    it made so far (recorded on the row when the body returns)."""

    context: WorkerContext
    request: JobRequest[P]
    progress: ProgressPublisher
    stop: threading.Event = field(default_factory=threading.Event)
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    #: What :meth:`mark_running` recorded as making the result (a beat's model: its speed is measured per model).
    resolved_model: str | None = None

    @property
    def params(self) -> P:
        return self.request.params

    @property
    def job_id(self) -> int:
        return self.request.job_id

    async def parent_audio(self, purpose: str, take: int) -> tuple[JobView, Path]:
        """The beat this job works on and the audio file of the take asked for, or why there is none."""
        async with self.context.sessions() as session:
            job = await jobs.get_job(session, self.job_id)
            parent = await jobs.get_job(session, job.parent_id) if job.parent_id else None
        takes = [a for a in parent.artifacts if a.kind is ArtifactKind.AUDIO] if parent else []
        if parent is None or not takes:
            raise AudioParameterError(f"job #{self.job_id} has no finished beat to {purpose}")
        if take > len(takes):
            raise AudioParameterError(f"beat #{parent.id} has {len(takes)} take(s), not a take {take}")
        return parent, await self.context.artifacts.fetch(takes[take - 1])  # s3: made on another worker, maybe

    async def mark_running(self, resolved_model: str) -> bool:
        """Record what makes the result; False when the row is already finished (a re-run after a restart)."""
        self.resolved_model = resolved_model
        async with self.context.sessions() as session:
            return await jobs.mark_running(session, self.job_id, resolved_model=resolved_model)


#: A job kind's body: makes the files into ``run.artifacts``; False when the job had already finished.
JobBody = Callable[[JobRun[P]], Awaitable[bool]]


async def run_job(ctx: Mapping[str, Any], payload: Any, body: JobBody[P], request_type: type[JobRequest[P]]) -> None:
    """Validate the payload as ``request_type``, run ``body``, record the outcome on the job's row."""
    context = worker_context(ctx)
    try:
        request = request_type.model_validate(payload)
    except ValidationError as exc:
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        reason = explain(exc)
        if isinstance(job_id, int) and job_id > 0:
            await _fail(context, job_id, ErrorCode.INVALID_REQUEST, f"invalid job parameters ({reason})")
        else:
            log.error("unroutable job payload", extra={"reason": reason})
        return

    job_id = request.job_id
    with log_context(job_id=job_id):
        async with context.sessions() as session:
            attempt = await jobs.start_attempt(session, job_id)
        if attempt is None:
            log.info("job already finished, skipping re-run")
            return
        with log_context(user_id=attempt.user_id, guild_id=attempt.guild_id, attempt=attempt.number):
            if attempt.number > context.settings.job_max_tries:  # arq re-ran it itself after its workers kept dying
                await give_up(context.sessions, job_id, stops=attempt.number - 1)
                return
            stop = threading.Event()
            with context.liveness.holding(job_id, stop, queue_job_id=ctx.get("job_id")):
                await _run_body(context, request, body, stop)


async def _run_body(context: WorkerContext, request: JobRequest[P], body: JobBody[P], stop: threading.Event) -> None:
    job_id = request.job_id
    run = JobRun(context, request, ProgressPublisher(context.redis, job_id, asyncio.get_running_loop()), stop)
    started = time.monotonic()
    try:
        await run.progress.publish(JobProgress(stage="loading", done=0, total=1))
        await _know_model(context, getattr(request.params, "model", None))
        if not await body(run):
            log.info("job already finished, skipping re-run", extra={"job_id": job_id})
            return
        await run.progress.publish(JobProgress(stage="saving", done=1, total=1))
        # Every file where the bot will read it (the bucket, with s3) before the row says done: a row never
        # names a file that is not stored. A failed upload fails the job below (boto3 has already retried).
        await context.artifacts.publish(run.artifacts)
        async with context.sessions() as session:
            recorded = await jobs.mark_done(session, job_id, artifacts=run.artifacts)
        if not recorded:
            log.info("job was cancelled while it ran; result dropped", extra={"job_id": job_id})
            return
    except asyncio.CancelledError:
        # Cancelled (❌, /admin cancel: the row is already failed and stays so) or a shutdown (deploy,
        # scale-down: arq re-queues the job, so the row goes back in line too; requeue only moves running rows).
        run.stop.set()  # the thread cannot be killed; it checks this flag between steps and frees the GPU
        async with context.sessions() as session:
            await asyncio.shield(jobs.requeue(session, job_id))
        raise
    except GenerationError as exc:
        await _fail(context, job_id, exc.code, str(exc))
        return
    except ArtifactsNotStored as exc:
        # Failed, not retried: arq would run the whole generation again for what is a storage fault (a bucket
        # refusing writes stays refusing; a network blip was already retried by boto3). The user can re-roll.
        await _fail(context, job_id, ErrorCode.INTERNAL, str(exc))
        return
    except Exception:  # the job row must never stay "running" forever, whatever broke
        log.exception("job crashed", extra={"job_id": job_id})
        await _fail(context, job_id, ErrorCode.INTERNAL, "an unexpected error")
        return
    log.info("job done", extra={"job_id": job_id, "artifacts": [a.path for a in run.artifacts]})
    await _record_speed(run, seconds=time.monotonic() - started)


async def _know_model(context: WorkerContext, name: str | None) -> None:
    """A model this worker's registry does not know may have been registered since it started (/admin train):
    read the database's rows again before the job looks it up."""
    if name is None or name in context.models.registry:
        return
    context.models.registry = await load_registry(context.settings.model_registry_file, context.sessions)


async def _fail(context: WorkerContext, job_id: int, code: ErrorCode, message: str) -> None:
    async with context.sessions() as session:
        await jobs.mark_failed(session, job_id, code=code, message=message)
    log.warning("job failed", extra={"job_id": job_id, "code": code.value, "reason": message})


async def _record_speed(run: JobRun[P], *, seconds: float) -> None:
    """Tell the bot how fast this worker is (``/queue`` estimates waits from it): audio seconds per second for
    a beat, per model; jobs per second for the other kinds."""
    takes = sum(1 for a in run.artifacts if a.kind is ArtifactKind.AUDIO)
    if isinstance(run.params, BeatParams) and takes:
        key, work = speed_key(JobKind.BEAT, run.resolved_model), run.params.duration_s * takes
    else:
        key, work = speed_key(run.params.kind, None), 1.0
    try:
        await record_speed(run.context.redis, key, work=work, seconds=max(seconds, 1e-3))
    except (RedisError, OSError) as exc:  # the job is done; only the estimate misses a sample
        log.warning("could not record speed", extra={"job_id": run.job_id, "error": repr(exc)})
