"""One job through beatforge's real queue path: enqueued by the bot's pool, run by an arq worker in burst mode."""

from __future__ import annotations

import asyncio
from typing import Any

from arq.connections import ArqRedis
from arq.worker import Worker

from beatforge.config import Settings
from beatforge.queue import SERIALIZERS, connect, redis_settings
from generation.worker.settings import create_worker


async def _double(_ctx: dict[str, Any], x: int) -> int:
    return 2 * x


async def run_one_job(settings: Settings, x: int) -> int:
    """2 * ``x``, computed by a worker that reached redis as the settings say (URL, TLS, Sentinel)."""
    pool = await connect(settings)
    try:
        job = await pool.enqueue_job("_double", x, _queue_name=settings.queue_name)
        assert job is not None
        worker = Worker(
            functions=[_double],  # type: ignore[list-item]
            redis_settings=redis_settings(settings),
            queue_name=settings.queue_name,
            burst=True,
            poll_delay=0.05,
            **SERIALIZERS,
        )
        await worker.main()
        await worker.close()
        result: int = await job.result(timeout=5)
        return result
    finally:
        await pool.aclose()


async def stop_worker(worker: Worker, *polling: asyncio.Task[None]) -> None:
    """Stop an in-process worker whose ``main()`` runs in ``polling``: polling first, then what arq still runs is
    given time to end, then ``close()``.

    A job's row says done (or its worker's running set drops it) a moment before arq has recorded its end;
    closing in that moment cancels arq's task, and ``close()`` re-raises the CancelledError into the test.
    """
    for task in polling:
        task.cancel()
    await asyncio.gather(*polling, return_exceptions=True)
    if worker.tasks:
        await asyncio.wait(list(worker.tasks.values()), timeout=10)
    await worker.close()


async def run_burst(settings: Settings, redis: ArqRedis) -> None:
    """Run beatforge's own worker, in this process, until its queue is empty."""
    worker = create_worker(settings, burst=True, poll_delay=0, handle_signals=False, redis_pool=redis)
    try:
        await worker.main()
    finally:
        await worker.close()
