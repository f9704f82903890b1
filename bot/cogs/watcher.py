"""Keeps Discord in step with the queue: progress edits while jobs run, results when they finish.

The database is the source of truth (what is finished, what is delivered); redis holds the
volatile progress. Results are posted as a follow-up while the interaction token lives (it
needs no channel permissions), otherwise as a channel message replying to the status message, and
by DM when the bot may not post there. Files are fitted to the limits Discord reports (per file, 10
per message, 25 MB per request); what is left out, or refused with a 413, is named with its download
link or a clear "too large" line, so a result never fails silently.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import discord
from discord.ext import commands, tasks
from pydantic import ValidationError
from redis.exceptions import RedisError

from beatforge.bounds import DISCORD_MESSAGE_CHARS, DISCORD_UPLOAD_LIMIT
from beatforge.contract import PROGRESS_KEY, ArtifactKind, AudioMeta, CompactMeta, JobKind, JobProgress, JobStatus
from bot.cogs.generate import queue_position
from bot.messages import (
    compact_note,
    dm_fallback_text,
    done_status_text,
    failure_text,
    left_out_text,
    progress_text,
    queued_text,
    result_embed,
    result_text,
    too_large_text,
)
from bot.queue_view import queued_eta
from bot.views import result_view
from storage import jobs
from storage.artifacts import ArtifactRecord
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
#: What a result message carries, in this order (Discord allows 10 attachments; takes are up to 4 audio files).
ATTACHED_KINDS = (
    ArtifactKind.AUDIO,
    ArtifactKind.LOOP,
    ArtifactKind.METADATA,
    ArtifactKind.MIDI,
    ArtifactKind.STEMS,
    ArtifactKind.COVER,
)
#: A smaller copy the worker made of a file that may be over the limit: posted only when the full one is not.
SUBSTITUTE_FOR = {
    ArtifactKind.AUDIO_COMPACT: ArtifactKind.AUDIO,
    ArtifactKind.PREVIEW: ArtifactKind.LOOP,
    ArtifactKind.STEMS_PREVIEW: ArtifactKind.STEMS,
}
#: Discord takes at most this many files in one message.
MAX_ATTACHMENTS = 10
#: Discord refuses a message request over 25 MB whatever the per-file limit.
MAX_REQUEST_BYTES = 25_000_000
#: Kept free of files in a request: the JSON part (content, embed, components) and the multipart framing.
REQUEST_HEADROOM_BYTES = 256 * 1024
#: Discord's limit on an embed field's text.
MAX_FIELD_CHARS = 1024


class Undeliverable(Exception):
    """Neither the interaction, the channel nor the requester's DMs take the message: retrying cannot help."""


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


class Build(Protocol):
    """Builds the message to send for an upload limit, leaving out files Discord refused (413), led by ``lead``."""

    def __call__(self, limit: int, refused: frozenset[Path], lead: str | None = None, /) -> ResultMessage: ...


