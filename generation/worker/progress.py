"""A job's progress in redis, where the bot reads it to edit the job's Discord message."""

from __future__ import annotations

import asyncio
import logging
import time

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from beatforge.contract import PROGRESS_KEY, PROGRESS_TTL_S, JobProgress

log = logging.getLogger(__name__)

#: Seconds between progress writes to redis; the bot edits Discord messages at most this often anyway.
PROGRESS_EVERY_S = 0.5


class ProgressPublisher:
    """Bridges the generation thread's per-step callback to redis on the event loop, throttled."""

    def __init__(self, redis: ArqRedis, job_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self.redis, self.key, self.loop = redis, PROGRESS_KEY.format(job_id=job_id), loop
        self.started = time.monotonic()
        self.last_sent = 0.0

    async def publish(self, progress: JobProgress) -> None:
        """Best effort: progress only feeds a status line, so a redis outage (a restart) never fails the job."""
        try:
            await self.redis.set(self.key, progress.model_dump_json(), ex=PROGRESS_TTL_S)
        except (RedisError, OSError) as exc:
            log.warning("could not publish progress", extra={"key": self.key, "error": repr(exc)})

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
