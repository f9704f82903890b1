"""🔁 on a result re-rolls it: same settings, new seed, posted in the channel (a reaction has no interaction)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from beatforge.contract import JobKind
from storage import jobs

if TYPE_CHECKING:
    from bot.app import Beatforge
    from bot.cogs.generate import Generate

REROLL = "🔁"


class Reactions(commands.Cog):
    def __init__(self, bot: Beatforge) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        # Raw: results are usually older than the message cache, and the job is found by message id anyway.
        if str(payload.emoji) != REROLL or payload.guild_id is None:
            return
        if self.bot.user is not None and payload.user_id == self.bot.user.id:
            return
        async with self.bot.sessions() as session:
            job = await jobs.find_by_message(session, payload.message_id)
        if job is None or job.kind is not JobKind.BEAT or job.guild_id != payload.guild_id:
            return  # not one of our beats: someone's 🔁 on an ordinary message
        generate: Generate = self.bot.get_cog("Generate")  # type: ignore[assignment]
        await generate.reroll_by_reaction(payload, job)


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(Reactions(bot))
