"""The reconciler against real redis and a real migrated SQLite file: the database is the truth about jobs."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, ErrorCode, JobStatus
from beatforge.queue import enqueue_job
from storage import jobs
from storage.models import Generation, utcnow
from storage.reconcile import reconcile

PARAMS = BeatParams(prompt="lofi", duration_s=3, seed=5)


async def _queued(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, *, enqueue: bool = True) -> jobs.JobView:
    async with sessions() as session:
        job = await jobs.create_job(session, params=PARAMS, user_id=7, user_name="ana", guild_id=1, channel_id=2)
    if enqueue:
        await enqueue_job(redis, job_id=job.id, queue_job_id=job.queue_job_id, params=PARAMS, user_id=7)
    return job


async def _age(sessions: async_sessionmaker[AsyncSession], job_id: int, seconds: float) -> None:
    """Move the row's clocks back, as if it had been queued (and its heartbeat written) ``seconds`` ago."""
    then = utcnow() - timedelta(seconds=seconds)
    async with sessions() as session:
        await session.execute(
            update(Generation).where(Generation.id == job_id).values(queued_at=then, heartbeat_at=then)
        )
        await session.commit()


async def _taken_by_a_worker(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, job: jobs.JobView) -> int:
    """What a worker does when it takes a job: arq's in-progress mark, then the row's try."""
    await redis.psetex(in_progress_key_prefix + job.queue_job_id, 1_810_000, b"1")
    await redis.incr(retry_key_prefix + job.queue_job_id)
    async with sessions() as session:
        attempt = await jobs.start_attempt(session, job.id)
    assert attempt is not None
    return attempt.number


async def _row(sessions: async_sessionmaker[AsyncSession], job_id: int) -> jobs.JobView:
    async with sessions() as session:
        return await jobs.get_job(session, job_id)


async def test_a_job_whose_worker_stopped_is_queued_again_at_once(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    job = await _queued(sessions, arq_redis)
    assert await _taken_by_a_worker(sessions, arq_redis, job) == 1
    assert (await reconcile(sessions, arq_redis, settings)).retried == []  # a fresh heartbeat: left alone

    await _age(sessions, job.id, settings.job_stale_after_s + 1)  # the worker died: no heartbeat since
    done = await reconcile(sessions, arq_redis, settings)
    assert done.retried == [job.id] and done.failed == done.restored == []
    row = await _row(sessions, job.id)
    assert row.status is JobStatus.QUEUED and row.attempts == 1
    # arq's in-progress mark (which would have kept it from any worker for half an hour) and try count are gone,
    # and the job is back in line under its own id
    assert not await arq_redis.exists(in_progress_key_prefix + job.queue_job_id)
    assert not await arq_redis.exists(retry_key_prefix + job.queue_job_id)
    assert await arq_redis.zscore(settings.queue_name, job.queue_job_id) is not None
    assert await arq_redis.exists(job_key_prefix + job.queue_job_id)
    assert (await reconcile(sessions, arq_redis, settings)) == type(done)()  # nothing more to do


async def test_a_job_whose_workers_keep_dying_fails_with_a_message_after_its_tries(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    job = await _queued(sessions, arq_redis)
    for attempt in range(1, settings.job_max_tries + 1):
        assert await _taken_by_a_worker(sessions, arq_redis, job) == attempt
        await _age(sessions, job.id, settings.job_stale_after_s + 1)
        done = await reconcile(sessions, arq_redis, settings)
        if attempt < settings.job_max_tries:
            assert done.retried == [job.id]
    assert done.failed == [job.id] and done.retried == []
    row = await _row(sessions, job.id)
    assert row.status is JobStatus.FAILED and row.error_code is ErrorCode.WORKER_LOST
    assert f"stopped {settings.job_max_tries} times" in (row.error or "")
    assert await arq_redis.zscore(settings.queue_name, job.queue_job_id) is None  # arq will not run it later


async def test_queued_jobs_redis_lost_are_queued_again(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    lost, kept = await _queued(sessions, arq_redis), await _queued(sessions, arq_redis)
    young = await _queued(sessions, arq_redis, enqueue=False)  # the bot may be queueing it right now
    await arq_redis.delete(job_key_prefix + lost.queue_job_id)  # what a restart without persistence does
    await arq_redis.zrem(settings.queue_name, lost.queue_job_id)
    for job in (lost, kept):
        await _age(sessions, job.id, settings.job_stale_after_s + 1)
    done = await reconcile(sessions, arq_redis, settings)
    assert done.restored == [lost.id] and done.retried == done.failed == []
    assert await arq_redis.zscore(settings.queue_name, lost.queue_job_id) is not None
    assert not await arq_redis.exists(job_key_prefix + young.queue_job_id)
    assert (await _row(sessions, lost.id)).status is JobStatus.QUEUED


async def test_a_job_taken_by_a_worker_that_never_started_it_is_queued_again(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    job = await _queued(sessions, arq_redis)
    await _age(sessions, job.id, settings.job_stale_after_s + 1)
    life_ms = int((settings.job_timeout_s + 10) * 1000)
    # taken a moment ago: a worker is starting it
    await arq_redis.psetex(in_progress_key_prefix + job.queue_job_id, life_ms - 100, b"1")
    assert (await reconcile(sessions, arq_redis, settings)).restored == []
    # taken long ago, and the row never went to running: the worker died between the two
    stale_ms = int(settings.job_stale_after_s * 1000) + 1000
    await arq_redis.psetex(in_progress_key_prefix + job.queue_job_id, life_ms - stale_ms, b"1")
    assert (await reconcile(sessions, arq_redis, settings)).restored == [job.id]
    assert not await arq_redis.exists(in_progress_key_prefix + job.queue_job_id)


async def test_finished_jobs_are_never_touched_and_passes_do_not_overlap(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    jobs_made = [await _queued(sessions, arq_redis) for _ in range(6)]
    for job in jobs_made:
        await _taken_by_a_worker(sessions, arq_redis, job)
        await _age(sessions, job.id, settings.job_stale_after_s + 1)
    finished = jobs_made[0]
    async with sessions() as session:
        await jobs.mark_failed(session, finished.id, code=ErrorCode.CANCELLED, message="cancelled")
    passes = await asyncio.gather(*(reconcile(sessions, arq_redis, settings) for _ in range(4)))
    retried = [job_id for done in passes for job_id in done.retried]
    assert sorted(retried) == [job.id for job in jobs_made[1:]]  # each once, whichever pass did it
    assert sum(done.skipped for done in passes) >= 1
    assert (await _row(sessions, finished.id)).status is JobStatus.FAILED


async def test_an_orderly_shutdown_costs_no_try(
    sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    job = await _queued(sessions, arq_redis)
    assert await _taken_by_a_worker(sessions, arq_redis, job) == 1
    async with sessions() as session:
        await jobs.requeue(session, job.id)
    row = await _row(sessions, job.id)
    assert row.status is JobStatus.QUEUED and row.attempts == 0 and row.heartbeat_at is None
