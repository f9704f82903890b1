"""Posting results: where a finished job's message goes, and what happens when Discord refuses it.

Delivery is an outbox on the job rows: the watcher (``bot/cogs/watcher.py``) hands each due, undelivered job to
``Delivery.deliver`` as a task of its own. A failed attempt is recorded on the row (``delivery_attempts``, and
``deliver_after`` a backoff later), so a restart keeps the schedule; after ``settings.delivery_max_attempts`` the
user is told in a short message where to find the result (/history), and the row is marked delivered.

Results are posted in the job's channel, replying to the status message, with a nonce made from the job: Discord
answers a repeated create with the same nonce (``enforce_nonce``, which discord.py sends with every nonce) with
the message it already made, so a bot killed between Discord accepting a result and the row recording it posts
it once, not twice, when it tries again. Only where the bot may not post in the channel (403/404) does the
result go out as the interaction's follow-up (webhooks take no nonce) while the token lives, else by DM. Files
are fitted to the limits Discord reports (``bot/results.py``); what Discord refuses with a 413 anyway is left
out and named on the next try. /show and /history's Re-post post through here too.

Several bot processes may share the database (shards, or a deploy's old and new bot). Each attempt first claims the
row for a lease (``settings.delivery_claim_s``, renewed while the attempt lasts): only the claim's winner posts, the
others leave the job alone. A failed or cancelled attempt gives the claim back; a bot that dies mid-delivery leaves
it to expire, after which another bot delivers, and the nonce still keeps Discord from showing the result twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import discord
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.bounds import DISCORD_UPLOAD_LIMIT
from beatforge.contract import JobStatus
from bot.errors import UserFacingError
from bot.messages import dm_fallback_text, done_status_text, failure_text, label, undeliverable_text
from bot.results import ResultComposer, ResultMessage
from bot.status import StatusBoard
from storage import claims, jobs
from storage.jobs import JobView
from storage.models import utcnow

log = logging.getLogger(__name__)

#: The wait after the first failed attempt; each further failure doubles it, up to ``RETRY_CAP_S``. Five
#: attempts span half a minute, well inside the few minutes Discord remembers a nonce.
RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0
#: Discord's limit on a nonce's length.
NONCE_CHARS = 25
#: How long a re-post waits for its files from object storage before answering (Discord wants one within 3 s).
REPOST_FETCH_S = 2.0


def result_nonce(job: JobView) -> str:
    """The nonce of a job's result message: the same on every attempt and after a restart, unique per job."""
    return f"bf{job.queue_job_id}"[:NONCE_CHARS]


def notice_nonce(job: JobView) -> str:
    """The nonce of the "couldn't deliver" notice: another message than the result, so another nonce."""
    return f"bx{job.queue_job_id}"[:NONCE_CHARS]


class Undeliverable(Exception):
    """Neither the interaction, the channel nor the requester's DMs take the message: retrying cannot help."""


class Build(Protocol):
    """Builds the message to send for an upload limit, leaving out files Discord refused (413), led by ``lead``."""

    def __call__(self, limit: int, refused: frozenset[Path], lead: str | None = None, /) -> ResultMessage: ...


Send = Callable[[ResultMessage], Awaitable[discord.Message]]

#: How long one attempt may hold a job's delivery before another bot may take it over (``delivery_claim_s``).
DEFAULT_CLAIM_S = 60.0


