"""/queue: what is running and waiting, with positions and estimated start and finish (``bot/queue_view.py``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands
from redis.exceptions import RedisError

from bot.errors import UserFacingError
from bot.queue_view import cached_queue, queue_text

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)


class Queue(commands.Cog):
    def __init__(self, bot: Beatforge) -> None:
        self.bot = bot

    @app_commands.command(name="queue")
    async def queue(self, interaction: discord.Interaction) -> None:
        """What is generating and waiting, in order, with when each job should start and finish."""
        try:
            snap = await cached_queue(self.bot, max_age_s=0)
        except RedisError as exc:
            log.warning("could not read the queue", extra={"error": repr(exc)})
            raise UserFacingError("The job queue is unreachable right now; please try again in a minute.") from exc
        content = queue_text(snap.entries, guild_id=interaction.guild_id, user_id=interaction.user.id)
        await interaction.response.send_message(content, ephemeral=True)


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(Queue(bot))
