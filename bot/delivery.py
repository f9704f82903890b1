"""Posting results: where a finished job's message goes, and what happens when Discord refuses it.

Results are posted as a follow-up while the interaction token lives (it needs no channel permissions),
otherwise as a channel message replying to the status message, and by DM when the bot may not post there.
Files are fitted to the limits Discord reports (``bot/results.py``); what Discord refuses with a 413 anyway is
left out and named on the next try, so a result never fails silently. A delivery that keeps failing is given
up after a bounded number of attempts, each logged. /show and /history's Re-post post through here too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import discord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.bounds import DISCORD_UPLOAD_LIMIT
from beatforge.contract import JobStatus
from bot.errors import UserFacingError
from bot.messages import dm_fallback_text, done_status_text, failure_text, label
from bot.results import ResultComposer, ResultMessage
from bot.status import StatusBoard
from storage import jobs
from storage.jobs import JobView

log = logging.getLogger(__name__)

#: Delivery attempts before a result is given up on (each failure is logged).
MAX_DELIVERY_ATTEMPTS = 5


class Undeliverable(Exception):
    """Neither the interaction, the channel nor the requester's DMs take the message: retrying cannot help."""


class Build(Protocol):
    """Builds the message to send for an upload limit, leaving out files Discord refused (413), led by ``lead``."""

    def __call__(self, limit: int, refused: frozenset[Path], lead: str | None = None, /) -> ResultMessage: ...


Send = Callable[[ResultMessage], Awaitable[discord.Message]]


