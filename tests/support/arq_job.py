"""One job through beatforge's real queue path: enqueued by the bot's pool, run by an arq worker in burst mode."""

from __future__ import annotations

from typing import Any

from arq.worker import Worker

from beatforge.config import Settings
from beatforge.queue import SERIALIZERS, connect, redis_settings


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
