"""Buttons on results. DynamicItems parse their job id back out of the custom_id, so they keep working
after a restart and after any time, with no state held in the bot."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import UserFacingError, reply_privately

if TYPE_CHECKING:
    from bot.app import Beatforge
    from bot.cogs.generate import Generate


class NewCoverButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"bf:cover:(?P<job_id>\d+)"):
    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="New cover", emoji="🖼️", style=discord.ButtonStyle.secondary, custom_id=f"bf:cover:{job_id}"
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /  # noqa: ARG003
    ) -> NewCoverButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: Beatforge = interaction.client  # type: ignore[assignment]
        generate: Generate = bot.get_cog("Generate")  # type: ignore[assignment]
        try:
            await generate.redraw_cover(interaction, self.job_id)
        except UserFacingError as exc:  # components bypass the command tree's error handler
            await reply_privately(interaction, f"⚠️ {exc}")


def result_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(NewCoverButton(job_id))
    return view
