"""Buttons and forms on results and status messages.

Each button's custom_id names its action, its job and, for per-take buttons, the take
(``bf:loop:12``, ``bf:extend:12:3``), so buttons keep working after a restart and after any time:
the job is looked up in the database when the button is pressed, and nothing is held in the bot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from beatforge.bounds import MAX_BPM, MAX_DURATION_S, MAX_SEED, MAX_TAKES, MIN_BPM, MIN_DURATION_S, PROMPT_MAX_CHARS
from beatforge.contract import ArtifactKind, BeatParams, JobKind
from bot.errors import UserFacingError, reply_privately

if TYPE_CHECKING:
    from bot.app import Beatforge
    from bot.cogs.generate import Generate
    from storage.jobs import JobView


@dataclass(frozen=True, slots=True)
class Action:
    label: str
    emoji: str
    #: The ``Generate`` method it calls, with (interaction, job_id) or, per take, (interaction, job_id, take).
    method: str
    per_take: bool = False


ACTIONS: dict[str, Action] = {
    "reroll": Action("Re-roll", "🔁", "reroll"),
    "loop": Action("Loop", "➰", "make_loop", per_take=True),
    "midi": Action("MIDI", "🎹", "make_midi", per_take=True),
    "cover": Action("New cover", "🖼️", "redraw_cover"),
    "keep": Action("Keep", "⭐", "toggle_keep"),
    "extend": Action("Extend", "⏩", "extend", per_take=True),
    "edit": Action("Edit", "📝", "edit"),
    "cancel": Action("Cancel", "❌", "cancel"),
}


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"bf:(?P<action>{'|'.join(ACTIONS)}):(?P<job_id>\d+)(?::(?P<take>\d+))?",
):
    def __init__(self, action: str, job_id: int, take: int | None = None, *, row: int | None = None) -> None:
        spec = ACTIONS[action]
        label = spec.label if take is None else f"{spec.label} take {take}"
        custom_id = f"bf:{action}:{job_id}" + (f":{take}" if take is not None else "")
        style = discord.ButtonStyle.danger if action == "cancel" else discord.ButtonStyle.secondary
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, emoji=spec.emoji, style=style, custom_id=custom_id, row=row
        )
        super().__init__(button)
        self.action, self.job_id, self.take = action, job_id, take

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,  # noqa: ARG003
        item: discord.ui.Item[Any],  # noqa: ARG003
        match: re.Match[str],
        /,
    ) -> JobButton:
        return cls(match["action"], int(match["job_id"]), int(match["take"]) if match["take"] else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: Beatforge = interaction.client  # type: ignore[assignment]
        generate: Generate = bot.get_cog("Generate")  # type: ignore[assignment]
        spec = ACTIONS[self.action]
        args = (self.job_id, self.take or 1) if spec.per_take else (self.job_id,)
        try:
            await getattr(generate, spec.method)(interaction, *args)
        except UserFacingError as exc:  # components bypass the command tree's error handler
            await reply_privately(interaction, f"⚠️ {exc}")


def result_view(job: JobView) -> discord.ui.View | None:
    """The buttons under a result.

    A beat gets re-roll, new cover, keep and edit, and loop / MIDI / extend for each take (one row per
    take when there are several). A loop, MIDI or cover gets keep for itself and the loop / MIDI / cover
    buttons of the beat it came from; an uploaded file's MIDI has no beat, so only keep.
    """
    view = discord.ui.View(timeout=None)
    if job.kind is not JobKind.BEAT:
        view.add_item(JobButton("keep", job.id, row=0))
        if job.parent_id is not None:
            for action in ("loop", "midi", "cover"):
                view.add_item(JobButton(action, job.parent_id, row=0))
        return view
    takes = min(MAX_TAKES, sum(1 for a in job.artifacts if a.kind is ArtifactKind.AUDIO))  # a message has 5 rows
    if takes <= 1:
        for action in ("reroll", "loop", "midi", "cover", "keep"):
            view.add_item(JobButton(action, job.id, row=0))
        for action in ("extend", "edit"):
            view.add_item(JobButton(action, job.id, row=1))
        return view
    for action in ("reroll", "cover", "keep", "edit"):
        view.add_item(JobButton(action, job.id, row=0))
    for take in range(1, takes + 1):
        for action in ("loop", "midi", "extend"):
            view.add_item(JobButton(action, job.id, take, row=take))
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    """The ❌ under a queued or running job's status message."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("cancel", job_id))
    return view


