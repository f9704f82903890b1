"""Worker presence over a real redis: what a worker reports, how jobs are counted, that a report expires, that
a redis outage is survived, and that the real worker's start-up and shutdown put the report up and take it down."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams
from beatforge.fleet import WORKER_KEY_PREFIX, WorkerInfo, publish_worker, read_workers, worker_key
from beatforge.queue import enqueue_job
from generation.worker.liveness import Liveness
from generation.worker.presence import TTL_INTERVALS, Presence, gpu_memory
from generation.worker.settings import create_worker
from storage import jobs


def presence(redis: Any, *, interval_s: float = 0.05) -> Presence:
    return Presence(redis=redis, device="cpu", queue="q", max_jobs=4, interval_s=interval_s)


async def until(predicate: Any, *, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {timeout} s")


async def only_worker(redis: Any) -> WorkerInfo:
    (worker,) = await read_workers(redis)
    return worker


async def test_a_worker_reports_its_jobs_and_takes_its_report_down_when_it_stops(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    p = presence(arq_redis)
    p.start()
    try:
        await until(lambda: read_workers(arq_redis))
        worker = await only_worker(arq_redis)
        assert (worker.id, worker.pid, worker.device, worker.queue, worker.max_jobs) == (p.id, p.pid, "cpu", "q", 4)
        assert (worker.jobs_running, worker.jobs_finished, worker.gpu) == (0, 0, None)
        ttl = await arq_redis.pttl(worker_key(p.id))
        assert 0 < ttl <= TTL_INTERVALS * 50 + 1000  # three intervals, rounded up to whole seconds

        p.jobs = liveness = Liveness(settings, sessions, arq_redis)
        release = asyncio.Event()

        async def job(job_id: int, *, fail: bool = False) -> None:
            with liveness.holding(job_id, threading.Event(), queue_job_id=None):
                await release.wait()
                if fail:
                    raise RuntimeError("boom")

        running = [asyncio.create_task(job(n)) for n in (1, 2)]
        await until(lambda: _running(arq_redis, 2))
        release.set()
        await asyncio.gather(*running)
        release.clear()
        cancelled, crashed = asyncio.create_task(job(3)), asyncio.create_task(job(4, fail=True))
        await until(lambda: _running(arq_redis, 2))
        cancelled.cancel()
        release.set()
        await asyncio.gather(cancelled, crashed, return_exceptions=True)
        await until(lambda: _running(arq_redis, 0))
        worker = await only_worker(arq_redis)
        assert (worker.jobs_finished, worker.jobs_interrupted) == (2, 2)
    finally:
        await p.stop()
    assert await arq_redis.exists(worker_key(p.id)) == 0


async def _running(redis: ArqRedis, n: int) -> bool:
    workers = await read_workers(redis)
    return bool(workers) and workers[0].jobs_running == n


async def test_reports_expire_and_unreadable_ones_are_skipped(arq_redis: ArqRedis) -> None:
    info = WorkerInfo("h-1", "h", 1, 0.0, 0.0, "q", "cuda", 1, 8, 3, 0, None)
    await publish_worker(arq_redis, info, ttl_s=1)
    await arq_redis.set(f"{WORKER_KEY_PREFIX}garbage", "{not json")
    assert await read_workers(arq_redis) == [info]
    await asyncio.sleep(1.2)
    assert await read_workers(arq_redis) == []


def test_gpu_memory_is_none_on_a_cpu() -> None:
    assert gpu_memory("cpu") is None


async def _reported(client: Redis) -> bool:
    try:
        return bool(await read_workers(client))
    except (RedisError, OSError):  # redis-server still starting
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_redis_outage_is_logged_once_and_reporting_resumes_when_redis_is_back(
    caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    port = _free_port()
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=0.2)
    p = presence(client)
    caplog.set_level(logging.INFO, logger="generation.worker.presence")
    p.start()
    server: asyncio.subprocess.Process | None = None
    try:
        await asyncio.sleep(0.5)  # several intervals with nobody listening
        assert p._task is not None and not p._task.done()  # the reporter (and so the worker) lives on
        failures = [r for r in caplog.records if r.getMessage().startswith("could not report")]
        assert len(failures) == 1  # once per outage, not once per interval

        binary = shutil.which("redis-server")
        assert binary is not None
        server = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
            stdout=subprocess.DEVNULL,
        )
        await until(lambda: _reported(client), timeout=10)
        assert any(r.getMessage().startswith("reporting this worker's presence again") for r in caplog.records)
    finally:
        await p.stop()
        await client.aclose()
        if server is not None:
            server.terminate()
            await server.wait()


async def test_the_real_worker_reports_itself_from_start_up_and_leaves_at_shutdown(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    settings = settings.model_copy(update={"worker_presence_interval_s": 0.05, "cover_mode": "procedural"})
    beat = BeatParams(prompt="boom bap", duration_s=1.0, seed=1)
    async with sessions() as session:
        job = await jobs.create_job(session, params=beat, user_id=1, user_name="u", guild_id=None, channel_id=None)
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=beat)

    worker = create_worker(settings, burst=True, poll_delay=0, handle_signals=False, redis_pool=arq_redis)
    try:
        await worker.main()  # runs the one job, then returns (burst) without shutting down
        await asyncio.sleep(0.2)
        reported = await only_worker(arq_redis)
        assert (reported.jobs_running, reported.jobs_finished, reported.jobs_interrupted) == (0, 1, 0)
        assert (reported.queue, reported.max_jobs, reported.device) == (settings.queue_name, 8, "cpu")
    finally:
        await worker.close()
    assert await read_workers(arq_redis) == []
