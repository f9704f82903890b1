"""The facts ``status`` shows, counted in a real SQLite database and read from a real redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from arq.connections import ArqRedis
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, ErrorCode
from beatforge.fleet import GpuMemory, WorkerInfo, publish_worker
from beatforge.queue import enqueue_job
from storage import jobs
from storage.models import Generation
from storage.stats import gather_status, job_stats

NOW = datetime.now(UTC)


async def _jobs(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    params = BeatParams(prompt="x", duration_s=2, seed=1)
    ids = []
    async with sessions() as session:
        for _ in range(7):
            job = await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=1, channel_id=1)
            ids.append(job.id)
        _queued, running, done, cancelled, broken, also_broken, old = ids
        for job_id in (running, done, cancelled, broken, also_broken, old):
            await jobs.mark_running(session, job_id)
        await jobs.mark_done(session, done, artifacts=[])
        await jobs.mark_done(session, old, artifacts=[])
        await jobs.cancel(session, cancelled, by="test")
        await jobs.mark_failed(session, broken, code=ErrorCode.INTERNAL, message="x")
        await jobs.mark_failed(session, also_broken, code=ErrorCode.INTERNAL, message="y")
        await session.execute(
            update(Generation).where(Generation.id == old).values(finished_at=NOW - timedelta(hours=2))
        )
        await session.commit()
    return ids


async def test_job_stats_count_states_now_and_outcomes_of_the_last_hour(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _jobs(sessions)
    async with sessions() as session:
        stats = await job_stats(session, since=NOW - timedelta(hours=1))
    assert (stats.queued, stats.running, stats.done_recently, stats.failed_recently) == (1, 1, 1, 3)
    assert list(stats.failures_by_code.items()) == [("internal", 2), ("cancelled", 1)]  # most frequent first


async def test_status_gathers_workers_queue_and_jobs_and_survives_a_redis_outage(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    ids = await _jobs(sessions)
    await enqueue_job(
        arq_redis, job_id=ids[0], queue_job_id=f"{ids[0]}-q", params=BeatParams(prompt="x", duration_s=2, seed=1)
    )
    worker = WorkerInfo("gpu1-10", "gpu1", 10, 1.0, 2.0, settings.queue_name, "cuda", 1, 8, 4, 0, GpuMemory(1, 2, 3))
    await publish_worker(arq_redis, worker, ttl_s=30)

    status = await gather_status(sessions=sessions, redis=arq_redis, queue_names=[settings.queue_name], now=NOW)
    assert status.workers == (worker,) and status.queues == {settings.queue_name: 1} and status.redis_error is None
    assert (status.jobs.queued, status.jobs.running) == (1, 1)

    nowhere = Redis(port=1, socket_connect_timeout=0.2)
    try:
        down = await gather_status(sessions=sessions, redis=nowhere, queue_names=[settings.queue_name], now=NOW)
    finally:
        await nowhere.aclose()
    assert down.redis_error and down.queues == {settings.queue_name: None} and down.workers == ()
    assert down.jobs == status.jobs  # the database's facts are still there
