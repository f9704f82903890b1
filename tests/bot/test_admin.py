"""/admin through the real discord.py paths (Discord harness), with real redis and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, ErrorCode, JobStatus
from beatforge.fleet import ModelInfo, publish_models
from beatforge.queue import enqueue_job
from bot.app import Beatforge
from storage import guilds, jobs
from tests.support.bot import CALLBACK, MANAGE_SERVER, private_text
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_MEMBER_PERMISSIONS,
    DEFAULT_USER_ID,
    FakeDiscord,
    RecordedRequest,
    connected,
    dispatch_gateway,
    settle,
    slash_command_payload,
)

OWNER_ID = 4242


@pytest.fixture
async def discord_bot(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> AsyncIterator[tuple[Beatforge, FakeDiscord]]:
    settings = settings.model_copy(update={"owner_ids": [OWNER_ID]})
    bot = Beatforge(settings=settings, redis=arq_redis, sessions=sessions)
    async with FakeDiscord() as fake, connected(bot, fake):
        yield bot, fake


async def admin(
    bot: Beatforge, fake: FakeDiscord, subcommand: str, *, permissions: int = MANAGE_SERVER, **options: Any
) -> RecordedRequest:
    """Run ``/admin <subcommand>`` and return the interaction's answer once the bot is done with it."""
    since = len(fake.requests)
    payload = slash_command_payload("admin", options, bot=bot, subcommand=subcommand, permissions=permissions)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK, timeout=3, since=since)
    await settle(bot)
    return reply


async def publish(redis: ArqRedis) -> None:
    await publish_models(
        redis,
        [
            ModelInfo("small", "built-in", "CC-BY-NC 4.0", "MusicGen small, 300M parameters"),
            ModelInfo("melody", "built-in", "CC-BY-NC 4.0", "follows a melody", melody=True),
            ModelInfo("my-lora", "lora", "MIT", "our house style", base="small"),
        ],
        default="small",
    )


async def queued_job(bot: Beatforge, *, guild_id: int = DEFAULT_GUILD_ID, user_id: int = 7) -> int:
    """A job waiting in the real arq queue (no worker runs in these tests)."""
    params = BeatParams(prompt="queued beat", duration_s=2, seed=1)
    async with bot.sessions() as session:
        job = await jobs.create_job(
            session, params=params, user_id=user_id, user_name="u", guild_id=guild_id, channel_id=DEFAULT_CHANNEL_ID
        )
    await enqueue_job(bot.redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params)
    return job.id