class Delivery:
    def __init__(
        self,
        *,
        client: discord.Client,
        sessions: async_sessionmaker[AsyncSession],
        composer: ResultComposer,
        status: StatusBoard,
    ) -> None:
        #: For channels, servers' upload limits and DMs.
        self.client = client
        self.sessions, self.composer, self.status = sessions, composer, status
        #: Failed attempts per job since this process started.
        self.attempts: dict[int, int] = {}

    async def deliver(self, job: JobView) -> None:
        """Post a finished job's result (or why it failed), then mark it delivered; a failed attempt leaves it
        for the next call until ``MAX_DELIVERY_ATTEMPTS``."""
        try:
            if job.status is JobStatus.DONE:
                await self._deliver_result(job)
            else:
                await self._deliver_failure(job)
        except Undeliverable as exc:
            log.error("result delivered nowhere; giving up", extra={"job_id": job.id, "error": str(exc)})
        except Exception as exc:  # Discord, files, or a bug composing this one job: bounded, never a tight loop
            attempts = self.attempts[job.id] = self.attempts.get(job.id, 0) + 1
            expected = isinstance(exc, discord.HTTPException | OSError | LookupError)
            log.warning(
                "delivery failed",
                extra={"job_id": job.id, "attempt": attempts, "error": repr(exc)},
                exc_info=None if expected else exc,
            )
            if attempts < MAX_DELIVERY_ATTEMPTS:
                return
            log.error("giving up on delivery", extra={"job_id": job.id})
        async with self.sessions() as session:
            await jobs.mark_delivered(session, job.id)
        self.status.forget(job.id)
        self.attempts.pop(job.id, None)

    async def repost(self, interaction: discord.Interaction, job: JobView) -> discord.Message:
        """Post a finished job's result publicly as ``interaction``'s answer, files and working buttons included.

        Raises:
            UserFacingError: its files are gone, or Discord refused the message.
        """
        try:
            result = self.composer.compose(job, interaction.filesize_limit)
            # Opening the files here, before the public defer, keeps a missing file a private explanation.
            kwargs = result.send_kwargs()
        except (LookupError, OSError) as exc:
            log.warning("cannot re-post a result", extra={"job_id": job.id, "error": repr(exc)})
            raise UserFacingError(f"The files of {label(job)} are no longer available, so it can't be posted.") from exc
        files: list[discord.File] = kwargs.pop("files")
        try:
            await interaction.response.defer(thinking=True)  # uploads can outlast Discord's 3 seconds
            message = await interaction.edit_original_response(content=result.content, attachments=files, **kwargs)
        except discord.HTTPException as exc:
            log.warning(
                "re-posting a result failed", extra={"job_id": job.id, "status": exc.status, "error": repr(exc)}
            )
            raise UserFacingError(f"Discord refused to post {label(job)} ({exc.status}); please try again.") from exc
        finally:
            for file in files:  # closed after a successful upload already; this covers a failed one
                file.close()
        log.info("result re-posted", extra={"job_id": job.id, "user_id": interaction.user.id})
        return message

    async def _deliver_result(self, job: JobView) -> None:
        if job.result_message_id is None:
            message = await self._post(job, functools.partial(self.composer.compose, job))
            async with self.sessions() as session:
                await jobs.set_result_message(session, job.id, message.id)
        else:  # posted on an earlier attempt whose bookkeeping failed: never post it twice
            log.info("result already posted", extra={"job_id": job.id, "message_id": job.result_message_id})
        await self._edit_status_quietly(job, done_status_text(job))

    async def _deliver_failure(self, job: JobView) -> None:
        text = failure_text(job)
        if self.status.live(job.id) is not None:
            try:
                await self.status.edit(job, text)  # the "thinking…" message becomes the answer
                return
            except discord.NotFound:
                log.info("interaction token gone; posting the failure to the channel", extra={"job_id": job.id})
                self.status.token_gone(job.id)

        def build(_limit: int, _refused: frozenset[Path], lead: str | None = None) -> ResultMessage:
            return ResultMessage("\n".join(line for line in (lead, text) if line))  # no files: no limit applies

        await self._post(job, build)  # a fresh reply the user will notice, unlike an old edit
        await self._edit_status_quietly(job, text)

    async def _edit_status_quietly(self, job: JobView, content: str) -> None:
        """Edit the status message once the result is out; a failure here must not post the result again."""
        try:
            await self.status.edit(job, content)
        except discord.HTTPException as exc:
            log.warning("status edit after delivery failed", extra={"job_id": job.id, "error": repr(exc)})

    def _channel_limit(self, job: JobView) -> int:
        """A channel message is bound by its server's limit (boosts raise it), else what the interaction said."""
        guild = self.client.get_guild(job.guild_id) if job.guild_id else None
        if guild is not None:
            return guild.filesize_limit
        interaction = self.status.interactions.get(job.id)
        return interaction.filesize_limit if interaction is not None else DISCORD_UPLOAD_LIMIT

    async def _send_fitting(self, build: Build, limit: int, send: Send) -> discord.Message:
        """Send ``build``'s message; on 413 (Discord found the request too large) send it again without its
        largest file, which the rebuilt message names with a link or a "too large" line, until it goes through."""
        refused: set[Path] = set()
        while True:
            message = build(limit, frozenset(refused))
            try:
                return await send(message)
            except discord.HTTPException as exc:
                if exc.status != 413 or not message.attachments:
                    raise
                largest = max(message.attachments, key=lambda path: path.stat().st_size)
                log.warning("upload refused as too large; sending without it", extra={"file": largest.name})
                refused.add(largest)

    async def _post(self, job: JobView, build: Build) -> discord.Message:
        """Post as a follow-up while the token lives (needs no channel permissions), else in the channel replying
        to the status message, else (no permission there) by DM to the requester."""
        interaction = self.status.live(job.id)
        if interaction is not None:

            async def followup(message: ResultMessage) -> discord.Message:
                return await interaction.followup.send(message.content, wait=True, **message.send_kwargs())

            try:
                return await self._send_fitting(build, interaction.filesize_limit, followup)
            except discord.NotFound:  # the token expired early or was never valid: it will not come back
                log.info("interaction token gone; posting to the channel", extra={"job_id": job.id})
                self.status.token_gone(job.id)
        if job.channel_id is not None:
            reference = (
                discord.MessageReference(
                    message_id=job.status_message_id, channel_id=job.channel_id, fail_if_not_exists=False
                )
                if job.status_message_id
                else None
            )
            channel = self.client.get_partial_messageable(job.channel_id)

            async def to_channel(message: ResultMessage) -> discord.Message:
                kwargs = message.send_kwargs()
                if reference is not None:
                    kwargs["reference"] = reference
                return await channel.send(message.content, **kwargs)

            try:
                return await self._send_fitting(build, self._channel_limit(job), to_channel)
            except (discord.Forbidden, discord.NotFound) as exc:  # no permission there, or the channel is gone
                log.warning("cannot post in the channel; sending by DM", extra={"job_id": job.id, "error": repr(exc)})
        return await self._send_dm(job, build)

    async def _send_dm(self, job: JobView, build: Build) -> discord.Message:
        lead = dm_fallback_text(job)
        try:
            dm = await self.client.create_dm(discord.Object(job.user_id))

            def with_lead(limit: int, refused: frozenset[Path], _lead: str | None = None, /) -> ResultMessage:
                return build(limit, refused, lead)  # a DM says why it came by DM

            async def to_dm(message: ResultMessage) -> discord.Message:
                return await dm.send(message.content, **message.send_kwargs())

            # A bot's DMs get the default upload limit: no server boosts apply there.
            return await self._send_fitting(with_lead, DISCORD_UPLOAD_LIMIT, to_dm)
        except (discord.Forbidden, discord.NotFound) as exc:  # DMs closed, or the user is gone
            raise Undeliverable(f"job #{job.id}: no channel, interaction or DM accepts the result ({exc})") from exc
