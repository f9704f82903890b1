"""Faults made to happen for real: worker processes killed with SIGKILL, redis-server restarted with and without
its append-only file. The promise under test: every accepted job ends in one posted result or one clear
failure message, soon.

Liveness is tuned fast here (heartbeat 0.5 s, silence 3 s, a reconcile pass every second); production uses 5 s,
30 s and 10 s, which the same code scales to.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, ErrorCode, JobStatus
from beatforge.queue import connect, enqueue_job
from bot.app import Beatforge
from storage import jobs
from storage.jobs import JobView
from tests.support.bot import edits
from tests.support.discord_harness import FakeDiscord, dispatch_gateway, slash_command_payload
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

#: A worker's start-up (models, librosa's numba kernels on a first run) plus the job, on 2 shared cores.
START_S = 300
#: What the issue promises once the worker is back: the result posted within two minutes of the crash.
RECOVERY_S = 120
FAST_LIVENESS = {"job_heartbeat_s": 0.5, "job_stale_after_s": 3.0, "reconcile_interval_s": 1.0}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST_LIVENESS | {"cover_mode": "procedural"})


async def _row(sessions: async_sessionmaker[AsyncSession], job_id: int) -> JobView:
    async with sessions() as session:
        return await jobs.get_job(session, job_id)


async def _until(
    sessions: async_sessionmaker[AsyncSession], job_id: int, ready: Callable[[JobView], bool], timeout: float
) -> JobView:
    deadline = time.monotonic() + timeout
    while True:
        job = await _row(sessions, job_id)
        if ready(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job #{job_id} never got there: {job.status}, tries {job.attempts}, {job.error}")
        await asyncio.sleep(0.05)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)  # no shutdown handler runs: as the kernel's OOM killer does it
    proc.wait()


def _results(fake: FakeDiscord) -> list[Any]:
    """Every message the bot created with files: each result must be among them exactly once."""
    return [r for r in fake.requests if r.method == "POST" and r.files and 200 <= r.status < 300]


async def _slash_beat(bot: Beatforge, sessions: async_sessionmaker[AsyncSession], duration: int) -> int:
    before = await _count(sessions)
    payload = slash_command_payload("beat", {"prompt": "boom bap, 90 bpm", "duration": duration, "seed": 7}, bot=bot)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    deadline = time.monotonic() + 10
    while await _count(sessions) == before:
        assert time.monotonic() < deadline, "/beat queued no job"
        await asyncio.sleep(0.05)
    return before + 1


async def _count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return await jobs.count_jobs(session)


async def test_a_worker_killed_mid_job_is_replaced_and_the_job_posted_once(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    bot, fake = discord_bot
    worker = start_worker(settings)
    job_id = await _slash_beat(bot, sessions, duration=20)
    await _until(sessions, job_id, lambda j: j.status is JobStatus.RUNNING, START_S)
    _kill(worker)
    killed = time.monotonic()
    # the user hears of it before any worker is back
    stalled = await _until_edit(fake, "the worker stopped", timeout=30)
    assert stalled
    await asyncio.sleep(5)
    start_worker(settings)
    job = await _until(sessions, job_id, lambda j: j.delivered_at is not None, START_S)
    assert job.status is JobStatus.DONE and job.attempts == 2
    assert time.monotonic() - killed < RECOVERY_S
    assert len(_results(fake)) == 1
    assert any("retrying" in text for text in edits(fake)), edits(fake)


async def _until_edit(fake: FakeDiscord, needle: str, *, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [text for text in edits(fake) if needle in text]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no status edit said {needle!r}: {edits(fake)}")


async def test_a_job_whose_worker_dies_on_every_try_fails_with_a_clear_message(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    bot, fake = discord_bot
    settings = settings.model_copy(update={"job_max_tries": 2})
    job_id = await _slash_beat(bot, sessions, duration=20)
    for attempt in (1, 2):
        worker = start_worker(settings)
        await _until(sessions, job_id, lambda j, n=attempt: j.status is JobStatus.RUNNING and j.attempts == n, START_S)
        _kill(worker)
    start_worker(settings)  # its reconciler finds the job's tries used up
    job = await _until(sessions, job_id, lambda j: j.delivered_at is not None, START_S)
    assert job.status is JobStatus.FAILED and job.error_code is ErrorCode.WORKER_LOST
    told = await _until_edit(fake, "given up", timeout=10)
    assert "stopped 2 times" in told and "/" not in told.split("—", 1)[1].replace("/history", "")
    assert _results(fake) == []


@pytest.fixture
def own_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistent=request.param)
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_arq(settings: Settings, own_redis: RedisServer) -> AsyncIterator[tuple[Settings, ArqRedis]]:
    settings = settings.model_copy(update={"redis_url": own_redis.url})
    pool = await connect(settings)
    yield settings, pool
    await pool.aclose()


async def _queue_beat(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, *, duration: float) -> int:
    params = BeatParams(prompt="boom bap", duration_s=duration, seed=3)
    async with sessions() as session:
        job = await jobs.create_job(session, params=params, user_id=5, user_name="u", guild_id=None, channel_id=None)
    await enqueue_job(redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params, user_id=5)
    return job.id


@pytest.mark.parametrize("own_redis", [True], indirect=True, ids=["append-only"])
async def test_the_worker_outlives_a_redis_restart_and_its_running_job_finishes(
    own_redis: RedisServer,
    own_arq: tuple[Settings, ArqRedis],
    sessions: async_sessionmaker[AsyncSession],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    settings, redis = own_arq
    worker = start_worker(settings)
    job_id = await _queue_beat(sessions, redis, duration=20)
    await _until(sessions, job_id, lambda j: j.status is JobStatus.RUNNING, START_S)
    await asyncio.to_thread(own_redis.restart, down_s=2.0)
    job = await _until(sessions, job_id, lambda j: j.status in (JobStatus.DONE, JobStatus.FAILED), RECOVERY_S)
    assert job.status is JobStatus.DONE, job.error
    assert worker.poll() is None, "the worker exited"
    # it reconnected by itself: the next job runs on the same process
    second = await _queue_beat(sessions, redis, duration=1)
    job = await _until(sessions, second, lambda j: j.status in (JobStatus.DONE, JobStatus.FAILED), RECOVERY_S)
    assert job.status is JobStatus.DONE and worker.poll() is None
    log = (tmp_path / "worker-0.log").read_text()
    assert "redis unreachable; retrying" in log and "Traceback" not in log
    # every line of a job's life says whose job it is
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    done = [line for line in lines if line["msg"] == "job done"]
    assert [(line["job_id"], line["user_id"]) for line in done] == [(job_id, 5), (second, 5)]


@pytest.mark.parametrize("own_redis", [False], indirect=True, ids=["no-persistence"])
async def test_jobs_a_redis_restart_forgot_are_queued_again_from_the_database(
    own_redis: RedisServer,
    own_arq: tuple[Settings, ArqRedis],
    sessions: async_sessionmaker[AsyncSession],
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    settings, redis = own_arq
    queued = [await _queue_beat(sessions, redis, duration=1) for _ in range(3)]
    await asyncio.to_thread(own_redis.restart)
    assert await redis.zcard(settings.queue_name) == 0  # the queue is gone; the rows still say queued
    await asyncio.sleep(settings.job_stale_after_s)  # past the grace a job being queued right now gets
    start_worker(settings)
    for job_id in queued:
        job = await _until(sessions, job_id, lambda j: j.status in (JobStatus.DONE, JobStatus.FAILED), START_S)
        assert job.status is JobStatus.DONE, job.error
