"""Integer command options whose range the bot itself enforces, not only Discord's client.

``app_commands.Range`` only *declares* bounds: Discord's client keeps users inside them, but discord.py never
checks them, so a crafted interaction can carry any integer (2**70 as a job number overflows SQLite and the
command dies without an answer). These options declare the same bounds and refuse anything outside them with
a private explanation, before a handler or the database sees the value.
"""

from __future__ import annotations

import discord
from discord import app_commands

from beatforge.bounds import MAX_JOB_ID
from bot.errors import UserFacingError


class IntRange(app_commands.Transformer):
    """An integer option from ``low`` to ``high`` (both included), declared to Discord and checked here."""

    def __init__(self, name: str, low: int, high: int) -> None:
        super().__init__()
        self.name, self.low, self.high = name, low, high

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.integer

    @property
    def min_value(self) -> int:
        return self.low

    @property
    def max_value(self) -> int:
        return self.high

    async def transform(self, interaction: discord.Interaction, value: int, /) -> int:  # noqa: ARG002
        if not self.low <= value <= self.high:
            span = f"from {self.low} to {self.high}"
            raise UserFacingError(f"{self.name} is out of range: give a number {span}, not {value}.")
        return value


#: A beat's number ("Beat #N"), as /cover and /midi take it.
BeatNumber = app_commands.Transform[int, IntRange("beat", 1, MAX_JOB_ID)]
#: Any job's number, as /show and /admin cancel take it.
JobNumber = app_commands.Transform[int, IntRange("job", 1, MAX_JOB_ID)]
