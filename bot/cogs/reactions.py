"""🔁 on a result re-rolls it: same settings, new seed, posted in the channel (a reaction has no interaction)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from beatforge.contract import JobKind
from bot.actions import JobActions
from bot.jobs import JobService

if TYPE_CHECKING:
    from bot.app import Beatforge

REROLL = "🔁"


class Reactions(commands.Cog):
    def __init__(self, *, client: discord.Client, jobs: JobService, actions: JobActions) -> None:
        #: Who the bot is (its own reactions are ignored) and where the channels are.
        self.client = client
        self.jobs, self.actions = jobs, actions

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        # Raw: results are usually older than the message cache, and the job is found by message id anyway.
        if str(payload.emoji) != REROLL or payload.guild_id is None:
            return
        if self.client.user is not None and payload.user_id == self.client.user.id:
            return
        job = await self.jobs.find_by_message(payload.message_id)
        if job is None or job.kind is not JobKind.BEAT or job.guild_id != payload.guild_id:
            return  # not one of our beats: someone's 🔁 on an ordinary message
        channel = self.client.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        await self.actions.reroll_by_reaction(payload, job, channel)


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(Reactions(client=bot, jobs=bot.jobs, actions=bot.actions))
