"""Buttons on results. Each button's custom_id names its action and job (``bf:loop:12``), so buttons
keep working after a restart and after any time, with no state held in the bot."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import UserFacingError, reply_privately

if TYPE_CHECKING:
    from bot.app import Beatforge
    from bot.cogs.generate import Generate
    from storage.jobs import JobView

#: action → (label, emoji, Generate method taking (interaction, beat_id)); order is the order shown.
ACTIONS: dict[str, tuple[str, str, str]] = {
    "loop": ("Loop", "➰", "make_loop"),
    "midi": ("MIDI", "🎹", "make_midi"),
    "cover": ("New cover", "🖼️", "redraw_cover"),
}


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"bf:(?P<action>{'|'.join(ACTIONS)}):(?P<job_id>\d+)"
):
    def __init__(self, action: str, job_id: int) -> None:
        label, emoji, _ = ACTIONS[action]
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, emoji=emoji, style=discord.ButtonStyle.secondary, custom_id=f"bf:{action}:{job_id}"
        )
        super().__init__(button)
        self.action, self.job_id = action, job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,  # noqa: ARG003
        item: discord.ui.Item[Any],  # noqa: ARG003
        match: re.Match[str],
        /,
    ) -> JobButton:
        return cls(match["action"], int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: Beatforge = interaction.client  # type: ignore[assignment]
        generate: Generate = bot.get_cog("Generate")  # type: ignore[assignment]
        try:
            await getattr(generate, ACTIONS[self.action][2])(interaction, self.job_id)
        except UserFacingError as exc:  # components bypass the command tree's error handler
            await reply_privately(interaction, f"⚠️ {exc}")


def result_view(job: JobView) -> discord.ui.View | None:
    """The buttons under a result: they act on the beat (this one, or the one this job was made from)."""
    beat_id = job.id if job.kind == "beat" else job.parent_id
    if beat_id is None:  # an upload's MIDI has no beat to act on
        return None
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(JobButton(action, beat_id))
    return view