Send = Callable[[ResultMessage], Awaitable[discord.Message]]


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
            position = await queue_position(self.bot, job.queue_job_id)
            return queued_text(job, position, eta_s=await queued_eta(self.bot, job))
        raw = await self.bot.redis.get(PROGRESS_KEY.format(job_id=job.id))
        try:
            progress = JobProgress.model_validate_json(raw) if raw else None
        except ValidationError:
            log.warning("unreadable progress record", extra={"job_id": job.id})
            progress = None
        return progress_text(job, progress)

    async def _edit_status(self, job: JobView, content: str) -> None:
        # a finished job's status loses its ❌ Cancel button; while it waits or runs the button stays
        extras: dict[str, Any] = {"view": None} if job.status in (JobStatus.DONE, JobStatus.FAILED) else {}
        interaction = self._live(job.id)
        if interaction is not None:
            await interaction.edit_original_response(content=content, **extras)
        elif job.channel_id and job.status_message_id:
            channel = self.bot.get_partial_messageable(job.channel_id)
            await channel.get_partial_message(job.status_message_id).edit(content=content, **extras)
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
        return guild.filesize_limit if guild is not None else DISCORD_UPLOAD_LIMIT

    def _channel_limit(self, job: JobView) -> int:
        """A channel message is bound by its server's limit (boosts raise it), else what the interaction said."""
        guild = self.bot.get_guild(job.guild_id) if job.guild_id else None
        return guild.filesize_limit if guild is not None else self._filesize_limit(job)

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
        interaction = self._live(job.id)
        if interaction is not None:

            async def followup(message: ResultMessage) -> discord.Message:
                return await interaction.followup.send(message.content, wait=True, **message.send_kwargs())

            try:
                return await self._send_fitting(build, interaction.filesize_limit, followup)
            except discord.NotFound:  # the token expired early or was never valid: it will not come back
                log.info("interaction token gone; posting to the channel", extra={"job_id": job.id})
                self.bot.live_interactions.pop(job.id, None)
        if job.channel_id is not None:
            reference = (
                discord.MessageReference(
                    message_id=job.status_message_id, channel_id=job.channel_id, fail_if_not_exists=False
                )
                if job.status_message_id
                else None
            )
            channel = self.bot.get_partial_messageable(job.channel_id)

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
            dm = await self.bot.create_dm(discord.Object(job.user_id))

            def with_lead(limit: int, refused: frozenset[Path], _lead: str | None = None, /) -> ResultMessage:
                return build(limit, refused, lead)  # a DM says why it came by DM

            async def to_dm(message: ResultMessage) -> discord.Message:
                return await dm.send(message.content, **message.send_kwargs())

            # A bot's DMs get the default upload limit: no server boosts apply there.
            return await self._send_fitting(with_lead, DISCORD_UPLOAD_LIMIT, to_dm)
        except (discord.Forbidden, discord.NotFound) as exc:  # DMs closed, or the user is gone
            raise Undeliverable(f"job #{job.id}: no channel, interaction or DM accepts the result ({exc})") from exc

    async def _edit_status_quietly(self, job: JobView, content: str) -> None:
        """Edit the status message once the result is out; a failure here must not post the result again."""
        try:
            await self._edit_status(job, content)
        except discord.HTTPException as exc:
            log.warning("status edit after delivery failed", extra={"job_id": job.id, "error": repr(exc)})

    async def deliver(self, job: JobView) -> None:
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
        async with self.bot.sessions() as session:
            await jobs.mark_delivered(session, job.id)
        self.bot.live_interactions.pop(job.id, None)
        self.bot.status_shown.pop(job.id, None)
        self.attempts.pop(job.id, None)

    def compose(
        self, job: JobView, limit: int, refused: frozenset[Path] = frozenset(), lead: str | None = None
    ) -> ResultMessage:
        """A finished job's result message: text, the files that fit under ``limit``, details embed and buttons.

        Used for the first delivery and whenever a result is posted again (/history, /show). ``refused``: files
        left out because Discord answered 413 with them; ``lead``: a first line (e.g. why this came by DM).
        """
        if job.kind is JobKind.BEAT and not any(a.kind is ArtifactKind.AUDIO for a in job.artifacts):
            raise LookupError(f"job #{job.id} is done but has no audio artifact")
        notes: list[str] = []
        chosen: list[tuple[ArtifactRecord, Path]] = []
        originals = {(a.kind, _take(a)): a for a in job.artifacts if a.kind in ATTACHED_KINDS}

        def sendable(artifact: ArtifactRecord) -> bool:
            return artifact.bytes <= limit and self.bot.store.resolve(artifact.path) not in refused

        for artifact in sorted((a for a in job.artifacts if _group(a) in ATTACHED_KINDS), key=_order):
            substitute_for = SUBSTITUTE_FOR.get(artifact.kind)
            original = originals.get((substitute_for, _take(artifact))) if substitute_for is not None else None
            if original is not None and sendable(original):
                continue  # the full file goes out; its smaller copy is not needed
            path = self.bot.store.resolve(artifact.path)
            url, expires = self.bot.download_link(artifact.path) or (None, None)
            if path in refused:
                reason = "Discord refused it as too large for this message"
                notes.append(left_out_text(path.name, artifact.bytes, reason, url, expires))
            elif artifact.bytes > limit:
                notes.append(too_large_text(path.name, artifact.bytes, limit, url, expires))
            else:
                chosen.append((artifact, path))
                if original is not None:
                    notes.append(compact_note(path.name, *_copy_format(artifact, path)))
        notes += self._fit_request(chosen, limit)
        embed = result_embed(job)
        cover = next((path for artifact, path in chosen if artifact.kind is ArtifactKind.COVER), None)
        if cover is not None:
            embed.set_image(url=f"attachment://{cover.name}")
        content = _fit_content([lead, result_text(job), *notes], embed)
        return ResultMessage(content, tuple(path for _, path in chosen), embed, result_view(job))

    def _fit_request(self, chosen: list[tuple[ArtifactRecord, Path]], limit: int) -> list[str]:
        """Drop the largest files, in favour of links, until the rest fit in one message (count and total size)."""
        notes: list[str] = []
        budget = max(limit, MAX_REQUEST_BYTES - REQUEST_HEADROOM_BYTES)
        while len(chosen) > MAX_ATTACHMENTS or sum(a.bytes for a, _ in chosen) > budget:
            reason = (
                f"Discord takes at most {MAX_ATTACHMENTS} files in one message"
                if len(chosen) > MAX_ATTACHMENTS
                else f"the files together are over the {MAX_REQUEST_BYTES // 10**6} MB Discord takes in one message"
            )
            artifact, path = max(chosen, key=lambda item: item[0].bytes)
            chosen.remove((artifact, path))
            url, expires = self.bot.download_link(artifact.path) or (None, None)
            notes.append(left_out_text(path.name, artifact.bytes, reason, url, expires))
        return notes

    async def _deliver_result(self, job: JobView) -> None:
        if job.result_message_id is None:
            message = await self._post(job, functools.partial(self.compose, job))
            async with self.bot.sessions() as session:
                await jobs.set_result_message(session, job.id, message.id)
        else:  # posted on an earlier attempt whose bookkeeping failed: never post it twice
            log.info("result already posted", extra={"job_id": job.id, "message_id": job.result_message_id})
        await self._edit_status_quietly(job, done_status_text(job))

    async def _deliver_failure(self, job: JobView) -> None:
        text = failure_text(job)
        if self._live(job.id) is not None:
            try:
                await self._edit_status(job, text)  # the "thinking…" message becomes the answer
                return
            except discord.NotFound:
                log.info("interaction token gone; posting the failure to the channel", extra={"job_id": job.id})
                self.bot.live_interactions.pop(job.id, None)

        def build(_limit: int, _refused: frozenset[Path], lead: str | None = None) -> ResultMessage:
            return ResultMessage("\n".join(line for line in (lead, text) if line))  # no files: no limit applies

        await self._post(job, build)  # a fresh reply the user will notice, unlike an old edit
        await self._edit_status_quietly(job, text)


