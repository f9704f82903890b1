"""The forms (modals) behind ⏩ Extend, 🎛 Remix and 📝 Edit: pre-filled from the beat, read and checked on submit.

A form only reads what was typed; what happens next is the ``on_submit`` its opener passes in
(``bot.actions.JobActions``), so a form knows nothing of queueing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord

from beatforge.bounds import MAX_BPM, MAX_DURATION_S, MAX_SEED, MIN_BPM, MIN_DURATION_S, PROMPT_MAX_CHARS
from beatforge.contract import BeatParams
from bot.errors import UserFacingError, answer_privately, report_unexpected

#: An interaction token's life: a submit after that could not be answered.
FORM_TIMEOUT_S = 15 * 60


class _Form(discord.ui.Modal):
    """A modal whose validation errors reach the user as a private message (modals bypass the tree's handler)."""

    def field(self, text: str, description: str | None = None, **options: Any) -> discord.ui.TextInput[Any]:
        """Add a labelled text input and return it (its ``value`` is read on submit).

        Discord shows a label of at most 45 characters; ``description`` (at most 100) says more under it.
        """
        text_input: discord.ui.TextInput[Any] = discord.ui.TextInput(**options)
        self.add_item(discord.ui.Label(text=text, description=description, component=text_input))
        return text_input

    # discord.py's Modal.on_error drops the item argument of BaseView.on_error; this matches Modal's.
    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:  # type: ignore[override]
        if isinstance(error, UserFacingError):
            await answer_privately(interaction, f"⚠️ {error}")
        else:
            await report_unexpected(interaction, error, where="form")


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

    def __init__(
        self, p: BeatParams, *, on_submit: Callable[[discord.Interaction, EditedSettings], Awaitable[None]]
    ) -> None:
        """``p``: the beat's parameters."""
        super().__init__(timeout=FORM_TIMEOUT_S)
        self.submitted = on_submit
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

    async def on_submit(self, interaction: discord.Interaction, /) -> None:
        await self.submitted(interaction, self.settings())


class ExtendForm(_Form, title="Extend this take"):
    """⏩: how many seconds to add; the model continues the take's own audio."""

    def __init__(
        self, *, max_seconds: float, on_submit: Callable[[discord.Interaction, float], Awaitable[None]]
    ) -> None:
        super().__init__(timeout=FORM_TIMEOUT_S)
        self.max_seconds, self.submitted = max_seconds, on_submit
        self.seconds = self.field(f"Seconds to add (1-{max_seconds:g})", default="15", max_length=6)

    async def on_submit(self, interaction: discord.Interaction, /) -> None:
        seconds = _number(self.seconds.value, "Seconds to add", low=MIN_DURATION_S, high=self.max_seconds)
        await self.submitted(interaction, seconds)


#: How far a remix moves from its take when the user does not say (0: unchanged, 1: only the new words count).
DEFAULT_REMIX_STRENGTH = 0.5


@dataclass(frozen=True, slots=True)
class RemixSettings:
    prompt: str
    strength: float


class RemixForm(_Form, title="Remix this take"):
    """🎛: the new words and how far from the take to go; the take's length, tempo, key and metre are kept."""

    def __init__(self, *, on_submit: Callable[[discord.Interaction, RemixSettings], Awaitable[None]]) -> None:
        super().__init__(timeout=FORM_TIMEOUT_S)
        self.submitted = on_submit
        self.prompt = self.field(
            "New style",
            "What it should become, e.g. orchestral film score with strings.",
            style=discord.TextStyle.paragraph,
            max_length=PROMPT_MAX_CHARS,
        )
        self.strength = self.field(
            "Strength (0-1)",
            "0 keeps the take as it is, 1 follows only the new words.",
            default=f"{DEFAULT_REMIX_STRENGTH:g}",
            max_length=5,
        )

    def settings(self) -> RemixSettings:
        strength = _number(self.strength.value, "Strength", low=0.0, high=1.0)
        return RemixSettings(prompt=self.prompt.value, strength=strength)

    async def on_submit(self, interaction: discord.Interaction, /) -> None:
        await self.submitted(interaction, self.settings())
