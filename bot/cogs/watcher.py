"""Keeps Discord in step with the queue: progress edits while jobs run, results when they finish.

The database is the source of truth (what is finished, what is delivered); redis holds the
volatile progress. Results are posted as a follow-up while the interaction token lives (it
needs no channel permissions), otherwise as a channel message replying to the status message.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands, tasks
from pydantic import ValidationError
from redis.exceptions import RedisError

from beatforge.contract import PROGRESS_KEY, JobProgress, JobStatus
from bot.cogs.generate import queue_position
from bot.messages import done_status_text, failure_text, progress_text, queued_text, result_text, too_large_text
from bot.views import result_view
from storage import jobs
from storage.jobs import JobView

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)

#: Discord keeps an interaction token for 15 minutes; stop using it a little before.
TOKEN_MARGIN = timedelta(minutes=1)
#: How long closing the bot waits for the watcher's current tick (a delivery in flight) to finish.
SHUTDOWN_WAIT_S = 10.0
#: Delivery attempts before a result is given up on (each failure is logged).
MAX_DELIVERY_ATTEMPTS = 5
DEFAULT_FILESIZE_LIMIT = 10 * 2**20
#: What a result message carries, in this order (Discord allows 10 attachments; takes are up to 4 audio files).
ATTACHED_KINDS = ("audio", "loop", "preview", "metadata", "midi", "stems", "stems_preview", "cover")
#: A smaller copy the worker made in case the full file is over the limit: posted only when the full one is not.
PREVIEW_OF = {"preview": "loop", "stems_preview": "stems"}


@dataclass(frozen=True, slots=True)
class ResultMessage:
    content: str
    attachments: tuple[Path, ...] = ()
    embed: discord.Embed | None = None
    view: discord.ui.View | None = None

    def send_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``send``; the files are opened anew on each call (discord.py closes them once
        sent, so each attempt needs its own)."""
        kwargs: dict[str, Any] = {"files": [discord.File(path, filename=path.name) for path in self.attachments]}
        if self.embed is not None:
            kwargs["embed"] = self.embed
        if self.view is not None:
            kwargs["view"] = self.view
        return kwargs


