"""/beat, /loop, /cover and /midi: validate, defer within Discord's 3 seconds, record, enqueue, show the queue."""

from __future__ import annotations

import logging
import random
import secrets
from pathlib import PurePath
from typing import TYPE_CHECKING, TypeVar

import discord
from discord import app_commands
from discord.ext import commands
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from beatforge.contract import (
    JOB_COVER,
    JOB_GENERATE,
    JOB_LOOP,
    JOB_MIDI,
    LOOP_MAX_S,
    LOOP_MIN_S,
    MAX_DURATION_S,
    MAX_SEED,
    MAX_TAKES,
    MIN_DURATION_S,
    PROMPT_MAX_CHARS,
    TITLE_MAX_CHARS,
    BeatParams,
    ErrorCode,
    JobStatus,
    LoopParams,
    MidiParams,
    explain,
)
from beatforge.presets import MOODS, STYLES
from beatforge.queue import QueueError, enqueue_job
from bot.errors import UserFacingError
from bot.messages import queued_text
from storage import jobs
from storage.errors import JobNotFound
from storage.jobs import JobView

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

STYLE_CHOICES = [app_commands.Choice(name=s.label, value=s.key) for s in STYLES.values()]
MOOD_CHOICES = [app_commands.Choice(name=m.label, value=m.key) for m in MOODS.values()]
FORMAT_CHOICES = [app_commands.Choice(name=f, value=f) for f in ("wav", "flac", "ogg", "mp3")]
#: What the worker can decode (libsndfile); anything else is refused before it is downloaded.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")


async def queue_position(bot: Beatforge, queue_job_id: str) -> int | None:
    """1-based place in arq's queue (the running job counts as #1), or None once the worker took it."""
    rank = await bot.redis.zrank(bot.settings.queue_name, queue_job_id)
    return None if rank is None else int(rank) + 1


