"""/beat, /loop, /cover, /midi and the buttons on results: validate, answer within Discord's 3 seconds,
record, enqueue, show the queue."""

from __future__ import annotations

import logging
import random
import re
import secrets
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, TypeVar

import discord
from discord import app_commands
from discord.ext import commands
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from beatforge.bounds import (
    LOOP_MAX_S,
    LOOP_MIN_S,
    MAX_BPM,
    MAX_DURATION_S,
    MAX_SEED,
    MAX_TAKES,
    MIN_BPM,
    MIN_DURATION_S,
    PROMPT_MAX_CHARS,
    TITLE_MAX_CHARS,
)
from beatforge.contract import (
    ArtifactKind,
    BeatParams,
    CoverParams,
    ErrorCode,
    JobKind,
    JobParams,
    JobStatus,
    LoopJobParams,
    LoopParams,
    MidiParams,
    Relation,
    explain,
)
from beatforge.fleet import read_models
from beatforge.presets import MOODS, STYLES
from beatforge.queue import QueueError, enqueue_job
from bot.access import is_admin, member_is_admin
from bot.cancel import cancel_job
from bot.errors import UserFacingError
from bot.limits import Limits, check_limits, effective_limits
from bot.messages import label, queued_text
from bot.views import EditedSettings, EditForm, ExtendForm, cancel_view
from storage import guilds, jobs
from storage.errors import JobNotFound
from storage.guilds import GuildSettings
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
#: An attachment to download once the interaction is deferred, and where to store it.
Upload = tuple[discord.Attachment, str]


async def queue_position(bot: Beatforge, queue_job_id: str) -> int | None:
    """1-based place in arq's queue (the running job counts as #1), or None once the worker took it."""
    rank = await bot.redis.zrank(bot.settings.queue_name, queue_job_id)
    return None if rank is None else int(rank) + 1


def _validated(schema: type[M], /, **fields: object) -> M:
    """Build a contract model from command options; bad input becomes a private explanation."""
    try:
        return schema.model_validate(fields)
    except ValidationError as exc:
        raise UserFacingError(f"Can't do that: {explain(exc)}.") from exc


def new_seed() -> int:
    return random.randint(0, MAX_SEED)


def _beat_of(job: JobView) -> BeatParams:
    """A beat's own parameters. Callers found the job as a beat (``_own_job``), so this only narrows the type."""
    if not isinstance(job.params, BeatParams):
        raise UserFacingError(f"There is no beat #{job.id} on this server.")
    return job.params


def parse_presets(text: str) -> tuple[str | None, str | None]:
    """ "dark-trap, sad" (keys or labels, any order, any case) → (style, mood), for the 📝 Edit form."""
    style = mood = None
    for word in filter(None, (w.strip().lower() for w in re.split(r"[,/;]", text))):
        styles = {k for k, s in STYLES.items() if word in (k, s.label.lower())}
        moods = {k for k, m in MOODS.items() if word in (k, m.label.lower())}
        if styles:
            style = styles.pop()
        elif moods:
            mood = moods.pop()
        else:
            raise UserFacingError(
                f"{word!r} is neither a style nor a mood. Styles: {', '.join(STYLES)}; moods: {', '.join(MOODS)}."
            )
    return style, mood