async def test_admin_group_is_hidden_from_members_and_guild_only(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    _, fake = discord_bot
    (sync,) = fake.find("PUT", r"^/applications/\d+/commands$")
    command = next(c for c in sync.json if c["name"] == "admin")
    assert int(command["default_member_permissions"]) == discord.Permissions(manage_guild=True).value
    assert command["dm_permission"] is False  # guild only
    subcommands = {o["name"]: o for o in command["options"]}
    assert set(subcommands) == {"model", "limits", "cancel", "audit", "status", "train"}
    assert {o["name"] for o in subcommands["model"]["options"]} == {"list", "use"}


@pytest.mark.parametrize(
    ("subcommand", "options"),
    [("model use", {"name": "default"}), ("limits", {"jobs_per_hour": 1}), ("limits", {"reset": True})],
)
async def test_a_plain_member_is_refused_and_nothing_changes(
    discord_bot: tuple[Beatforge, FakeDiscord],
    sessions: async_sessionmaker[AsyncSession],
    subcommand: str,
    options: dict[str, Any],
) -> None:
    bot, fake = discord_bot
    reply = await admin(bot, fake, subcommand, permissions=DEFAULT_MEMBER_PERMISSIONS, **options)
    assert "Only members with Manage Server" in private_text(reply)
    async with sessions() as session:
        assert await guilds.get_guild(session, DEFAULT_GUILD_ID) == guilds.GuildSettings(DEFAULT_GUILD_ID)
        assert await guilds.audit_log(session, guild_id=DEFAULT_GUILD_ID) == []


async def test_a_plain_member_cannot_cancel_anyones_job(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    job_id = await queued_job(bot)
    reply = await admin(bot, fake, "cancel", permissions=DEFAULT_MEMBER_PERMISSIONS, job=job_id)
    assert "Only members with Manage Server" in private_text(reply)
    async with sessions() as session:
        assert (await jobs.get_job(session, job_id)).status is JobStatus.QUEUED
        assert await guilds.audit_log(session, guild_id=DEFAULT_GUILD_ID) == []
    assert await arq_redis.zcard(bot.settings.queue_name) == 1


async def test_model_use_changes_the_server_model_and_audits_it(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    await publish(arq_redis)
    assert "New beats on this server use `melody`" in private_text(await admin(bot, fake, "model use", name="melody"))
    async with sessions() as session:
        assert (await guilds.get_guild(session, DEFAULT_GUILD_ID)).model == "melody"
        (entry,) = await guilds.audit_log(session, guild_id=DEFAULT_GUILD_ID)
    assert (entry.user_id, entry.action) == (DEFAULT_USER_ID, "model.use")
    assert entry.detail == {"before": {"model": None}, "after": {"model": "melody"}}

    # The list marks the server's model and the default.
    listing = private_text(await admin(bot, fake, "model list"))
    assert "`melody` — **⭐ this server**" in listing and "`small` — **default**" in listing
    assert "our house style" in listing and "on `small`" in listing and "MIT" in listing

    # An unknown name is refused with the choices, and changes nothing.
    refusal = private_text(await admin(bot, fake, "model use", name="large"))
    assert "There is no model `large`" in refusal and "`small`, `melody`, `my-lora`" in refusal
    async with sessions() as session:
        assert (await guilds.get_guild(session, DEFAULT_GUILD_ID)).model == "melody"
        assert len(await guilds.audit_log(session, guild_id=DEFAULT_GUILD_ID)) == 1

    # `default` goes back to the bot's default.
    assert "bot's default model (`small`)" in private_text(await admin(bot, fake, "model use", name="Default"))
    async with sessions() as session:
        assert (await guilds.get_guild(session, DEFAULT_GUILD_ID)).model is None
        assert [e.action for e in await guilds.audit_log(session, guild_id=DEFAULT_GUILD_ID)] == ["model.use"] * 2


async def test_before_any_worker_reports_models_the_list_says_so_and_names_are_unchecked(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    assert "No worker has reported its models yet" in private_text(await admin(bot, fake, "model list"))
    reply = private_text(await admin(bot, fake, "model use", name="my-finetune"))
    assert "use `my-finetune`" in reply and "could not be checked" in reply
    async with sessions() as session:
        assert (await guilds.get_guild(session, DEFAULT_GUILD_ID)).model == "my-finetune"


async def test_an_owner_without_manage_server_is_allowed(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    payload = slash_command_payload(
        "admin",
        {"concurrent_jobs": 2},
        bot=bot,
        subcommand="limits",
        user_id=OWNER_ID,
        permissions=DEFAULT_MEMBER_PERMISSIONS,
    )
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK, timeout=3)
    await settle(bot)
    assert "jobs at once per user: **2** (this server)" in private_text(reply)
    async with sessions() as session:
        assert (await guilds.get_guild(session, DEFAULT_GUILD_ID)).concurrent_jobs == 2
        (entry,) = await guilds.audit_log(session, guild_id=DEFAULT_GUILD_ID)
    assert (entry.user_id, entry.action) == (OWNER_ID, "limits.set")


async def test_limits_show_set_refuse_and_reset(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    shown = private_text(await admin(bot, fake, "limits"))
    assert "jobs per hour per user: **20** (bot default)" in shown and "longest beat: **240 s** (bot default;" in shown
    assert "MusicGen up to 120 s, ACE-Step 1.5 up to 240 s" in shown  # each engine's own limit

    changed = private_text(await admin(bot, fake, "limits", jobs_per_hour=5, max_duration=30, everyone_can_reroll=True))
    assert "jobs per hour per user: **5** (this server)" in changed
    assert "longest beat: **30 s** (this server;" in changed and "re-roll a result: **anyone**" in changed
    assert "jobs at once per user: **3** (bot default)" in changed
    async with sessions() as session:
        guild = await guilds.get_guild(session, DEFAULT_GUILD_ID)
    assert (guild.jobs_per_hour, guild.concurrent_jobs, guild.max_duration_s, guild.everyone_can_reroll) == (
        5,
        None,
        30,
        True,
    )

    # Out of range (Discord's client would stop these; a crafted payload is not) and contradictory requests.
    assert "max_duration must be between 1 and 240 seconds, not 500" in private_text(
        await admin(bot, fake, "limits", max_duration=500)
    )
    assert "jobs_per_hour must be between 1 and 10000, not 0" in private_text(
        await admin(bot, fake, "limits", jobs_per_hour=0)
    )
    assert "not both" in private_text(await admin(bot, fake, "limits", reset=True, concurrent_jobs=2))
    async with sessions() as session:
        assert await guilds.get_guild(session, DEFAULT_GUILD_ID) == guild

    reset = private_text(await admin(bot, fake, "limits", reset=True))
    assert "Back to the bot's defaults" in reset and "longest beat: **240 s** (bot default;" in reset
    async with sessions() as session:
        assert await guilds.get_guild(session, DEFAULT_GUILD_ID) == guilds.GuildSettings(DEFAULT_GUILD_ID)
        entries = await guilds.audit_log(session, guild_id=DEFAULT_GUILD_ID)
    assert [e.action for e in entries] == ["limits.reset", "limits.set"]
    assert entries[0].detail["before"]["max_duration_s"] == 30 and entries[0].detail["after"]["max_duration_s"] is None


async def test_cancel_a_queued_job_takes_it_off_the_queue_and_audits_it(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    job_id = await queued_job(bot, user_id=7)
    assert await arq_redis.zcard(bot.settings.queue_name) == 1
    reply = private_text(await admin(bot, fake, "cancel", job=job_id))
    assert f"Beat #{job_id} (by <@7>) is cancelled" in reply
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
        (entry,) = await guilds.audit_log(session, guild_id=DEFAULT_GUILD_ID)
    assert (job.status, job.error_code) == (JobStatus.FAILED, ErrorCode.CANCELLED)
    assert await arq_redis.zcard(bot.settings.queue_name) == 0
    assert (entry.action, entry.user_id, entry.detail["job_id"], entry.detail["owner_id"]) == (
        "job.cancel",
        DEFAULT_USER_ID,
        job_id,
        7,
    )

    # Again: already cancelled; unknown ids and other servers' jobs are refused; none of it is audited.
    assert "nothing to cancel" in private_text(await admin(bot, fake, "cancel", job=job_id))
    assert "There is no job #999" in private_text(await admin(bot, fake, "cancel", job=999))
    elsewhere = await queued_job(bot, guild_id=DEFAULT_GUILD_ID + 1)
    assert "not from this server" in private_text(await admin(bot, fake, "cancel", job=elsewhere))
    async with sessions() as session:
        assert (await jobs.get_job(session, elsewhere)).status is JobStatus.QUEUED
        assert len(await guilds.audit_log(session, guild_id=DEFAULT_GUILD_ID)) == 1


async def test_audit_lists_the_latest_entries(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    bot, fake = discord_bot
    assert "No admin has changed anything" in private_text(await admin(bot, fake, "audit"))
    await admin(bot, fake, "limits", jobs_per_hour=9)
    await admin(bot, fake, "model use", name="big")
    log = private_text(await admin(bot, fake, "audit", count=5))
    lines = log.splitlines()
    assert "`model.use` model: None → big" in lines[1] and f"<@{DEFAULT_USER_ID}>" in lines[1]
    assert "`limits.set` jobs_per_hour: None → 9" in lines[2]


async def test_model_names_are_suggested_to_admins_only(
    discord_bot: tuple[Beatforge, FakeDiscord], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    await publish(arq_redis)
    for permissions, expected in ((MANAGE_SERVER, ["default", "melody"]), (DEFAULT_MEMBER_PERMISSIONS, [])):
        since = len(fake.requests)
        payload = slash_command_payload(
            "admin", {"name": "e"}, bot=bot, subcommand="model use", permissions=permissions, focused="name"
        )
        dispatch_gateway(bot, "INTERACTION_CREATE", payload)
        reply = await fake.wait_for("POST", CALLBACK, timeout=3, since=since)
        assert reply.json["type"] == 8  # autocomplete result
        assert [c["value"] for c in reply.json["data"]["choices"]] == expected
