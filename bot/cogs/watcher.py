"""Keeps Discord in step with the queue: status lines while jobs wait and run, results when they finish.

The database is the source of truth (what is active, what is finished, what is delivered); redis holds the
order of the queue and the volatile progress. Each tick reads both once: one database session for the active
and the undelivered jobs, and one queue snapshot (``bot/queue_view.py``, a single redis round trip) from which
every status line takes its place in line, its wait and its progress. Posting results is ``bot/delivery.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from arq.connections import ArqRedis
from discord.ext import commands, tasks
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import JobStatus
from bot.delivery import Delivery
from bot.messages import progress_text, queued_text
from bot.queue_view import QueueSnapshot, read_queue
from bot.status import StatusBoard
from storage import jobs
from storage.jobs import JobView

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)

#: How long closing the bot waits for the watcher's current tick (a delivery in flight) to finish.
SHUTDOWN_WAIT_S = 10.0


def status_text(job: JobView, snapshot: QueueSnapshot) -> str:
    """What an active job's status line says now: its place in line and wait, or how far the worker is."""
    entry = snapshot.entry_for(job.id)
    if job.status is JobStatus.QUEUED:
        if entry is None:  # no longer in the queue's order: a worker is taking it
            return queued_text(job, None)
        return queued_text(job, entry.position, eta_s=entry.estimate.start_s)
    return progress_text(job, entry.progress if entry is not None else None)


class JobWatcher(commands.Cog):
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        redis: ArqRedis,
        settings: Settings,
        status: StatusBoard,
        delivery: Delivery,
    ) -> None:
        self.sessions, self.redis, self.settings = sessions, redis, settings
        self.status, self.delivery = status, delivery
        self.poll.change_interval(seconds=settings.watch_interval_s)

    async def cog_load(self) -> None:
        self.poll.start()

    async def cog_unload(self) -> None:
        self.poll.cancel()

    async def finish(self) -> None:
        """Stop polling after the current tick, so no delivery is cut off halfway through a database write."""
        task = self.poll.get_task()
        self.poll.stop()
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_WAIT_S)
            except TimeoutError:
                log.warning("job watcher still busy at shutdown; cancelling it")
                self.poll.cancel()

    @tasks.loop(seconds=1.0)
    async def poll(self) -> None:
        await self.tick()

    @poll.error
    async def _poll_failed(self, error: BaseException) -> None:
        # tasks.loop stops on an unhandled error; a broken tick must not end progress and delivery for good.
        log.error("job watcher tick failed; restarting", exc_info=error)
        self.poll.restart()

    async def tick(self) -> None:
        """One round: every active job's status line, then every finished job's result."""
        async with self.sessions() as session:
            active = await jobs.list_active(session)
            finished = await jobs.list_undelivered(session)
        if active:
            await self.refresh(active)
        for job in finished:
            if job.status_message_id is None and self.status.answering(job.id):
                continue  # /beat is still answering; deliver next tick so its edit cannot overwrite the result
            await self.delivery.deliver(job)

    async def refresh(self, active: list[JobView]) -> None:
        """Bring the active jobs' status lines up to date from one read of the queue."""
        try:
            snapshot = await read_queue(self.redis, self.settings, active)
        except (RedisError, OSError) as exc:
            log.warning("could not read the queue; status lines wait a tick", extra={"error": repr(exc)})
            return
        for job in active:
            try:
                await self.status.show(job, status_text(job, snapshot))
            except discord.HTTPException as exc:
                log.warning("status update failed", extra={"job_id": job.id, "error": repr(exc)})


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(bot.watcher)