def _take(artifact: ArtifactRecord) -> int:
    """The take a file is (or is a copy of); 1 for files that are not takes."""
    if artifact.meta is None:
        return 1
    if artifact.kind is ArtifactKind.AUDIO:
        return AudioMeta.model_validate(artifact.meta).take
    if artifact.kind is ArtifactKind.AUDIO_COMPACT:
        return CompactMeta.model_validate(artifact.meta).take
    return 1


def _copy_format(artifact: ArtifactRecord, path: Path) -> tuple[str, int | None]:
    """A smaller copy's format and bitrate, as the worker recorded them for a take's (else from its name)."""
    if artifact.kind is ArtifactKind.AUDIO_COMPACT and artifact.meta is not None:
        compact = CompactMeta.model_validate(artifact.meta)
        return compact.format, compact.bitrate_kbps
    return path.suffix[1:], None


def _group(artifact: ArtifactRecord) -> ArtifactKind:
    """The kind a file stands for: a compact copy or preview counts as what it is a copy of."""
    return SUBSTITUTE_FOR.get(artifact.kind, artifact.kind)


def _order(artifact: ArtifactRecord) -> tuple[int, int, bool]:
    """Kinds in ``ATTACHED_KINDS`` order, takes in order, a copy right after its original."""
    return ATTACHED_KINDS.index(_group(artifact)), _take(artifact), artifact.kind in SUBSTITUTE_FOR


def _fit_content(lines: list[str | None], embed: discord.Embed) -> str:
    """The message text, at most Discord's 2000 characters; lines past that go into the embed, never dropped."""
    content, overflow = "", list[str]()
    for line in (line for line in lines if line):
        candidate = f"{content}\n{line}" if content else line
        if not overflow and len(candidate) <= DISCORD_MESSAGE_CHARS:
            content = candidate
        else:
            overflow.append(line)
    for line in overflow:
        embed.add_field(name="More", value=line[:MAX_FIELD_CHARS], inline=False)
    return content


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(JobWatcher(bot))