def _validated(model: type[M], **fields: object) -> M:
    """Build a contract model from command options; bad input becomes a private explanation."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise UserFacingError(f"Can't do that: {explain(exc)}.") from exc


class Generate(commands.Cog):
    def __init__(self, bot: Beatforge) -> None:
        self.bot = bot

    @app_commands.command(name="beat")
    @app_commands.guild_only()
    @app_commands.choices(style=STYLE_CHOICES, mood=MOOD_CHOICES)
    async def beat(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_CHARS],
        style: str | None = None,
        mood: str | None = None,
        duration: app_commands.Range[float, MIN_DURATION_S, MAX_DURATION_S] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        title: app_commands.Range[str, 1, TITLE_MAX_CHARS] | None = None,
        takes: app_commands.Range[int, 1, MAX_TAKES] = 1,
    ) -> None:
        """Turn a sentence into a beat, with cover art.

        Args:
            prompt: What it should sound like, e.g. "dark psychedelic trap, 808s, 140 bpm".
            style: A style preset blended with your words.
            mood: A mood preset (sets tempo, key and register words).
            duration: Length in seconds (1-120, default 15; past 30 s it is made in windows).
            seed: Same seed + prompt + model = the same beat. Leave empty for a surprise.
            title: A title to set on the cover.
            takes: How many versions to make at once (1-4), each with its own seed.
        """
        # Discord enforces ranges and choices in its own client only; a crafted payload reaches us unchecked.
        params = _validated(
            BeatParams,
            prompt=prompt,
            style=style,
            mood=mood,
            title=title,
            takes=takes,
            duration_s=self.bot.settings.default_duration_s if duration is None else duration,
            seed=random.randint(0, MAX_SEED) if seed is None else seed,
        )
        await interaction.response.defer(thinking=True)
        await self.submit(interaction, params, job_name=JOB_GENERATE)

    @app_commands.command(name="loop")
    @app_commands.guild_only()
    @app_commands.choices(style=STYLE_CHOICES, mood=MOOD_CHOICES, format=FORMAT_CHOICES)
    async def loop(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_CHARS],
        bpm: app_commands.Range[int, 40, 300],
        bars: app_commands.Range[int, 1, 16] | None = None,
        min_duration: app_commands.Range[float, LOOP_MIN_S, LOOP_MAX_S] | None = None,
        max_duration: app_commands.Range[float, LOOP_MIN_S, LOOP_MAX_S] | None = None,
        style: str | None = None,
        mood: str | None = None,
        format: str = "wav",
        stretch: bool = False,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
    ) -> None:
        """A seamless loop at your tempo: whole bars, cut on downbeats, ready to drag into a DAW.

        Args:
            prompt: What it should sound like, e.g. "lofi piano with vinyl crackle".
            bpm: Target tempo in beats per minute.
            bars: Exact number of bars (default: the longest power of two that fits: 1, 2, 4, 8, 16).
            min_duration: Shortest acceptable loop in seconds (instead of bars).
            max_duration: Longest acceptable loop in seconds (instead of bars).
            style: A style preset blended with your words.
            mood: A mood preset.
            format: File format: wav, flac, ogg or mp3.
            stretch: Time-stretch the loop to exactly this bpm.
            seed: Same seed + prompt = the same loop.
        """
        loop = _validated(
            LoopParams,
            bars=bars,
            min_duration_s=min_duration,
            max_duration_s=max_duration,
            target_bpm=bpm,
            stretch=stretch,
            format=format,
        )
        params = _validated(
            BeatParams,
            prompt=prompt,
            style=style,
            mood=mood,
            bpm=bpm,
            loop=loop,
            duration_s=loop.generation_seconds(bpm),
            seed=random.randint(0, MAX_SEED) if seed is None else seed,
        )
        await interaction.response.defer(thinking=True)
        await self.submit(interaction, params, job_name=JOB_GENERATE)

    @app_commands.command(name="cover")
    @app_commands.guild_only()
    @app_commands.choices(style=STYLE_CHOICES, mood=MOOD_CHOICES)
    async def cover(
        self,
        interaction: discord.Interaction,
        beat: app_commands.Range[int, 1],
        style: str | None = None,
        mood: str | None = None,
    ) -> None:
        """Draw a new cover for one of your beats, without regenerating the audio.

        Args:
            beat: The beat's number (shown as "Beat #N").
            style: Another style preset for the look (default: the beat's own).
            mood: Another mood preset for the palette (default: the beat's own).
        """
        await self.redraw_cover(interaction, beat, style=style, mood=mood)

    @app_commands.command(name="midi")
    @app_commands.guild_only()
    async def midi(
        self,
        interaction: discord.Interaction,
        beat: app_commands.Range[int, 1] | None = None,
        file: discord.Attachment | None = None,
        stems: bool = False,
    ) -> None:
        """MIDI files (drums, bass, melody, full) for FL Studio or GarageBand, from a beat or an audio file.

        Args:
            beat: One of your beats, by number (shown as "Beat #N").
            file: An audio file to transcribe instead (wav, flac, ogg or mp3).
            stems: Also send the separated drums, bass and other parts as audio.
        """
        if (beat is None) == (file is None):
            raise UserFacingError("Give either `beat` (one of your beats) or `file` (an audio file), one of the two.")
        if beat is not None:
            await self.make_midi(interaction, beat, stems=stems)
            return
        assert file is not None
        upload = self._check_upload(file)
        await interaction.response.defer(thinking=True)
        try:
            data = await file.read()
        except discord.HTTPException as exc:
            raise UserFacingError(f"Couldn't download {file.filename} from Discord ({exc.status}); try again.") from exc
        with self.bot.store.writing("uploads", PurePath(upload).name) as tmp:
            tmp.write_bytes(data)
        params = _validated(
            BeatParams,
            prompt=file.filename[:200],  # shown as the job's source
            duration_s=MAX_DURATION_S,
            seed=0,
            midi=MidiParams(stems=stems, upload=upload),
        )
        await self.submit(interaction, params, job_name=JOB_MIDI, kind="midi")

    def _check_upload(self, file: discord.Attachment) -> str:
        """Refuse what the worker cannot use before downloading it; returns where the upload will be stored."""
        suffix = PurePath(file.filename).suffix.lower()
        if suffix not in AUDIO_SUFFIXES:
            raise UserFacingError(f"{file.filename} doesn't look like audio: send a wav, flac, ogg, mp3 or aiff file.")
        if file.size == 0:
            raise UserFacingError(f"{file.filename} is empty (0 bytes).")
        limit_mb = self.bot.settings.midi_max_upload_mb
        if file.size > limit_mb * 2**20:
            raise UserFacingError(f"{file.filename} is {file.size / 2**20:.1f} MiB; the limit is {limit_mb:g} MiB.")
        name = PurePath(file.filename).stem
        stem = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in name)[:40] or "audio"
        return f"uploads/{secrets.token_hex(6)}-{stem}{suffix}"

    async def _own_beat(self, interaction: discord.Interaction, beat_id: int) -> JobView:
        """The beat, if it exists on this server and the user may work on it (its maker, or Manage Server)."""
        async with self.bot.sessions() as session:
            try:
                original = await jobs.get_job(session, beat_id)
            except JobNotFound as exc:
                raise UserFacingError(f"There is no beat #{beat_id}.") from exc
        if original.kind != "beat" or original.guild_id != interaction.guild_id:
            raise UserFacingError(f"There is no beat #{beat_id} on this server.")
        member = interaction.user
        is_admin = isinstance(member, discord.Member) and member.guild_permissions.manage_guild
        if original.user_id != member.id and not is_admin:
            raise UserFacingError(f"Beat #{beat_id} is <@{original.user_id}>'s; only they or an admin can do that.")
        return original

    async def redraw_cover(
        self, interaction: discord.Interaction, beat_id: int, *, style: str | None = None, mood: str | None = None
    ) -> None:
        original = await self._own_beat(interaction, beat_id)
        p = original.params
        params = _validated(
            BeatParams,
            prompt=p.prompt,
            duration_s=p.duration_s,
            title=p.title,
            style=style or p.style,
            mood=mood or p.mood,
            seed=random.randint(0, MAX_SEED),
        )
        await interaction.response.defer(thinking=True)
        await self.submit(interaction, params, job_name=JOB_COVER, kind="cover", parent_id=original.id)

    async def _finished_beat(self, interaction: discord.Interaction, beat_id: int) -> JobView:
        original = await self._own_beat(interaction, beat_id)
        if original.status is not JobStatus.DONE:
            raise UserFacingError(f"Beat #{beat_id} is not finished yet.")
        return original

    async def make_loop(self, interaction: discord.Interaction, beat_id: int) -> None:
        original = await self._finished_beat(interaction, beat_id)
        p = original.params
        loop = p.loop or LoopParams(target_bpm=p.bpm)
        params = p.model_copy(update={"loop": loop})
        await interaction.response.defer(thinking=True)
        await self.submit(interaction, params, job_name=JOB_LOOP, kind="loop", parent_id=original.id)

    async def make_midi(self, interaction: discord.Interaction, beat_id: int, *, stems: bool = False) -> None:
        original = await self._finished_beat(interaction, beat_id)
        params = original.params.model_copy(update={"midi": MidiParams(stems=stems), "loop": None})
        await interaction.response.defer(thinking=True)
        await self.submit(interaction, params, job_name=JOB_MIDI, kind="midi", parent_id=original.id)

    async def submit(
        self,
        interaction: discord.Interaction,
        params: BeatParams,
        *,
        job_name: str,
        kind: str = "beat",
        parent_id: int | None = None,
    ) -> int:
        bot = self.bot
        async with bot.sessions() as session:
            job = await jobs.create_job(
                session,
                params=params,
                user_id=interaction.user.id,
                user_name=interaction.user.name,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                kind=kind,
                parent_id=parent_id,
            )
        bot.live_interactions[job.id] = interaction
        try:
            await enqueue_job(bot.redis, job_name, job_id=job.id, queue_job_id=job.queue_job_id, params=params)
            position = await queue_position(bot, job.queue_job_id)
        except (QueueError, RedisError) as exc:
            async with bot.sessions() as session:
                await jobs.mark_failed(session, job.id, code=ErrorCode.INTERNAL, message="the job queue is unreachable")
                await jobs.mark_delivered(session, job.id)  # the error below is the delivery
            bot.live_interactions.pop(job.id, None)
            log.error("enqueue failed", extra={"job_id": job.id, "error": str(exc)})
            raise UserFacingError("The job queue is unreachable right now; please try again in a minute.") from exc
        content = queued_text(job, position)
        message = await interaction.edit_original_response(content=content)
        bot.status_shown[job.id] = content
        async with bot.sessions() as session:
            await jobs.set_status_message(session, job.id, message.id)
        log.info("job queued", extra={"job_id": job.id, "kind": kind, "user_id": interaction.user.id})
        return job.id


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(Generate(bot))