class _Form(discord.ui.Modal):
    """A modal whose validation errors reach the user as a private message (modals bypass the tree's handler)."""

    def field(self, text: str, **options: Any) -> discord.ui.TextInput[Any]:
        """Add a labelled text input and return it (its ``value`` is read on submit)."""
        text_input: discord.ui.TextInput[Any] = discord.ui.TextInput(**options)
        self.add_item(discord.ui.Label(text=text, component=text_input))
        return text_input

    # discord.py's Modal.on_error drops the item argument of BaseView.on_error; this matches Modal's.
    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:  # type: ignore[override]
        if isinstance(error, UserFacingError):
            await reply_privately(interaction, f"⚠️ {error}")
            return
        await super().on_error(interaction, error)
        await reply_privately(interaction, "💥 Something went wrong on our side. It has been logged; please try again.")


def _number(text: str, what: str, *, low: float, high: float) -> float:
    try:
        value = float(text.strip().removesuffix("s").strip())
    except ValueError as exc:
        raise UserFacingError(f"{what} must be a number, not {text!r}.") from exc
    if not low <= value <= high:
        raise UserFacingError(f"{what} must be between {low:g} and {high:g}.")
    return value


@dataclass(frozen=True, slots=True)
class EditedSettings:
    prompt: str
    duration_s: float
    bpm: int | None
    seed: int | None
    presets: str


class EditForm(_Form, title="Edit and make a new beat"):
    """📝: the beat's settings pre-filled; submitting queues a new beat made from the edited ones."""

    def __init__(self, generate: Generate, job: JobView, p: BeatParams) -> None:
        """``p``: the beat's parameters (``job.params``, known to be a beat's)."""
        super().__init__(timeout=15 * 60)  # an interaction token's life: the submit could not be answered later
        self.generate, self.job = generate, job
        self.prompt = self.field(
            "Prompt", style=discord.TextStyle.paragraph, max_length=PROMPT_MAX_CHARS, default=p.prompt
        )
        self.duration = self.field("Duration (seconds)", max_length=6, default=f"{p.duration_s:g}")
        self.bpm = self.field(
            "BPM (empty: let the music decide)", required=False, max_length=3, default=str(p.bpm) if p.bpm else None
        )
        self.seed = self.field("Seed (empty: a new one)", required=False, max_length=10)
        presets = ", ".join(key for key in (p.style, p.mood) if key) or None
        self.presets = self.field(
            "Style and mood (e.g. dark-trap, sad)", required=False, max_length=60, default=presets
        )

    def settings(self) -> EditedSettings:
        seed = self.seed.value.strip()
        if seed and not (seed.isdigit() and int(seed) <= MAX_SEED):
            raise UserFacingError(f"Seed must be a whole number from 0 to {MAX_SEED}.")
        bpm = self.bpm.value.strip()
        return EditedSettings(
            prompt=self.prompt.value,
            duration_s=_number(self.duration.value, "Duration", low=MIN_DURATION_S, high=MAX_DURATION_S),
            bpm=round(_number(bpm, "BPM", low=MIN_BPM, high=MAX_BPM)) if bpm else None,
            seed=int(seed) if seed else None,
            presets=self.presets.value,
        )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.generate.submit_edit(interaction, self.job, self.settings())


class ExtendForm(_Form, title="Extend this take"):
    """⏩: how many seconds to add; the model continues the take's own audio."""

    def __init__(self, generate: Generate, job: JobView, take: int, *, max_seconds: float) -> None:
        super().__init__(timeout=15 * 60)
        self.generate, self.job, self.take, self.max_seconds = generate, job, take, max_seconds
        self.seconds = self.field(f"Seconds to add (1-{max_seconds:g})", default="15", max_length=6)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        seconds = _number(self.seconds.value, "Seconds to add", low=MIN_DURATION_S, high=self.max_seconds)
        await self.generate.submit_extend(interaction, self.job, self.take, seconds)
