"""/beat: validate, defer within Discord's 3 seconds, record, enqueue, and say where the job stands."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands
from pydantic import ValidationError
from redis.exceptions import RedisError

from beatforge.contract import (
    MAX_DURATION_S,
    MAX_SEED,
    MIN_DURATION_S,
    PROMPT_MAX_CHARS,
    BeatParams,
    ErrorCode,
    explain,
)
from beatforge.queue import QueueError, enqueue_generation
from bot.errors import UserFacingError
from bot.messages import queued_text
from storage import jobs

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)


async def queue_position(bot: Beatforge, queue_job_id: str) -> int | None:
    """1-based place in arq's queue (the running job counts as #1), or None once the worker took it."""
    rank = await bot.redis.zrank(bot.settings.queue_name, queue_job_id)
    return None if rank is None else int(rank) + 1


class Generate(commands.Cog):
    def __init__(self, bot: Beatforge) -> None:
        self.bot = bot

    def build_params(self, prompt: str, duration: float | None, seed: int | None) -> BeatParams:
        try:
            return BeatParams(
                prompt=prompt,
                duration_s=self.bot.settings.default_duration_s if duration is None else duration,
                seed=random.randint(0, MAX_SEED) if seed is None else seed,
            )
        except ValidationError as exc:
            raise UserFacingError(f"Can't make that beat: {explain(exc)}.") from exc

    @app_commands.command(name="beat")
    @app_commands.guild_only()
    async def beat(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_CHARS],
        duration: app_commands.Range[float, MIN_DURATION_S, MAX_DURATION_S] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
    ) -> None:
        """Turn a sentence into a beat.

        Args:
            prompt: What it should sound like, e.g. "dark psychedelic trap, 808s, 140 bpm".
            duration: Length in seconds (1-30, default 15).
            seed: Same seed + prompt + model = the same beat. Leave empty for a surprise.
        """
        # Discord enforces the ranges in its own client only; a crafted payload reaches us unchecked.
        params = self.build_params(prompt, duration, seed)
        await interaction.response.defer(thinking=True)
        await self.submit(interaction, params)

    async def submit(self, interaction: discord.Interaction, params: BeatParams) -> int:
        bot = self.bot
        async with bot.sessions() as session:
            job = await jobs.create_job(
                session,
                params=params,
                user_id=interaction.user.id,
                user_name=interaction.user.name,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
            )
        job_id = job.id
        bot.live_interactions[job_id] = interaction
        try:
            await enqueue_generation(bot.redis, job_id=job_id, queue_job_id=job.queue_job_id, params=params)
            position = await queue_position(bot, job.queue_job_id)
        except (QueueError, RedisError) as exc:
            async with bot.sessions() as session:
                await jobs.mark_failed(session, job_id, code=ErrorCode.INTERNAL, message="the job queue is unreachable")
                await jobs.mark_delivered(session, job_id)  # the error below is the delivery
            bot.live_interactions.pop(job_id, None)
            log.error("enqueue failed", extra={"job_id": job_id, "error": str(exc)})
            raise UserFacingError("The job queue is unreachable right now; please try again in a minute.") from exc
        message = await interaction.edit_original_response(content=queued_text(job_id, position))
        async with bot.sessions() as session:
            await jobs.set_status_message(session, job_id, message.id)
        log.info("job queued", extra={"job_id": job_id, "user_id": interaction.user.id, "position": position})
        return job_id


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(Generate(bot))