class JobWatcher(commands.Cog):
    def __init__(self, bot: Beatforge) -> None:
        self.bot = bot
        self.attempts: dict[int, int] = {}
        self.poll.change_interval(seconds=bot.settings.watch_interval_s)

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

    def _live(self, job_id: int) -> discord.Interaction | None:
        interaction = self.bot.live_interactions.get(job_id)
        if interaction is None or discord.utils.utcnow() > interaction.expires_at - TOKEN_MARGIN:
            return None
        return interaction

    @tasks.loop(seconds=1.0)
    async def poll(self) -> None:
        async with self.bot.sessions() as session:
            active = await jobs.list_active(session)
            finished = await jobs.list_undelivered(session)
        for job in active:
            await self.refresh(job)
        for job in finished:
            if job.status_message_id is None and job.id in self.bot.live_interactions:
                continue  # /beat is still answering; deliver next tick so its edit cannot overwrite the result
            await self.deliver(job)

    @poll.error
    async def _poll_failed(self, error: BaseException) -> None:
        # tasks.loop stops on an unhandled error; a broken tick must not end progress and delivery for good.
        log.error("job watcher tick failed; restarting", exc_info=error)
        self.poll.restart()

    async def _status_text(self, job: JobView) -> str:
        if job.status is JobStatus.QUEUED:
            return queued_text(job, await queue_position(self.bot, job.queue_job_id))
        raw = await self.bot.redis.get(PROGRESS_KEY.format(job_id=job.id))
        try:
            progress = JobProgress.model_validate_json(raw) if raw else None
        except ValidationError:
            log.warning("unreadable progress record", extra={"job_id": job.id})
            progress = None
        return progress_text(job, progress)

    async def _edit_status(self, job: JobView, content: str) -> None:
        interaction = self._live(job.id)
        if interaction is not None:
            await interaction.edit_original_response(content=content)
        elif job.channel_id and job.status_message_id:
            channel = self.bot.get_partial_messageable(job.channel_id)
            await channel.get_partial_message(job.status_message_id).edit(content=content)
        self.bot.status_shown[job.id] = content

    async def refresh(self, job: JobView) -> None:
        try:
            content = await self._status_text(job)
            if self.bot.status_shown.get(job.id) != content:
                await self._edit_status(job, content)
        except (discord.HTTPException, RedisError) as exc:
            log.warning("status update failed", extra={"job_id": job.id, "error": repr(exc)})

    def _filesize_limit(self, job: JobView) -> int:
        interaction = self.bot.live_interactions.get(job.id)
        if interaction is not None:
            return interaction.filesize_limit
        guild = self.bot.get_guild(job.guild_id) if job.guild_id else None
        return guild.filesize_limit if guild is not None else DEFAULT_FILESIZE_LIMIT

    async def _post(self, job: JobView, message: ResultMessage) -> discord.Message:
        """Post as a follow-up while the token lives, else in the channel replying to the status message."""
        interaction = self._live(job.id)
        if interaction is not None:
            try:
                return await interaction.followup.send(message.content, wait=True, **message.send_kwargs())
            except discord.NotFound:
                log.info("interaction token gone; posting to the channel", extra={"job_id": job.id})
        if job.channel_id is None:
            raise LookupError(f"job #{job.id} has no channel to deliver to")
        reference = (
            discord.MessageReference(
                message_id=job.status_message_id, channel_id=job.channel_id, fail_if_not_exists=False
            )
            if job.status_message_id
            else None
        )
        channel = self.bot.get_partial_messageable(job.channel_id)
        return await channel.send(message.content, reference=reference, **message.send_kwargs())

    async def deliver(self, job: JobView) -> None:
        try:
            if job.status is JobStatus.DONE:
                await self._deliver_result(job)
            else:
                await self._deliver_failure(job)
        except (discord.HTTPException, OSError, LookupError) as exc:
            attempts = self.attempts[job.id] = self.attempts.get(job.id, 0) + 1
            log.warning("delivery failed", extra={"job_id": job.id, "attempt": attempts, "error": repr(exc)})
            if attempts < MAX_DELIVERY_ATTEMPTS:
                return
            log.error("giving up on delivery", extra={"job_id": job.id})
        async with self.bot.sessions() as session:
            await jobs.mark_delivered(session, job.id)
        self.bot.live_interactions.pop(job.id, None)
        self.bot.status_shown.pop(job.id, None)
        self.attempts.pop(job.id, None)

    def compose(self, job: JobView, limit: int) -> ResultMessage:
        """A finished job's result message: text, the files that fit under ``limit``, cover embed and buttons.

        Used for the first delivery and whenever a result is posted again (/history, /show).
        """
        by_kind = {a.kind: a for a in reversed(job.artifacts)}  # the first of each kind (take 1 of the audio)
        if job.kind == "beat" and "audio" not in by_kind:
            raise LookupError(f"job #{job.id} is done but has no audio artifact")
        lines, attachments, embed = [result_text(job)], [], None
        for artifact in sorted(
            (a for a in job.artifacts if a.kind in ATTACHED_KINDS), key=lambda a: ATTACHED_KINDS.index(a.kind)
        ):
            full = by_kind.get(PREVIEW_OF.get(artifact.kind, ""))
            if full is not None and full.bytes <= limit:
                continue
            path = self.bot.store.resolve(artifact.path)
            if artifact.bytes > limit:
                url, expires = self.bot.download_link(artifact.path) or (None, None)
                lines.append(too_large_text(path.name, artifact.bytes, limit, url, expires))
                continue
            attachments.append(path)
            if artifact.kind == "cover":
                embed = discord.Embed(colour=discord.Colour.dark_purple()).set_image(url=f"attachment://{path.name}")
        return ResultMessage("\n".join(lines), tuple(attachments), embed, result_view(job))

    async def _deliver_result(self, job: JobView) -> None:
        message = await self._post(job, self.compose(job, self._filesize_limit(job)))
        async with self.bot.sessions() as session:
            await jobs.set_result_message(session, job.id, message.id)
        await self._edit_status(job, done_status_text(job))

    async def _deliver_failure(self, job: JobView) -> None:
        text = failure_text(job)
        if self._live(job.id) is None:
            await self._post(job, ResultMessage(text))  # a fresh reply the user will notice, unlike an old edit
        await self._edit_status(job, text)


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(JobWatcher(bot))
