"""Cancellation with several workers, each running one job at a time (where arq's own abort used to hang): a
cancelled running job stops within a step wherever it runs, a cancelled waiting job never starts, and a cancel
that reached only the database (redis lost the abort) still stops its job. Real redis and SQLite, two in-process
arq workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, ErrorCode, JobStatus
from beatforge.queue import enqueue_job
from bot.app import Beatforge
from generation.worker.context import CONTEXT_KEY
from generation.worker.settings import create_worker
from storage import jobs
from storage.jobs import JobView
from tests.support.arq_job import stop_worker


async def _row(sessions: async_sessionmaker[AsyncSession], job_id: int) -> JobView:
    async with sessions() as session:
        return await jobs.get_job(session, job_id)


async def _until(
    sessions: async_sessionmaker[AsyncSession], job_id: int, ready: Callable[[JobView], bool], timeout_s: float
) -> float:
    """Seconds until the job's row is ``ready``."""
    started = time.monotonic()
    while not ready(job := await _row(sessions, job_id)):
        assert time.monotonic() - started < timeout_s, f"job #{job_id}: {job.status}, {job.error}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _running_on(workers: list[Worker], job_id: int) -> Worker | None:
    return next((w for w in workers if CONTEXT_KEY in w.ctx and job_id in w.ctx[CONTEXT_KEY].liveness.running), None)


@pytest.mark.slow
async def test_cancelled_jobs_stop_wherever_they_run_and_waiting_ones_never_start(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    settings = settings.model_copy(update={"cover_mode": "off", "job_heartbeat_s": 0.2})
    long = [BeatParams(prompt="endless drone", duration_s=120, seed=i) for i in (1, 2)]
    short = [BeatParams(prompt="short blip", duration_s=1, seed=i) for i in (3, 4)]
    queued = []
    async with sessions() as session:
        for params in (*long, *short):
            queued.append(
                await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=1, channel_id=1)
            )
    first, second, waiting, after = queued
    workers = [
        create_worker(settings, poll_delay=0.05, handle_signals=False, redis_pool=arq_redis, max_jobs=1)
        for _ in range(2)
    ]
    tasks: list[asyncio.Task[None]] = []
    bot = Beatforge(settings=settings, redis=arq_redis, sessions=sessions)
    try:
        for worker in workers:  # one after the other: two loads of one model at once in one process collide
            tasks.append(asyncio.create_task(worker.main()))
            started = time.monotonic()
            while CONTEXT_KEY not in worker.ctx:
                assert time.monotonic() - started < 300, "the worker never started"
                await asyncio.sleep(0.05)
        for job in queued:
            await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=job.params)
        # Each worker takes one long beat.
        for job in (first, second):
            await _until(sessions, job.id, lambda j: j.status is JobStatus.RUNNING, timeout_s=300)
        assert {id(_running_on(workers, first.id)), id(_running_on(workers, second.id))} == {id(w) for w in workers}

        # Waiting behind them: cancelled before any worker is free, it must never start.
        assert await bot.jobs.cancel(await _row(sessions, waiting.id), by="tester")

        # Cancelled the bot's way (the row, and arq's abort): its worker is free for the next job within a step.
        assert await bot.jobs.cancel(await _row(sessions, second.id), by="tester")
        freed_s = await _until(sessions, after.id, lambda j: j.status is JobStatus.DONE, timeout_s=60)
        assert _running_on(workers, second.id) is None and freed_s < 30

        # Cancelled in the database alone, as if redis had lost the abort: the worker's heartbeat finds it.
        held_by = _running_on(workers, first.id)
        assert held_by is not None
        async with sessions() as session:
            assert await jobs.cancel(session, first.id, by="tester")
        started = time.monotonic()
        while _running_on(workers, first.id) is not None:
            assert time.monotonic() - started < 15, "the database's cancel never reached the worker"
            await asyncio.sleep(0.05)
    finally:
        for i, worker in enumerate(workers):  # a worker that never started has no polling task
            await stop_worker(worker, *tasks[i : i + 1])

    for job in (first, second, waiting):
        row = await _row(sessions, job.id)
        assert (row.status, row.error_code, row.artifacts) == (JobStatus.FAILED, ErrorCode.CANCELLED, ())
        assert row.error == "cancelled by tester"  # the worker stopping did not overwrite why
    never = await _row(sessions, waiting.id)
    assert never.started_at is None and never.attempts == 0
