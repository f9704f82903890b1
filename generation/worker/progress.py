"""A job's progress in redis, where the bot reads it to edit the job's Discord message."""

from __future__ import annotations

import asyncio
import logging
import time

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from beatforge.contract import PREVIEW_KEY, PROGRESS_KEY, PROGRESS_TTL_S, JobProgress
from generation.audio.formats import encode
from generation.errors import GenerationError
from generation.music.engine import GeneratedAudio

log = logging.getLogger(__name__)

#: Seconds between progress writes to redis; the bot edits Discord messages at most this often anyway.
PROGRESS_EVERY_S = 0.5
#: Decoding steps timed (after the first) before a time left is published at all.
ETA_MIN_TIMED_STEPS = 3


class ProgressPublisher:
    """Bridges the generation thread's per-step callback to redis on the event loop, throttled."""

    def __init__(self, redis: ArqRedis, job_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self.redis, self.key, self.loop = redis, PROGRESS_KEY.format(job_id=job_id), loop
        self.job_id = job_id
        self.last_sent = 0.0
        # The time left is timed from the first decoding step on, not from the job's start: loading the model,
        # waiting for a batch or for the GPU and encoding the prompt are over by then, and spread over the steps
        # still to come they announced "2514 s left" for a beat 5 s from done. (done, monotonic) at that step.
        self.first_step: tuple[int, float] | None = None
        #: Whether the beat's first seconds are in redis (every later snapshot says so too).
        self.preview = False
        self.last: JobProgress | None = None

    async def publish(self, progress: JobProgress) -> None:
        """Best effort: progress only feeds a status line, so a redis outage (a restart) never fails the job."""
        if self.preview and not progress.preview:  # every stage after the preview says it is there
            progress = progress.model_copy(update={"preview": True})
        try:
            await self.redis.set(self.key, progress.model_dump_json(), ex=PROGRESS_TTL_S)
        except (RedisError, OSError) as exc:
            log.warning("could not publish progress", extra={"key": self.key, "error": repr(exc)})

    def on_step(self, done: int, total: int) -> None:
        """Runs in the generation thread once per decoding step: must stay cheap."""
        now = time.monotonic()
        if self.first_step is None or done <= self.first_step[0]:  # the first step, or a count that started over
            self.first_step = (done, now)
        if now - self.last_sent < PROGRESS_EVERY_S and done < total:
            return
        self.last_sent = now
        first_done, first_at = self.first_step
        timed = done - first_done
        # No estimate from fewer steps: the first ones carry warm-up (kernels, caches) and say little of the rest.
        eta = (now - first_at) / timed * (total - done) if timed >= ETA_MIN_TIMED_STEPS else None
        if done >= total:
            eta = 0.0
        progress = JobProgress(stage="generating", done=done, total=total, eta_s=eta)
        self.last = progress
        asyncio.run_coroutine_threadsafe(self.publish(progress), self.loop)

    def on_preview(self, audio: list[GeneratedAudio]) -> None:
        """Runs in the generation thread when the first seconds of take 1 exist: an OGG of them for the bot."""
        (take,) = audio
        try:
            data = encode(take.samples, sample_rate=take.sample_rate, fmt="ogg", bitrate_kbps=96)
        except GenerationError as exc:  # the beat goes on without its preview
            log.warning("could not encode a preview", extra={"key": self.key, "error": str(exc)})
            return
        asyncio.run_coroutine_threadsafe(self._publish_preview(data), self.loop)

    async def _publish_preview(self, data: bytes) -> None:
        try:
            await self.redis.set(PREVIEW_KEY.format(job_id=self.job_id), data, ex=PROGRESS_TTL_S)
        except (RedisError, OSError) as exc:  # best effort, like progress: the beat itself is not at stake
            log.warning("could not publish a preview", extra={"key": self.key, "error": repr(exc)})
            return
        self.preview = True
        if self.last is not None:
            await self.publish(self.last)
