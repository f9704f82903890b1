"""The database is the truth about jobs; redis only carries them to a worker, and may lose them.

A worker killed mid-job (SIGKILL, out of memory) leaves its row ``running`` and arq's in-progress mark alive
for ``job_timeout`` (half an hour by default), so arq alone would retry it only then. A redis restarted
without persistence forgets every queued job while their rows wait forever. :func:`reconcile` compares both
sides and repairs what disagrees: a running job whose heartbeat stopped is queued again (or failed, once it
has used its tries); a queued job arq no longer holds, or took but never started, is queued again.

Every worker runs it every ``reconcile_interval_s`` and the bot once at start-up. A short redis lock keeps two
passes from re-queueing one job twice; taking a job back is also a conditional update only one caller wins.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import ErrorCode
from beatforge.queue import QueueError, discard_job, enqueue_job, inspect_jobs, queue_for
from storage import jobs
from storage.jobs import JobView
from storage.models import utcnow

log = logging.getLogger(__name__)

LOCK_KEY = "beatforge:reconcile:lock"
#: Longest a pass may hold the lock if its process dies mid-pass.
LOCK_MS = 30_000


@dataclass(frozen=True, slots=True)
class Reconciled:
    """Job ids by what the pass did to them (empty lists: the queue and the database agreed)."""

    #: Taken back from a worker that died, and queued again.
    retried: list[int] = field(default_factory=list)
    #: Taken back from a worker that died once too often: failed with a message.
    failed: list[int] = field(default_factory=list)
    #: Queued in the database but lost (or taken and never started) in redis: queued again.
    restored: list[int] = field(default_factory=list)
    #: Another pass held the lock: this one did nothing.
    skipped: bool = False


async def reconcile(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, settings: Settings, *, now: datetime | None = None
) -> Reconciled:
    """One pass over the jobs the database says are queued or running (see the module's docstring)."""
    owner = secrets.token_hex(8)
    if not await redis.set(LOCK_KEY, owner, nx=True, px=LOCK_MS):
        return Reconciled(skipped=True)
    try:
        return await _reconcile(sessions, redis, settings, now or utcnow())
    finally:
        if await redis.get(LOCK_KEY) == owner.encode():
            await redis.delete(LOCK_KEY)


async def _reconcile(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, settings: Settings, now: datetime
) -> Reconciled:
    silent_since = now - timedelta(seconds=settings.job_stale_after_s)
    done = Reconciled()
    async with sessions() as session:
        stale = await jobs.list_stale_running(session, silent_since=silent_since)
        queued = await jobs.list_queued(session, queued_before=silent_since)
    for job in stale:
        async with sessions() as session:
            if not await jobs.take_back(session, job.id, silent_since=silent_since):
                continue  # it showed life, finished, or another pass took it
        await discard_job(redis, job.queue_job_id, queue_name=queue_for(settings, job.kind))
        if job.attempts >= settings.job_max_tries:
            await give_up(sessions, job.id, stops=job.attempts)
            done.failed.append(job.id)
        elif await _queue_again(redis, settings, job, why="its worker stopped"):
            done.retried.append(job.id)

    entries = await inspect_jobs(redis, [job.queue_job_id for job in queued], job_timeout_s=settings.job_timeout_s)
    stuck_ms = settings.job_stale_after_s * 1000
    for job, entry in zip(queued, entries, strict=True):
        if entry.queued and (entry.taken_ms is None or entry.taken_ms < stuck_ms):
            continue  # waiting its turn, or just taken by a worker that is starting it
        await discard_job(redis, job.queue_job_id, queue_name=queue_for(settings, job.kind))
        why = "redis lost it" if not entry.queued else "a worker took it and never started it"
        if await _queue_again(redis, settings, job, why=why):
            done.restored.append(job.id)
    return done


async def _queue_again(redis: ArqRedis, settings: Settings, job: JobView, *, why: str) -> bool:
    """Put the job back in line under its own id; False when redis refused (the next pass tries again)."""
    try:
        await enqueue_job(
            redis,
            job_id=job.id,
            queue_job_id=job.queue_job_id,
            params=job.params,
            user_id=job.user_id,
            queue_name=queue_for(settings, job.kind),
        )
    except QueueError as exc:
        log.warning("could not re-queue a job", extra={"job_id": job.id, "reason": why, "error": str(exc)})
        return False
    log.warning("job re-queued", extra={"job_id": job.id, "reason": why, "attempts": job.attempts})
    return True


async def give_up(sessions: async_sessionmaker[AsyncSession], job_id: int, *, stops: int) -> None:
    """Fail a job its workers died on ``stops`` times: the one message for it, wherever that is found out."""
    message = f"the worker stopped {stops} times while making it (it may be too heavy for this server)"
    async with sessions() as session:
        await jobs.mark_failed(session, job_id, code=ErrorCode.WORKER_LOST, message=message)
    log.error("job given up: its worker kept dying", extra={"job_id": job_id, "attempts": stops})