def process_owner() -> str:
    """A name for this bot in the claims it takes: host and pid for the logs, plus randomness, so a restarted
    process (same pid in a container) or a second ``Delivery`` in one process is another owner."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


class Delivery:
    def __init__(
        self,
        *,
        client: discord.Client,
        sessions: async_sessionmaker[AsyncSession],
        composer: ResultComposer,
        status: StatusBoard,
        max_attempts: int = 5,
        claim_s: float = DEFAULT_CLAIM_S,
        owner: str | None = None,
    ) -> None:
        #: For channels, servers' upload limits and DMs.
        self.client = client
        self.sessions, self.composer, self.status = sessions, composer, status
        #: Attempts before the user is told the result could not be delivered (``settings.delivery_max_attempts``).
        self.max_attempts = max_attempts
        self.retry_base_s, self.retry_cap_s = RETRY_BASE_S, RETRY_CAP_S
        #: Who this bot is in delivery claims, and how long a claim holds unless renewed (``delivery_claim_s``).
        self.owner = owner or process_owner()
        self.claim_lease = timedelta(seconds=claim_s)

    def retry_delay(self, failed: int) -> timedelta:
        """How long to wait after the ``failed``-th failed attempt: doubling from ``retry_base_s``, capped."""
        return timedelta(seconds=min(self.retry_cap_s, self.retry_base_s * 2 ** (failed - 1)))

    async def deliver(self, job: JobView) -> None:
        """One attempt at a finished job's result (or why it failed), if this bot wins the job's delivery claim;
        when another bot holds it (or delivered the job already) this returns without posting anything.

        Success marks the row delivered; a failure records the attempt and when to try again, or, the last one,
        tells the user and marks it delivered. Raises only what the bookkeeping itself meets (the database); a
        cancellation gives the claim back and leaves the row due again, and the nonce keeps a repeat from posting
        twice.
        """
        async with self.sessions() as session:
            if not await claims.claim_delivery(session, job.id, owner=self.owner, lease=self.claim_lease):
                log.info("another bot is delivering this job", extra={"job_id": job.id})
                return
            # Fresh from the row: another bot's earlier attempt may have posted the result or counted a failure.
            job = await jobs.get_job(session, job.id)
        renewal = asyncio.create_task(self._keep_claim(job.id), name=f"beatforge-delivery-claim-{job.id}")
        try:
            failed = await self._attempt(job)
        except asyncio.CancelledError:
            renewal.cancel()
            await self._release(job.id)
            raise
        finally:
            renewal.cancel()
        await asyncio.wait([renewal])  # no renewal may land after the bookkeeping below lets the claim go
        async with self.sessions() as session:
            if failed is not None:
                retry_at = utcnow() + self.retry_delay(failed)
                await jobs.delay_delivery(session, job.id, attempts=failed, until=retry_at, owner=self.owner)
                return
            if not await jobs.mark_delivered(session, job.id):
                log.warning("job was marked delivered by another bot meanwhile", extra={"job_id": job.id})
        self.status.forget(job.id)

    async def _attempt(self, job: JobView) -> int | None:
        """Post the result (or the failure, or at last the notice that it is undeliverable). None: the outbox is
        done with the job; else the failed attempts so far, to be retried later."""
        try:
            if job.status is JobStatus.DONE:
                await self._deliver_result(job)
            else:
                await self._deliver_failure(job)
        except Undeliverable as exc:
            log.error("result delivered nowhere; giving up", extra={"job_id": job.id, "error": str(exc)})
            await self._edit_status_quietly(job, undeliverable_text(job))
        except Exception as exc:  # Discord, files, or a bug composing this one job: recorded, retried later
            failed = job.delivery_attempts + 1
            expected = isinstance(exc, discord.HTTPException | OSError | LookupError)
            log.warning(
                "delivery failed",
                extra={"job_id": job.id, "attempt": failed, "error": repr(exc)},
                exc_info=None if expected else exc,
            )
            if failed < self.max_attempts:
                return failed
            log.error("giving up on delivery", extra={"job_id": job.id, "attempts": failed})
            await self._tell_undeliverable(job)
        return None

    async def _keep_claim(self, job_id: int) -> None:
        """Renew the claim every third of its lease while the attempt lasts: an upload that waits out rate limits
        or a slow Discord may outlast one lease, and another bot must not take the job over meanwhile."""
        while True:
            await asyncio.sleep(self.claim_lease.total_seconds() / 3)
            try:
                async with self.sessions() as session:
                    kept = await claims.claim_delivery(session, job_id, owner=self.owner, lease=self.claim_lease)
            except (SQLAlchemyError, OSError) as exc:  # the lease still runs; the next renewal may get through
                log.warning("could not renew a delivery claim", extra={"job_id": job_id, "error": repr(exc)})
                continue
            if not kept:  # it expired while the database was out of reach, and another bot took it over
                log.warning("delivery claim lost to another bot", extra={"job_id": job_id})
                return

    async def _release(self, job_id: int) -> None:
        """Give the claim back when an attempt is cancelled (shutdown), so another bot need not wait out the lease."""
        try:
            async with self.sessions() as session:
                await claims.release_delivery(session, job_id, owner=self.owner)
        except (SQLAlchemyError, OSError) as exc:  # the lease expires on its own
            log.warning("could not release a delivery claim", extra={"job_id": job_id, "error": repr(exc)})

    async def repost(self, interaction: discord.Interaction, job: JobView) -> discord.Message:
        """Post a finished job's result publicly as ``interaction``'s answer, files and working buttons included.

        Raises:
            UserFacingError: its files are gone, or Discord refused the message.
        """
        try:
            # Object storage: fetched off the event loop, within Discord's 3 s for an answer. A slow bucket still
            # fills the cache in the background, so asking again a moment later posts at once.
            fetching = self.composer.prepare(job, interaction.filesize_limit)
            await asyncio.wait_for(asyncio.shield(fetching), timeout=REPOST_FETCH_S)
        except TimeoutError as exc:
            raise UserFacingError(
                f"The files of {label(job)} are still on their way from storage; try again in a moment."
            ) from exc
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
            # Object storage: fetched off the event loop first (the rare DM with a higher limit fetches the rest).
            await self.composer.prepare(job, self._channel_limit(job))
            build = functools.partial(self.composer.compose, job)
            message = await self._post(job, build, nonce=result_nonce(job))
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
        await self._post(job, _text_only(text), nonce=result_nonce(job))  # a fresh reply the user will notice
        await self._edit_status_quietly(job, text)

    async def _tell_undeliverable(self, job: JobView) -> None:
        """The last word after the last failed attempt: a short notice wherever it goes through (channel,
        follow-up, DM) and on the status line, each failure logged, so the user is never left with "queued"."""
        text = undeliverable_text(job)
        try:
            await self._post(job, _text_only(text), nonce=notice_nonce(job))
        except Exception as exc:  # nothing takes even this; the status line below is the last chance
            log.error(
                "could not tell the user the result is undeliverable", extra={"job_id": job.id, "error": repr(exc)}
            )
        await self._edit_status_quietly(job, text)

    async def _edit_status_quietly(self, job: JobView, content: str) -> None:
        """Edit the status message once the result is out; a failure here must not post the result again."""
        try:
            await self.status.edit(job, content)
        except discord.HTTPException as exc:
            log.warning("status edit after delivery failed", extra={"job_id": job.id, "error": repr(exc)})

    def _channel_limit(self, job: JobView) -> int:
        """A channel message is bound by its server's limit (boosts raise it) and, while this process holds the
        job's interaction, by what Discord said there, whichever is lower."""
        limits = []
        guild = self.client.get_guild(job.guild_id) if job.guild_id else None
        if guild is not None:
            limits.append(guild.filesize_limit)
        interaction = self.status.interactions.get(job.id)
        if interaction is not None:
            limits.append(interaction.filesize_limit)
        return min(limits, default=DISCORD_UPLOAD_LIMIT)

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

    async def _post(self, job: JobView, build: Build, *, nonce: str) -> discord.Message:
        """Post in the job's channel replying to its status message, with ``nonce`` so a repeat is answered with
        the message already made. Where the bot may not post there (403, or 404: the channel is gone), as the
        interaction's follow-up while the token lives, else by DM.

        Raises:
            discord.HTTPException: the channel failed otherwise (5xx, a 429 discord.py gave up on): the attempt
                fails and is retried later with the same nonce, where another route could post it twice.
            Undeliverable: no route takes it.
        """
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
                return await channel.send(message.content, nonce=nonce, **kwargs)

            try:
                return await self._send_fitting(build, self._channel_limit(job), to_channel)
            except (discord.Forbidden, discord.NotFound) as exc:  # no permission there, or the channel is gone
                log.warning("cannot post in the channel", extra={"job_id": job.id, "error": repr(exc)})
        interaction = self.status.live(job.id)
        if interaction is not None:

            async def followup(message: ResultMessage) -> discord.Message:
                return await interaction.followup.send(message.content, wait=True, **message.send_kwargs())

            try:
                return await self._send_fitting(build, interaction.filesize_limit, followup)
            except discord.HTTPException as exc:  # token dead, or Discord failing: the DM is the last way left
                log.warning("follow-up failed; sending by DM", extra={"job_id": job.id, "error": repr(exc)})
                if isinstance(exc, discord.NotFound):
                    self.status.token_gone(job.id)
        return await self._send_dm(job, build, nonce=nonce)

    async def _send_dm(self, job: JobView, build: Build, *, nonce: str) -> discord.Message:
        lead = dm_fallback_text(job)
        try:
            dm = await self.client.create_dm(discord.Object(job.user_id))

            def with_lead(limit: int, refused: frozenset[Path], _lead: str | None = None, /) -> ResultMessage:
                return build(limit, refused, lead)  # a DM says why it came by DM

            async def to_dm(message: ResultMessage) -> discord.Message:
                return await dm.send(message.content, nonce=nonce, **message.send_kwargs())

            # A bot's DMs get the default upload limit: no server boosts apply there.
            return await self._send_fitting(with_lead, DISCORD_UPLOAD_LIMIT, to_dm)
        except (discord.Forbidden, discord.NotFound) as exc:  # DMs closed, or the user is gone
            raise Undeliverable(f"job #{job.id}: no channel, interaction or DM accepts the message ({exc})") from exc


def _text_only(text: str) -> Build:
    """A message of ``text`` alone (no files, so no upload limit applies), led by a DM's lead line when given."""

    def build(_limit: int, _refused: frozenset[Path], lead: str | None = None, /) -> ResultMessage:
        return ResultMessage("\n".join(line for line in (lead, text) if line))

    return build
