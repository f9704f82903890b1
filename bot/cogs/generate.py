"""/beat, /loop, /pack, /cover, /midi and /remix: turn the options into a job's parameters for the job service.

The pipeline (limits, answering within Discord's 3 seconds, recording, queueing, the status line) is the
service's (``bot/jobs.py``); /cover, /midi and /remix on a beat run the same actions as their buttons
(``bot/actions.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from beatforge.bounds import (
    LOOP_MAX_S,
    LOOP_MIN_S,
    MAX_BEST_OF,
    MAX_BPM,
    MAX_DURATION_S,
    MAX_PACK_LOOPS,
    MAX_SEED,
    MAX_TAKES,
    MIN_BEST_OF,
    MIN_BPM,
    MIN_DURATION_S,
    PROMPT_MAX_CHARS,
    TITLE_MAX_CHARS,
)
from beatforge.config import Settings
from beatforge.contract import BeatParams, LoopParams, MidiParams, PackParams
from beatforge.engines import ENGINES
from beatforge.presets import METRE_WORDS, MOODS, STYLES
from bot.actions import JobActions
from bot.errors import UserFacingError
from bot.forms import DEFAULT_REMIX_STRENGTH
from bot.jobs import JobService, Upload
from bot.options import BeatNumber
from bot.params import new_seed, validated

if TYPE_CHECKING:
    from bot.app import Beatforge

STYLE_CHOICES = [app_commands.Choice(name=s.label, value=s.key) for s in STYLES.values()]
MOOD_CHOICES = [app_commands.Choice(name=m.label, value=m.key) for m in MOODS.values()]
FORMAT_CHOICES = [app_commands.Choice(name=f, value=f) for f in ("wav", "flac", "ogg", "mp3")]
TIME_SIGNATURE_CHOICES = [app_commands.Choice(name=name, value=beats) for beats, name in METRE_WORDS.items()]
#: Discord shows at most 100 characters of an option's help; the limits come from the engines' table.
DURATION_HELP = "Seconds, default 15. The most depends on the model: " + ", ".join(
    f"{caps.label} {caps.max_duration_s:g} s" for caps in ENGINES.values()
)


class Generate(commands.Cog):
    def __init__(self, *, jobs: JobService, actions: JobActions, settings: Settings) -> None:
        self.jobs, self.actions, self.settings = jobs, actions, settings

    @app_commands.command(name="beat")
    @app_commands.guild_only()
    @app_commands.choices(style=STYLE_CHOICES, mood=MOOD_CHOICES)
    @app_commands.choices(time_signature=TIME_SIGNATURE_CHOICES)
    @app_commands.describe(duration=DURATION_HELP)
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
        enhance: bool = False,
        key: app_commands.Range[str, 1, 12] | None = None,
        time_signature: int | None = None,
        best_of: app_commands.Range[int, MIN_BEST_OF, MAX_BEST_OF] | None = None,
    ) -> None:
        """Turn a sentence into a beat, with cover art.

        Args:
            prompt: What it should sound like, e.g. "dark psychedelic trap, 808s". Optional with a style.
            style: A style preset blended with your words.
            mood: A mood preset (sets tempo, key and register words).
            bpm: Target tempo in beats per minute.
            seed: Same seed + prompt + model = the same beat. Leave empty for a surprise.
            title: A title to set on the cover.
            takes: How many versions to post (1-4), each with its own seed; with best_of, the best ones.
            melody: An audio file whose melody the beat should follow (needs a melody model).
            enhance: ✨ Turn a short idea into a detailed prompt (instruments, tempo, key, mood) first.
            key: A key, e.g. "A minor" or "F#m": set exactly on ACE-Step models, asked for in words on MusicGen.
            time_signature: Beats per bar: set exactly on ACE-Step models, asked for in words on MusicGen.
            best_of: Make this many takes (2-8) and post the one(s) that best match your words (needs CLAP).
        """
        if prompt is None and style is None:
            raise UserFacingError("Describe the beat in `prompt`, pick a `style`, or both.")
        uploads: list[Upload] = []
        melody_path = None
        if melody is not None:
            melody_path = self.jobs.check_upload(melody)
            uploads.append((melody, melody_path))
        # Discord enforces ranges and choices in its own client only; a crafted payload reaches us unchecked.
        params = validated(
            BeatParams,
            prompt=prompt if prompt is not None else STYLES[style].label if style in STYLES else style,
            style=style,
            mood=mood,
            title=title,
            takes=takes,
            best_of=best_of,
            bpm=bpm,
            melody=melody_path,
            enhance=enhance,
            key=key,
            time_signature=time_signature,
            duration_s=self.settings.default_duration_s if duration is None else duration,
            seed=new_seed() if seed is None else seed,
        )
        await self.jobs.submit(interaction, params, await self.jobs.guild(interaction.guild_id), uploads=uploads)

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
        loop = validated(
            LoopParams,
            bars=bars,
            min_duration_s=min_duration,
            max_duration_s=max_duration,
            target_bpm=bpm,
            stretch=stretch,
            format=format,
        )
        params = validated(
            BeatParams,
            prompt=prompt,
            style=style,
            mood=mood,
            bpm=bpm,
            loop=loop,
            duration_s=loop.generation_seconds(bpm),
            seed=new_seed() if seed is None else seed,
        )
        await self.jobs.submit(interaction, params, await self.jobs.guild(interaction.guild_id))

    @app_commands.command(name="pack")
    @app_commands.guild_only()
    @app_commands.choices(format=FORMAT_CHOICES)
    async def pack(
        self,
        interaction: discord.Interaction,
        use_case: app_commands.Range[str, 1, PROMPT_MAX_CHARS],
        count: app_commands.Range[int, 1, MAX_PACK_LOOPS],
        bpm: app_commands.Range[int, MIN_BPM, MAX_BPM],
        key: app_commands.Range[str, 1, 12] | None = None,
        bars: app_commands.Range[int, 1, 16] = 4,
        format: str = "wav",
        seed: app_commands.Range[int, 0, MAX_SEED - MAX_PACK_LOOPS] | None = None,
    ) -> None:
        """A zip of loops for a use case, each from its own prompt (written by the LLM when one is set up).

        Args:
            use_case: What the loops are for, e.g. "background music for RPG levels".
            count: How many loops (this server's admins set the most a pack may hold).
            bpm: The tempo of every loop.
            key: A key every loop is asked for, e.g. "A minor" or "F#m".
            bars: Bars per loop (default 4).
            format: File format: wav, flac, ogg or mp3 (mp3 keeps big packs under the upload limit).
            seed: Loop N is made with seed + N - 1: the same seed gives the same pack.
        """
        loop = validated(LoopParams, bars=bars, target_bpm=bpm, format=format)
        params = validated(
            PackParams,
            prompt=use_case,
            count=count,
            bpm=bpm,
            key=key,
            loop=loop,
            seed=new_seed(MAX_SEED - MAX_PACK_LOOPS) if seed is None else seed,
        )
        await self.jobs.submit(interaction, params, await self.jobs.guild(interaction.guild_id))

    @app_commands.command(name="cover")
    @app_commands.guild_only()
    @app_commands.choices(style=STYLE_CHOICES, mood=MOOD_CHOICES)
    async def cover(
        self,
        interaction: discord.Interaction,
        beat: BeatNumber,
        style: str | None = None,
        mood: str | None = None,
    ) -> None:
        """Draw a new cover for one of your beats, without regenerating the audio.

        Args:
            beat: The beat's number (shown as "Beat #N").
            style: Another style preset for the look (default: the beat's own).
            mood: Another mood preset for the palette (default: the beat's own).
        """
        await self.actions.redraw_cover(interaction, beat, style=style, mood=mood)

    @app_commands.command(name="midi")
    @app_commands.guild_only()
    async def midi(
        self,
        interaction: discord.Interaction,
        beat: BeatNumber | None = None,
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
            await self.actions.make_midi(interaction, beat, stems=stems)
            return
        assert file is not None
        upload = self.jobs.check_upload(file)
        # The file's name is what the result is about, shown where a beat's words would be.
        params = validated(MidiParams, prompt=file.filename[:200], stems=stems, upload=upload)
        uploads: list[Upload] = [(file, upload)]
        await self.jobs.submit(interaction, params, await self.jobs.guild(interaction.guild_id), uploads=uploads)

    @app_commands.command(name="remix")
    @app_commands.guild_only()
    async def remix(
        self,
        interaction: discord.Interaction,
        beat: BeatNumber,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_CHARS],
        strength: app_commands.Range[float, 0.0, 1.0] = DEFAULT_REMIX_STRENGTH,
        take: app_commands.Range[int, 1, MAX_TAKES] = 1,
    ) -> None:
        """Re-imagine one of your beats in a new style, keeping its length, tempo and key (ACE-Step models).

        Args:
            beat: The beat's number (shown as "Beat #N").
            prompt: What it should become, e.g. "orchestral film score with strings".
            strength: How far from the beat to go: 0 keeps it as it is, 1 follows only your words (default 0.5).
            take: Which take of the beat (default 1).
        """
        # Discord enforces the ranges in its own client only; a crafted payload reaches us unchecked.
        if not 0.0 <= strength <= 1.0:
            raise UserFacingError(f"strength must be between 0 and 1, not {strength:g}.")
        if not 1 <= take <= MAX_TAKES:
            raise UserFacingError(f"take must be between 1 and {MAX_TAKES}, not {take}.")
        await self.actions.remix(interaction, beat, take, prompt=prompt, strength=strength)


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(Generate(jobs=bot.jobs, actions=bot.actions, settings=bot.settings))
