"""Keeps Discord in step with the queue: status lines while jobs wait and run, results when they finish.

The database is the source of truth (what is active, what is finished, what is delivered); redis holds the
order of the queue and the volatile progress. Each tick reads both once: one database session for the active
and the undelivered jobs, and one queue snapshot (``bot/queue_view.py``, a single redis round trip) from which
every status line takes its place in line, its wait and its progress. Posting results is ``bot/delivery.py``'s.

Deliveries run as tasks of their own, at most ``settings.delivery_concurrency`` at once and never two for one
job, so the tick never waits for one: a slow or failing post delays neither other users' results nor the status
lines. What a delivery has not finished is still undelivered on its row, and is taken up again after a restart.

With several bot processes on one database, each watches only its own shards' guilds (``settings.shard_count`` and
``shard_ids``; the filter is in the SQL), and the jobs other bots have claimed are not read at all.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import discord
from arq.connections import ArqRedis
from discord.ext import commands, tasks
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import PREVIEW_KEY, JobStatus
from beatforge.log import log_context
from bot.delivery import Delivery
from bot.messages import progress_text, queued_text, stalled_text
from bot.queue_view import QueueSnapshot, read_queue
from bot.status import StatusBoard
from storage import jobs
from storage.claims import Shards
from storage.jobs import JobView

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)

#: How long closing the bot waits for the watcher's current tick, and then for deliveries in flight, to finish.
SHUTDOWN_WAIT_S = 10.0
#: Under a status line that carries the first seconds of its beat (``BEATFORGE_PREVIEW_S``).
PREVIEW_LINE = "\n🎧 The first seconds, while the rest is made:"
#: Finished jobs read per tick (the due ones, oldest first); more than can start, as some may wait for an answer.
UNDELIVERED_BATCH = 20


def shards_of(settings: Settings) -> Shards | None:
    """The shards this process runs (None: unsharded, it sees every job)."""
    if settings.shard_count is None:
        return None
    ids = settings.shard_ids if settings.shard_ids is not None else range(settings.shard_count)
    return Shards(count=settings.shard_count, ids=frozenset(ids))


def status_text(job: JobView, snapshot: QueueSnapshot, *, silent_since: datetime) -> str:
    """What an active job's status line says now: its place in line and wait, or how far the worker is (or that
    its worker stopped: no heartbeat since ``silent_since``)."""
    if job.status is JobStatus.RUNNING and job.heartbeat_at is not None and job.heartbeat_at < silent_since:
        return stalled_text(job)
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
        #: The delivery in flight for each job: one task per job, ``settings.delivery_concurrency`` at most.
        self.deliveries: dict[int, asyncio.Task[None]] = {}
        self.shards = shards_of(settings)
        self.poll.change_interval(seconds=settings.watch_interval_s)

    async def cog_load(self) -> None:
        self.poll.start()

    async def cog_unload(self) -> None:
        self.poll.cancel()
        await self._cancel_deliveries()

    async def finish(self, grace_s: float = SHUTDOWN_WAIT_S) -> None:
        """Stop polling after the current tick, then give the deliveries in flight ``grace_s`` seconds to finish;
        the rest are cancelled (their rows stay undelivered, and the nonce keeps the retry from posting twice)."""
        task = self.poll.get_task()
        self.poll.stop()
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), grace_s)
            except TimeoutError:
                log.warning("job watcher still busy at shutdown; cancelling it")
                self.poll.cancel()
        if self.deliveries:
            await asyncio.wait(list(self.deliveries.values()), timeout=grace_s)
        await self._cancel_deliveries()

    async def _cancel_deliveries(self) -> None:
        pending = [task for task in self.deliveries.values() if not task.done()]
        if not pending:
            return
        log.warning(
            "cancelling deliveries in flight; retried after restart", extra={"job_ids": sorted(self.deliveries)}
        )
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=SHUTDOWN_WAIT_S)

    @tasks.loop(seconds=1.0)
    async def poll(self) -> None:
        await self.tick()

    @poll.error
    async def _poll_failed(self, error: BaseException) -> None:
        # tasks.loop stops on an unhandled error; a broken tick must not end progress and delivery for good.
        log.error("job watcher tick failed; restarting", exc_info=error)
        self.poll.restart()

    async def tick(self) -> None:
        """One round: start delivering the finished jobs that are due, then bring every active job's status line
        up to date. Deliveries are not waited for."""
        async with self.sessions() as session:
            active = await jobs.list_active(session, shards=self.shards)
            finished = await jobs.list_undelivered(
                session,
                exclude=list(self.deliveries),
                limit=UNDELIVERED_BATCH,
                owner=self.delivery.owner,
                shards=self.shards,
            )
        self.start_deliveries(finished)
        # A job that finished between the two reads is being delivered: its line must not go back to "generating".
        active = [job for job in active if job.id not in self.deliveries]
        if active:
            await self.refresh(active)

    def start_deliveries(self, finished: list[JobView]) -> None:
        """A task for each finished job not yet in hand, while fewer than ``delivery_concurrency`` run."""
        for job in finished:
            if len(self.deliveries) >= self.settings.delivery_concurrency:
                return
            if job.id in self.deliveries:
                continue
            if job.status_message_id is None and self.status.answering(job.id):
                continue  # /beat is still answering; deliver later so its edit cannot overwrite the result
            task = asyncio.create_task(self._deliver(job), name=f"beatforge-delivery-{job.id}")
            self.deliveries[job.id] = task
            task.add_done_callback(functools.partial(self._delivered, job.id))

    def _delivered(self, job_id: int, task: asyncio.Task[None]) -> None:
        if self.deliveries.get(job_id) is task:
            del self.deliveries[job_id]

    async def _deliver(self, job: JobView) -> None:
        with log_context(job_id=job.id, user_id=job.user_id, guild_id=job.guild_id):
            try:
                await self.delivery.deliver(job)
            except Exception:  # the bookkeeping failed (the database): the row is still due, retried next tick
                log.exception("delivery could not be recorded; retrying")

    async def refresh(self, active: list[JobView]) -> None:
        """Bring the active jobs' status lines up to date from one read of the queue."""
        try:
            snapshot = await read_queue(self.redis, self.settings, active)
        except (RedisError, OSError) as exc:
            log.warning("could not read the queue; status lines wait a tick", extra={"error": repr(exc)})
            return
        silent_since = discord.utils.utcnow() - timedelta(seconds=self.settings.job_stale_after_s)
        for job in active:
            text = status_text(job, snapshot, silent_since=silent_since)
            if job.id in self.status.previewed:
                text += PREVIEW_LINE
            try:
                entry = snapshot.entry_for(job.id)
                progress = entry.progress if entry is not None else None
                if progress is not None and progress.preview and await self.show_preview(job, text):
                    continue
                await self.status.show(job, text)
            except discord.HTTPException as exc:
                log.warning("status update failed", extra={"job_id": job.id, "error": repr(exc)})

    async def show_preview(self, job: JobView, text: str) -> bool:
        """Attach the first seconds of the beat to its status line, once: True when this edit was made."""
        if job.id in self.status.previewed:
            return False
        try:
            data = await self.redis.get(PREVIEW_KEY.format(job_id=job.id))
        except (RedisError, OSError) as exc:
            log.warning("could not read a preview", extra={"job_id": job.id, "error": repr(exc)})
            return False
        if not data:
            return False
        file = discord.File(io.BytesIO(data), filename=f"beatforge-{job.id}-preview.ogg")
        await self.status.edit(job, text + PREVIEW_LINE, preview=file)
        return True


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(bot.watcher)
