"""/admin status through the real discord.py paths (Discord harness), over real redis and SQLite."""

from __future__ import annotations

from arq.connections import ArqRedis

from beatforge.contract import BeatParams, ErrorCode
from beatforge.fleet import GpuMemory, WorkerInfo, publish_worker
from beatforge.queue import enqueue_job
from bot.app import Beatforge
from storage import jobs
from tests.support.bot import CALLBACK, MANAGE_SERVER, private_text
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_MEMBER_PERMISSIONS,
    FakeDiscord,
    dispatch_gateway,
    settle,
    slash_command_payload,
)


async def status(bot: Beatforge, fake: FakeDiscord, *, permissions: int) -> str:
    since = len(fake.requests)
    payload = slash_command_payload("admin", {}, bot=bot, subcommand="status", permissions=permissions)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK, timeout=3, since=since)
    await settle(bot)
    return private_text(reply)  # ephemeral, or this fails


async def test_status_shows_workers_queue_and_jobs_to_admins_only(
    discord_bot: tuple[Beatforge, FakeDiscord], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    assert "no worker is running" in await status(bot, fake, permissions=MANAGE_SERVER)

    params = BeatParams(prompt="queued", duration_s=2, seed=1)
    async with bot.sessions() as session:
        waiting = await jobs.create_job(
            session, params=params, user_id=7, user_name="u", guild_id=DEFAULT_GUILD_ID, channel_id=DEFAULT_CHANNEL_ID
        )
        failed = await jobs.create_job(
            session, params=params, user_id=7, user_name="u", guild_id=DEFAULT_GUILD_ID, channel_id=DEFAULT_CHANNEL_ID
        )
        await jobs.mark_failed(session, failed.id, code=ErrorCode.GENERATION_FAILED, message="x")
    await enqueue_job(arq_redis, job_id=waiting.id, queue_job_id=waiting.queue_job_id, params=params)
    gpu = GpuMemory(allocated=3 * 2**30, reserved=4 * 2**30, total=80 * 2**30)
    worker = WorkerInfo("gpu-a-12", "gpu-a", 12, 100.0, 200.0, bot.settings.queue_name, "cuda", 1, 8, 9, 0, gpu)
    await publish_worker(arq_redis, worker, ttl_s=30)

    text = await status(bot, fake, permissions=MANAGE_SERVER)
    assert "**Workers alive: 1**" in text
    assert "`gpu-a-12` (cuda): **1**/8 jobs running, 9 finished" in text
    assert "GPU 3.0 GiB allocated · 4.0 GiB reserved of 80.0 GiB" in text
    assert "**Queue** `beatforge:gpu`: 1 waiting\n**Queue** `beatforge:train`: 0 waiting" in text  # training: its own
    assert "**Jobs now**: 1 queued, 0 running" in text
    assert "**Last hour**: 0 done, 1 failed\n• `generation_failed`: 1" in text

    refused = await status(bot, fake, permissions=DEFAULT_MEMBER_PERMISSIONS)
    assert "Only members with Manage Server" in refused and "Workers" not in refused
