"""/queue: what is running and waiting, with positions and estimated start and finish (``bot/queue_view.py``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from arq.connections import ArqRedis
from discord import app_commands
from discord.ext import commands
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from bot.errors import UserFacingError
from bot.queue_view import queue_text, read_queue
from storage import jobs

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)


class Queue(commands.Cog):
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, settings: Settings) -> None:
        self.sessions, self.redis, self.settings = sessions, redis, settings

    @app_commands.command(name="queue")
    async def queue(self, interaction: discord.Interaction) -> None:
        """What is generating and waiting, in order, with when each job should start and finish."""
        async with self.sessions() as session:
            active = await jobs.list_active(session)
        try:
            snap = await read_queue(self.redis, self.settings, active)
        except RedisError as exc:
            log.warning("could not read the queue", extra={"error": repr(exc)})
            raise UserFacingError("The job queue is unreachable right now; please try again in a minute.") from exc
        content = queue_text(snap.entries, guild_id=interaction.guild_id, user_id=interaction.user.id)
        await interaction.response.send_message(content, ephemeral=True)


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(Queue(sessions=bot.sessions, redis=bot.redis, settings=bot.settings))