class Generate(commands.Cog):
    def __init__(self, bot: Beatforge) -> None:
        self.bot = bot

    # -- commands ---------------------------------------------------------------------------------------

    @app_commands.command(name="beat")
    @app_commands.guild_only()
    @app_commands.choices(style=STYLE_CHOICES, mood=MOOD_CHOICES)
    async def beat(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_CHARS] | None = None,
        style: str | None = None,
        mood: str | None = None,
        duration: app_commands.Range[float, MIN_DURATION_S, MAX_DURATION_S] | None = None,
        bpm: app_commands.Range[int, MIN_BPM, MAX_BPM] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        title: app_commands.Range[str, 1, TITLE_MAX_CHARS] | None = None,
        takes: app_commands.Range[int, 1, MAX_TAKES] = 1,
        melody: discord.Attachment | None = None,
    ) -> None:
        """Turn a sentence into a beat, with cover art.

        Args:
            prompt: What it should sound like, e.g. "dark psychedelic trap, 808s". Optional with a style.
            style: A style preset blended with your words.
            mood: A mood preset (sets tempo, key and register words).
            duration: Length in seconds (1-120, default 15; past 30 s it is made in windows).
            bpm: Target tempo in beats per minute.
            seed: Same seed + prompt + model = the same beat. Leave empty for a surprise.
            title: A title to set on the cover.
            takes: How many versions to make at once (1-4), each with its own seed.
            melody: An audio file whose melody the beat should follow (needs a melody model).
        """
        if prompt is None and style is None:
            raise UserFacingError("Describe the beat in `prompt`, pick a `style`, or both.")
        uploads: list[Upload] = []
        melody_path = None
        if melody is not None:
            melody_path = self._check_upload(melody)
            uploads.append((melody, melody_path))
        # Discord enforces ranges and choices in its own client only; a crafted payload reaches us unchecked.
        params = _validated(
            BeatParams,
            prompt=prompt if prompt is not None else STYLES[style].label if style in STYLES else style,
            style=style,
            mood=mood,
            title=title,
            takes=takes,
            bpm=bpm,
            melody=melody_path,
            duration_s=self.bot.settings.default_duration_s if duration is None else duration,
            seed=new_seed() if seed is None else seed,
        )
        await self.submit(interaction, params, uploads=uploads)

    @app_commands.command(name="loop")
    @app_commands.guild_only()
    @app_commands.choices(style=STYLE_CHOICES, mood=MOOD_CHOICES, format=FORMAT_CHOICES)
    async def loop(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_CHARS],
        bpm: app_commands.Range[int, MIN_BPM, MAX_BPM],
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
            seed=new_seed() if seed is None else seed,
        )
        await self.submit(interaction, params)

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
        # The file's name is what the result is about, shown where a beat's words would be.
        params = _validated(MidiParams, prompt=file.filename[:200], stems=stems, upload=upload)
        await self.submit(interaction, params, uploads=[(file, upload)])

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

    async def _save_upload(self, file: discord.Attachment, path: str) -> None:
        try:
            data = await file.read()
        except discord.HTTPException as exc:
            raise UserFacingError(f"Couldn't download {file.filename} from Discord ({exc.status}); try again.") from exc
        with self.bot.store.writing("uploads", PurePath(path).name) as tmp:
            tmp.write_bytes(data)

    # -- who may do what ----------------------------------------------------------------------------------

    async def guild(self, guild_id: int | None) -> GuildSettings | None:
        """This server's own settings (/admin), or None outside a server."""
        if guild_id is None:
            return None
        async with self.bot.sessions() as session:
            return await guilds.get_guild(session, guild_id)

    async def limits(self, guild_id: int | None) -> Limits:
        return effective_limits(self.bot.settings, await self.guild(guild_id))

    async def _own_job(
        self, interaction: discord.Interaction, job_id: int, *, beat: bool = True, everyone: bool = False
    ) -> JobView:
        """The job, if it exists on this server and the user may act on it (its maker, an admin, or anyone
        where ``everyone``)."""
        what = "beat" if beat else "job"
        async with self.bot.sessions() as session:
            try:
                job = await jobs.get_job(session, job_id)
            except JobNotFound as exc:
                raise UserFacingError(f"There is no {what} #{job_id}.") from exc
        if (beat and job.kind is not JobKind.BEAT) or job.guild_id != interaction.guild_id:
            raise UserFacingError(f"There is no {what} #{job_id} on this server.")
        if job.user_id != interaction.user.id and not everyone and not is_admin(interaction):
            raise UserFacingError(f"{label(job)} is <@{job.user_id}>'s; only they or an admin can do that.")
        return job

    async def _finished_beat(self, interaction: discord.Interaction, beat_id: int, take: int = 1) -> JobView:
        original = await self._own_job(interaction, beat_id)
        if original.status is not JobStatus.DONE:
            raise UserFacingError(f"Beat #{beat_id} is not finished yet.")
        takes = sum(1 for a in original.artifacts if a.kind is ArtifactKind.AUDIO)
        if take > takes:
            raise UserFacingError(f"Beat #{beat_id} has {takes} take(s), not a take {take}.")
        return original

    # -- buttons and forms ----------------------------------------------------------------------------------

    def reroll_params(self, original: JobView) -> BeatParams:
        """Same settings (and model), new seed."""
        return _beat_of(original).model_copy(update={"seed": new_seed(), "model": original.model_name})

    async def reroll(self, interaction: discord.Interaction, beat_id: int) -> None:
        everyone = (await self.limits(interaction.guild_id)).everyone_can_reroll
        original = await self._own_job(interaction, beat_id, everyone=everyone)
        params = self.reroll_params(original)
        await self.submit(interaction, params, parent_id=original.id, relation=Relation.REROLL)

    async def redraw_cover(
        self, interaction: discord.Interaction, beat_id: int, *, style: str | None = None, mood: str | None = None
    ) -> None:
        original = await self._own_job(interaction, beat_id)
        p = _beat_of(original)
        params = _validated(
            CoverParams, prompt=p.prompt, title=p.title, style=style or p.style, mood=mood or p.mood, seed=new_seed()
        )
        await self.submit(interaction, params, parent_id=original.id, relation=Relation.COVER)

    async def make_loop(self, interaction: discord.Interaction, beat_id: int, take: int = 1) -> None:
        original = await self._finished_beat(interaction, beat_id, take)
        p = _beat_of(original)
        params = _validated(
            LoopJobParams,
            prompt=p.prompt,
            style=p.style,
            mood=p.mood,
            title=p.title,
            seed=p.seed,
            take=take,
            loop=p.loop or LoopParams(target_bpm=p.bpm),  # a /loop beat's own settings, else its tempo
        )
        await self.submit(interaction, params, parent_id=original.id, relation=Relation.LOOP)

    async def make_midi(
        self, interaction: discord.Interaction, beat_id: int, take: int = 1, *, stems: bool = False
    ) -> None:
        original = await self._finished_beat(interaction, beat_id, take)
        p = _beat_of(original)
        params = _validated(
            MidiParams, prompt=p.prompt, style=p.style, mood=p.mood, title=p.title, seed=p.seed, take=take, stems=stems
        )
        await self.submit(interaction, params, parent_id=original.id, relation=Relation.MIDI)

    async def toggle_keep(self, interaction: discord.Interaction, job_id: int) -> None:
        job = await self._own_job(interaction, job_id, beat=False)
        async with self.bot.sessions() as session:
            await jobs.set_kept(session, job.id, not job.kept)
        text = (
            f"⭐ {label(job)} is one of your keepers now: `/history kept:True` lists them."
            if not job.kept
            else f"{label(job)} is no longer one of your keepers."
        )
        await interaction.response.send_message(text, ephemeral=True)

    async def cancel(self, interaction: discord.Interaction, job_id: int) -> None:
        job = await self._own_job(interaction, job_id, beat=False)
        if not await cancel_job(self.bot, job, by=interaction.user.name):
            raise UserFacingError(f"{label(job)} has already finished; there is nothing to cancel.")
        content = f"❌ {label(job)} — cancelled by {interaction.user.mention}."
        self.bot.status_shown[job.id] = content
        await interaction.response.edit_message(content=content, view=None)

    async def extend(self, interaction: discord.Interaction, beat_id: int, take: int = 1) -> None:
        original = await self._finished_beat(interaction, beat_id, take)
        limits = await self.limits(interaction.guild_id)
        await interaction.response.send_modal(ExtendForm(self, original, take, max_seconds=limits.max_duration_s))

    async def submit_extend(
        self, interaction: discord.Interaction, original: JobView, take: int, seconds: float
    ) -> None:
        audio = [a for a in original.artifacts if a.kind is ArtifactKind.AUDIO][take - 1]
        update = {
            "continue_from": audio.path,
            "duration_s": seconds,
            "seed": new_seed(),
            "takes": 1,
            "loop": None,
            "melody": None,
            "model": original.model_name,
        }
        params = _beat_of(original).model_copy(update=update)
        await self.submit(interaction, params, parent_id=original.id, relation=Relation.EXTEND)

    async def edit(self, interaction: discord.Interaction, beat_id: int) -> None:
        original = await self._own_job(interaction, beat_id)
        await interaction.response.send_modal(EditForm(self, original, _beat_of(original)))

    async def submit_edit(self, interaction: discord.Interaction, original: JobView, edited: EditedSettings) -> None:
        style, mood = parse_presets(edited.presets)
        p = _beat_of(original)
        params = _validated(
            BeatParams,
            prompt=edited.prompt,
            style=style,
            mood=mood,
            duration_s=edited.duration_s,
            bpm=edited.bpm,
            seed=new_seed() if edited.seed is None else edited.seed,
            title=p.title,
            takes=p.takes,
            sampling=p.sampling,
            model=original.model_name,
        )
        await self.submit(interaction, params, parent_id=original.id, relation=Relation.EDIT)

    async def reroll_by_reaction(self, payload: discord.RawReactionActionEvent, original: JobView) -> None:
        """🔁 added to a result: a re-roll posted in the channel (a reaction has no interaction to answer)."""
        bot = self.bot
        member = payload.member
        if member is None or payload.guild_id is None:
            return
        guild = await self.guild(payload.guild_id)
        limits = effective_limits(bot.settings, guild)
        channel = bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        if (
            original.user_id != member.id
            and not limits.everyone_can_reroll
            and not member_is_admin(member, bot.settings.owner_ids)
        ):
            log.info("re-roll reaction refused", extra={"job_id": original.id, "user_id": member.id})
            try:  # say no the quiet way: take the reaction back
                await channel.get_partial_message(payload.message_id).remove_reaction(payload.emoji, member)
            except discord.HTTPException as exc:  # no Manage Messages here: the reaction stays, nothing else happens
                log.info("could not remove a refused reaction", extra={"status": exc.status})
            return
        params = self.reroll_params(original)
        reference = discord.MessageReference(
            message_id=payload.message_id, channel_id=payload.channel_id, fail_if_not_exists=False
        )
        try:
            await check_limits(bot, user_id=member.id, guild=guild, params=params)
            job, position = await self._enqueue(
                params,
                user=member,
                guild_id=payload.guild_id,
                channel_id=payload.channel_id,
                parent_id=original.id,
                relation=Relation.REROLL,
            )
        except UserFacingError as exc:
            await channel.send(f"⚠️ {member.mention}: {exc}", reference=reference, delete_after=60)
            return
        content = queued_text(job, position)
        message = await channel.send(content, reference=reference, view=cancel_view(job.id))
        bot.status_shown[job.id] = content
        async with bot.sessions() as session:
            await jobs.set_status_message(session, job.id, message.id)

    # -- queueing -------------------------------------------------------------------------------------------

    async def _check_melody_model(self, params: BeatParams) -> None:
        """Refuse a melody for a model that cannot follow one before the upload is fetched (when workers
        have said what their models can do)."""
        if params.melody is None:
            return
        known = await read_models(self.bot.redis)
        if known is None:
            return
        models, default = known
        name = params.model or default
        info = next((m for m in models if m.name == name), None)
        if info is not None and not info.melody:
            melody_models = ", ".join(m.name for m in models if m.melody) or "none is registered"
            raise UserFacingError(
                f"The model `{name}` can't follow a melody. Melody models: {melody_models} "
                "(an admin can switch with `/admin model use`)."
            )

    async def submit(
        self,
        interaction: discord.Interaction,
        params: JobParams,
        *,
        parent_id: int | None = None,
        relation: Relation | None = None,
        uploads: Sequence[Upload] = (),
    ) -> int:
        """Check, defer (everything before this is quick, so refusals stay private), fetch uploads, queue."""
        bot = self.bot
        guild = await self.guild(interaction.guild_id)
        await check_limits(bot, user_id=interaction.user.id, guild=guild, params=params)
        if isinstance(params, BeatParams):
            if params.model is None and guild is not None and guild.model is not None:
                params = params.model_copy(update={"model": guild.model})  # the server's choice (/admin model use)
            await self._check_melody_model(params)
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True)
        for attachment, path in uploads:
            await self._save_upload(attachment, path)
        job, position = await self._enqueue(
            params,
            user=interaction.user,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            parent_id=parent_id,
            relation=relation,
            interaction=interaction,
        )
        content = queued_text(job, position)
        message = await interaction.edit_original_response(content=content, view=cancel_view(job.id))
        bot.status_shown[job.id] = content
        async with bot.sessions() as session:
            await jobs.set_status_message(session, job.id, message.id)
        return job.id

    async def _enqueue(
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
        """Record the job and put it on the queue; its place in line (None once a worker has it)."""
        bot = self.bot
        async with bot.sessions() as session:
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
        if interaction is not None:
            bot.live_interactions[job.id] = interaction
        try:
            await enqueue_job(bot.redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params, user_id=user.id)
            position = await queue_position(bot, job.queue_job_id)
        except (QueueError, RedisError) as exc:
            async with bot.sessions() as session:
                await jobs.mark_failed(session, job.id, code=ErrorCode.INTERNAL, message="the job queue is unreachable")
                await jobs.mark_delivered(session, job.id)  # the error below is the delivery
            bot.live_interactions.pop(job.id, None)
            log.error("enqueue failed", extra={"job_id": job.id, "error": str(exc)})
            raise UserFacingError("The job queue is unreachable right now; please try again in a minute.") from exc
        log.info("job queued", extra={"job_id": job.id, "kind": job.kind, "relation": relation, "user_id": user.id})
        return job, position


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(Generate(bot))
