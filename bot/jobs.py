"""The job service: everything the bot does to jobs, whoever asked (a command, a button, a form, a reaction).

It finds jobs and checks who may act on them (their maker or an admin: one rule), refuses what a limit
forbids, records and queues new jobs and shows their status line, and cancels them. It is built from what
it uses (the database, the queue, the settings, the artifact store and the status board), never from the
bot object, so it can be driven and tested on its own.

Cancelling (❌ under a status, ``/admin cancel``) goes through the row, the queue and the worker, in that order.
The row is marked cancelled first, so whatever happens next nothing delivers a result for it: a worker that
finishes anyway finds the row failed and drops its files (``storage.jobs.mark_done``). Then the job leaves
the queue if it is still waiting, and arq's abort set tells a worker running it to cancel its task, which
sets the generation thread's stop flag; the thread stops at its next decoding step and frees the GPU.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import PurePath

import discord
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import (
    PROGRESS_KEY,
    ArtifactKind,
    BeatParams,
    JobKind,
    JobParams,
    JobStatus,
    PackParams,
    Relation,
)
from beatforge.engines import capabilities
from beatforge.engines import refusal as engine_refusal
from beatforge.fleet import ModelInfo, read_models
from beatforge.log import log_context
from beatforge.queue import QueueError, enqueue_job, queue_for
from bot.access import Actor
from bot.buttons import cancel_view
from bot.errors import NotYours, UserFacingError
from bot.limits import HOUR, Limits, effective_limits, queue_full_text, refusal
from bot.messages import label, queued_text
from bot.model_choice import model_of, with_server_model
from bot.status import StatusBoard
from storage import guilds, jobs
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.backends import ArtifactBackend, ArtifactsNotStored, open_backend
from storage.errors import JobNotFound
from storage.guilds import GuildSettings
from storage.jobs import JobView

log = logging.getLogger(__name__)

#: What the worker can decode (libsndfile); anything else is refused before it is downloaded.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
#: Why best of N is refused: the bot reads the same CLAP setting as the workers that would rank the takes.
BEST_OF_NEEDS_CLAP = (
    "`best_of` needs a CLAP model to score the takes against your words, and none is set up here (an admin sets "
    "BEATFORGE_CLAP_MODEL). Use `takes` to get several versions without ranking them."
)
#: An attachment to download once the interaction is deferred, and where to store it.
Upload = tuple[discord.Attachment, str]


def model_refusal(params: BeatParams, info: ModelInfo, models: Sequence[ModelInfo]) -> str | None:
    """Why ``info``'s model cannot make this beat, saying what to do instead; None when it can.

    ``models``: every model the workers reported (a refused melody names those that can follow one).
    """
    if params.melody is not None and not info.melody:
        melody_models = ", ".join(m.name for m in models if m.melody) or "none is registered"
        return (
            f"The model `{info.name}` can't follow a melody. Melody models: {melody_models} "
            "(an admin can switch with `/admin model use`)."
        )
    reason = engine_refusal(
        info.engine, model=info.name, duration_s=params.duration_s, remix=params.remix_from is not None
    )
    longest = capabilities(info.engine).max_duration_s
    if reason is not None and params.duration_s > longest:
        reason += (
            f" Ask for {longest:g} s or less, or an admin can switch to a model that makes longer beats "
            "(`/admin model list`, `/admin model use`)."
        )
    return reason


class JobService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        redis: ArqRedis,
        settings: Settings,
        store: ArtifactStore,
        status: StatusBoard,
        artifacts: ArtifactBackend | None = None,
    ) -> None:
        self.sessions, self.redis, self.settings = sessions, redis, settings
        self.store, self.status = store, status
        #: Where uploads go before their job is queued (s3: the bucket, since the worker may be on another machine).
        self.artifacts = artifacts if artifacts is not None else open_backend(settings, store)

    # -- who may do what -------------------------------------------------------------------------------------

    def actor(self, interaction: discord.Interaction) -> Actor:
        return Actor.of(interaction, self.settings.owner_ids)

    def member_actor(self, member: discord.Member) -> Actor:
        return Actor.of_member(member, self.settings.owner_ids)

    async def guild(self, guild_id: int | None) -> GuildSettings | None:
        """This server's own settings (/admin), or None outside a server. Read once per action: pass it on."""
        if guild_id is None:
            return None
        async with self.sessions() as session:
            return await guilds.get_guild(session, guild_id)

    def limits(self, guild: GuildSettings | None) -> Limits:
        return effective_limits(self.settings, guild)

    async def get(self, job_id: int, *, what: str = "job") -> JobView:
        async with self.sessions() as session:
            try:
                return await jobs.get_job(session, job_id)
            except JobNotFound as exc:
                raise UserFacingError(f"There is no {what} #{job_id}.") from exc

    async def find_by_message(self, message_id: int) -> JobView | None:
        async with self.sessions() as session:
            return await jobs.find_by_message(session, message_id)

    def check_owner(self, job: JobView, actor: Actor, *, everyone: bool = False, doing: str = "do that") -> None:
        """The one rule for acting on a job: its maker, an admin of the server, or anyone where ``everyone``.

        Raises:
            NotYours: the refusal, naming whose it is.
        """
        if job.user_id != actor.user.id and not everyone and not actor.admin:
            raise NotYours(f"{label(job)} is <@{job.user_id}>'s; only they or an admin can {doing}.")

    async def own_job(
        self, actor: Actor, job_id: int, *, guild_id: int | None, beat: bool = True, everyone: bool = False
    ) -> JobView:
        """The job, if it exists on this server (as a beat, where ``beat``) and ``actor`` may act on it."""
        what = "beat" if beat else "job"
        job = await self.get(job_id, what=what)
        if (beat and job.kind is not JobKind.BEAT) or job.guild_id != guild_id:
            raise UserFacingError(f"There is no {what} #{job_id} on this server.")
        self.check_owner(job, actor, everyone=everyone)
        return job

    async def finished_beat(self, actor: Actor, beat_id: int, take: int, *, guild_id: int | None) -> JobView:
        """A beat of ``actor``'s that is done and has take ``take``."""
        original = await self.own_job(actor, beat_id, guild_id=guild_id)
        if original.status is not JobStatus.DONE:
            raise UserFacingError(f"Beat #{beat_id} is not finished yet.")
        takes = sum(1 for a in original.artifacts if a.kind is ArtifactKind.AUDIO)
        if take > takes:
            raise UserFacingError(f"Beat #{beat_id} has {takes} take(s), not a take {take}.")
        return original

    # -- before queueing ---------------------------------------------------------------------------------------

    async def check_limits(self, *, user_id: int, guild: GuildSettings | None, params: JobParams) -> None:
        """Refuse a new job before anything is recorded or queued, when it would break a limit.

        Best of N needs a CLAP model to rank the takes (``BEATFORGE_CLAP_MODEL``, the workers' setting too).
        Per user (owners exempt): the beat's length against the server's maximum, jobs queued in the last hour,
        jobs queued or running at once; the server's own choices (``/admin limits``) override the bot's
        settings. For everyone: the whole queue's cap, so a flood cannot grow the wait without bound.

        Raises:
            UserFacingError: the refusal, written for the user, saying when they can try again.
        """
        settings, now = self.settings, datetime.now(UTC)
        if isinstance(params, BeatParams) and params.best_of is not None and settings.clap_model is None:
            raise UserFacingError(BEST_OF_NEEDS_CLAP)
        async with self.sessions() as session:
            activity = await jobs.user_activity(session, user_id=user_id, since=now - HOUR)
            waiting = await jobs.count_jobs(session, status=JobStatus.QUEUED)
        limits = self.limits(guild)
        reason = refusal(settings=settings, limits=limits, activity=activity, params=params, user_id=user_id, now=now)
        if reason is None and waiting >= settings.queue_cap:
            reason = queue_full_text(waiting, settings.queue_cap)
        if reason is not None:
            log.info(
                "job refused by a limit", extra={"user_id": user_id, "guild_id": guild.guild_id if guild else None}
            )
            raise UserFacingError(reason)

    async def check_model(self, params: BeatParams) -> None:
        """Refuse, before anything is fetched or queued, a beat its model cannot make: a melody on a model that
        cannot follow one, a length past its engine's longest, a remix on an engine that cannot remix.

        The model is judged by what the workers reported; until one has (or while redis cannot say), or for a
        model they did not list, nothing is refused here: the worker checks the job again before it runs.

        Raises:
            UserFacingError: why not, naming what can.
        """
        try:
            reported = await read_models(self.redis)
        except RedisError as exc:
            log.warning("could not read the models to check a beat against", extra={"error": str(exc)})
            return
        if reported is None:
            return
        name = model_of(params, reported, self.settings)
        info = next((m for m in reported[0] if m.name == name), None)
        if info is None:
            return
        reason = model_refusal(params, info, reported[0])
        if reason is not None:
            log.info("beat refused by its model", extra={"model": name, "engine": info.engine})
            raise UserFacingError(reason)

    def check_upload(self, file: discord.Attachment) -> str:
        """Refuse what the worker cannot use before downloading it; returns where the upload will be stored."""
        suffix = PurePath(file.filename).suffix.lower()
        if suffix not in AUDIO_SUFFIXES:
            raise UserFacingError(f"{file.filename} doesn't look like audio: send a wav, flac, ogg, mp3 or aiff file.")
        if file.size == 0:
            raise UserFacingError(f"{file.filename} is empty (0 bytes).")
        limit_mb = self.settings.midi_max_upload_mb
        if file.size > limit_mb * 2**20:
            raise UserFacingError(f"{file.filename} is {file.size / 2**20:.1f} MiB; the limit is {limit_mb:g} MiB.")
        name = PurePath(file.filename).stem
        stem = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in name)[:40] or "audio"
        return f"uploads/{secrets.token_hex(6)}-{stem}{suffix}"

    async def _save_upload(self, file: discord.Attachment, path: str) -> None:
        try:
            data = await file.read()
        except discord.HTTPException as exc:
            raise UserFacingError(f"Couldn't download {file.filename} from Discord ({exc.status}); try again.") from exc
        with self.store.writing("uploads", PurePath(path).name) as tmp:
            tmp.write_bytes(data)
        # The worker reads it from the bucket with s3 (a no-op with local storage): stored before the job is queued,
        # or no job at all, so a queued job never names a file its worker cannot get.
        upload = ArtifactRecord(
            kind=ArtifactKind.AUDIO, path=path, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        try:
            await self.artifacts.publish([upload])
        except ArtifactsNotStored as exc:
            log.warning("could not store an upload", extra={"path": path, "error": str(exc)})
            self.store.resolve(path).unlink(missing_ok=True)  # no job will name it; s3 gc never sees this folder
            raise UserFacingError(
                f"Couldn't store {file.filename} for the generator right now; nothing was queued. Try again shortly."
            ) from exc

    # -- queueing ------------------------------------------------------------------------------------------------

    async def submit(
        self,
        interaction: discord.Interaction,
        params: JobParams,
        guild: GuildSettings | None,
        *,
        parent_id: int | None = None,
        relation: Relation | None = None,
        uploads: Sequence[Upload] = (),
    ) -> int:
        """Check, defer (everything before this is quick, so refusals stay private), fetch uploads, queue, and
        show the status line as the interaction's answer.

        ``guild``: the server's settings, read by the caller (``guild``) once for the whole action.
        """
        # Every line logged on the way (refusals included) says whose job it is, and once it exists, which.
        with log_context(user_id=interaction.user.id, guild_id=interaction.guild_id):
            await self.check_limits(user_id=interaction.user.id, guild=guild, params=params)
            if isinstance(params, BeatParams):
                params = with_server_model(params, guild)
                await self.check_model(params)
            elif isinstance(params, PackParams):
                params = with_server_model(params, guild)
            if not interaction.response.is_done():
                await interaction.response.defer(thinking=True)
            for attachment, path in uploads:
                await self._save_upload(attachment, path)
            job, position = await self.enqueue(
                params,
                user=interaction.user,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                parent_id=parent_id,
                relation=relation,
                interaction=interaction,
            )
            with log_context(job_id=job.id):
                content = queued_text(job, position)
                try:
                    message = await interaction.edit_original_response(content=content, view=cancel_view(job.id))
                except discord.HTTPException as exc:
                    # The job is queued and will be delivered to the channel; it just has no status line.
                    log.warning("could not show the status line", extra={"status": exc.status, "error": repr(exc)})
                    self.status.no_status_line(job.id)
                    return job.id
                await self.status_posted(job.id, message.id, content)
            return job.id

    async def enqueue(
        self,
        params: JobParams,
        *,
        user: discord.abc.User,
        guild_id: int | None,
        channel_id: int | None,
        parent_id: int | None,
        relation: Relation | None,
        interaction: discord.Interaction | None = None,
    ) -> tuple[JobView, int | None]:
        """Record the job and put it on the queue; its place in line (None once a worker has it).

        ``interaction``: the one whose answer will be the status line, kept for edits while its token lives.
        """
        async with self.sessions() as session:
            job = await jobs.create_job(
                session,
                params=params,
                user_id=user.id,
                user_name=user.name,
                guild_id=guild_id,
                channel_id=channel_id,
                parent_id=parent_id,
                relation=relation,
            )
        with log_context(job_id=job.id, user_id=user.id, guild_id=guild_id):
            if interaction is not None:
                self.status.track(job.id, interaction)
            try:
                queue = queue_for(self.settings, params.kind)
                await enqueue_job(
                    self.redis,
                    job_id=job.id,
                    queue_job_id=job.queue_job_id,
                    params=params,
                    user_id=user.id,
                    queue_name=queue,
                )
                position = await self._position(queue, job.queue_job_id)
            except (QueueError, RedisError) as exc:
                # The row is the job: the reconciler puts it on the queue once redis is back (storage/reconcile.py),
                # so a redis restart costs the user a short wait, not a refusal.
                log.warning("job recorded; queue unreachable, the reconciler will queue it", extra={"error": str(exc)})
                return job, None
            log.info("job queued", extra={"kind": job.kind, "relation": relation})
        return job, position

    async def _position(self, queue: str, queue_job_id: str) -> int | None:
        """1-based place in its arq queue (the running job counts as #1), or None once the worker took it."""
        rank = await self.redis.zrank(queue, queue_job_id)
        return None if rank is None else int(rank) + 1

    async def status_posted(self, job_id: int, message_id: int, content: str) -> None:
        """The job's status line is ``message_id``, showing ``content``: the watcher edits it from now on."""
        self.status.posted(job_id, content)
        async with self.sessions() as session:
            await jobs.set_status_message(session, job_id, message_id)

    # -- after queueing -----------------------------------------------------------------------------------------

    async def set_kept(self, job: JobView, kept: bool) -> None:
        async with self.sessions() as session:
            await jobs.set_kept(session, job.id, kept)

    async def cancel(self, job: JobView, *, by: str) -> bool:
        """Cancel ``job`` (see the module's docstring for the order); False when it had already finished."""
        async with self.sessions() as session:
            if not await jobs.cancel(session, job.id, by=by):
                return False
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(queue_for(self.settings, job.kind), job.queue_job_id)
                pipe.zadd(abort_jobs_ss, {job.queue_job_id: timestamp_ms()})
                pipe.delete(PROGRESS_KEY.format(job_id=job.id))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # The row says cancelled, so no result will be delivered; a worker that runs it wastes the time.
            log.error("could not abort the queued job", extra={"job_id": job.id, "error": repr(exc)})
        log.info("job cancelled", extra={"job_id": job.id, "by": by})
        return True
