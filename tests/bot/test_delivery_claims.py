"""Several bot processes on one database: each result posted exactly once, whichever bot gets to it.

Two real ``Beatforge`` instances (each its own delivery claims' owner) share one migrated SQLite database, redis and
one fake Discord. The fake dedupes a repeated nonce like Discord, which would hide a double post in the channel's
messages, so these tests count the POSTs Discord *received*, not the messages it kept. The sharded bot connects
through the loopback gateway (tests/support/discord_harness/gateway.py) with its shards, as in production.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from bot.app import Beatforge, ShardedBeatforge, make_bot
from storage import claims
from storage.artifacts import ArtifactStore
from tests.support.bot import CHANNEL_MESSAGES, delivered_job, finish_job, get_job, new_job
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    FakeDiscord,
    connected,
    guild_payload,
    text_channel_payload,
)
from tests.support.discord_harness.gateway import FakeGateway, running, shard_of

BotFactory = Callable[..., AbstractAsyncContextManager[Beatforge]]
#: Finished jobs the two bots race for.
JOBS = 12


@pytest.fixture
def bot_on(settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis) -> BotFactory:
    """A bot process of its own (its own claims' owner) on the shared database, redis and the given fake."""

    @asynccontextmanager
    async def start(fake: FakeDiscord, *, claim_s: float | None = None, **overrides: Any) -> AsyncIterator[Beatforge]:
        bot = Beatforge(settings=settings.model_copy(update=overrides), redis=arq_redis, sessions=sessions)
        if claim_s is not None:  # below the setting's floor, so a test can outlast a few leases
            bot.delivery.claim_lease = timedelta(seconds=claim_s)
        async with connected(bot, fake):
            yield bot

    return start


async def finished(settings: Settings, sessions: async_sessionmaker[AsyncSession], **where: int | None) -> int:
    job_id = await new_job(sessions, **where)  # type: ignore[arg-type]
    audio = ("a.wav", "audio", bytes(1_000), {"take": 1, "seed": 9})
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, [audio])
    return job_id


def result_posts(fake: FakeDiscord, channel_regex: str = CHANNEL_MESSAGES) -> list[str]:
    """The nonce of every result create Discord received (a retry of one post repeats its nonce)."""
    return [r.json["nonce"] for r in fake.find("POST", channel_regex)]


@pytest.mark.timeout(30)
async def test_two_bots_watching_one_database_post_each_result_once(
    bot_on: BotFactory, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with FakeDiscord() as fake, bot_on(fake) as first, bot_on(fake) as second:
        assert first.delivery.owner != second.delivery.owner
        job_ids = await asyncio.gather(*(finished(settings, sessions) for _ in range(JOBS)))
        delivered = [await delivered_job(sessions, job_id, timeout=15) for job_id in job_ids]
        await asyncio.sleep(0.5)  # several more ticks of both watchers: nothing is posted again
        posts = result_posts(fake)
    assert len(posts) == JOBS and len(set(posts)) == JOBS
    assert {job.result_message_id for job in delivered} == {int(m["id"]) for m in fake.messages_in(DEFAULT_CHANNEL_ID)}
    assert all(job.delivery_attempts == 0 and job.delivery_claimed_by is None for job in delivered)


@pytest.mark.timeout(30)
async def test_two_deliveries_of_each_job_at_once_post_it_once(
    bot_on: BotFactory,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both bots' ``Delivery.deliver`` run for every job at the same moment (their watchers stopped): one posts, the
    other finds the claim taken and posts nothing."""
    caplog.set_level(logging.INFO, logger="bot.delivery")
    async with FakeDiscord() as fake, bot_on(fake) as first, bot_on(fake) as second:
        for bot in (first, second):
            bot.watcher.poll.cancel()
        job_ids = [await finished(settings, sessions) for _ in range(JOBS)]
        views = [await get_job(sessions, job_id) for job_id in job_ids]
        pairs = [(first, second) if i % 2 else (second, first) for i in range(JOBS)]  # neither always starts first
        await asyncio.gather(
            *(bot.delivery.deliver(job) for job, pair in zip(views, pairs, strict=True) for bot in pair)
        )
        posts = result_posts(fake)
    lost = [r for r in caplog.records if r.getMessage() == "another bot is delivering this job"]
    assert len(posts) == JOBS and len(set(posts)) == JOBS
    assert sorted(r.job_id for r in lost) == job_ids  # type: ignore[attr-defined]
    for job_id in job_ids:
        assert (await get_job(sessions, job_id)).delivered_at is not None


@pytest.mark.timeout(20)
async def test_a_dead_bots_claim_holds_the_job_until_it_expires_then_another_bot_delivers_it(
    bot_on: BotFactory, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with FakeDiscord() as fake, bot_on(fake):
        job_id = await finished(settings, sessions)
        async with sessions() as session:  # a bot claimed the job and died before posting
            assert await claims.claim_delivery(session, job_id, owner="dead-bot", lease=timedelta(seconds=1.5))
        await asyncio.sleep(0.8)
        assert result_posts(fake) == [] and (await get_job(sessions, job_id)).delivered_at is None
        job = await delivered_job(sessions, job_id)
        posts = result_posts(fake)
    assert len(posts) == 1 and job.result_message_id is not None and job.delivery_claimed_by is None


@pytest.mark.timeout(20)
async def test_a_slow_upload_keeps_its_claim_renewed_so_no_other_bot_posts_it_meanwhile(
    bot_on: BotFactory, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with FakeDiscord() as fake, bot_on(fake, claim_s=0.3), bot_on(fake, claim_s=0.3):
        stall = fake.stall("POST", CHANNEL_MESSAGES)
        job_id = await finished(settings, sessions)
        await asyncio.wait_for(stall.arrived.wait(), 5)
        claims = []
        for _ in range(5):  # five leases: only renewals keep the other bot out
            claims.append(await get_job(sessions, job_id))
            await asyncio.sleep(0.3)
        stall.release()
        job = await delivered_job(sessions, job_id)
        await asyncio.sleep(0.3)
        posts = result_posts(fake)
    assert len(posts) == 1 and job.result_message_id is not None  # the other bot never posted it meanwhile
    assert len({c.delivery_claimed_by for c in claims}) == 1 and claims[0].delivery_claimed_by is not None
    until = [c.delivery_claimed_until for c in claims]
    assert all(a is not None and b is not None and a < b for a, b in itertools.pairwise(until))


# --- sharding -----------------------------------------------------------------------------------------------------

SHARDS = 4


def guild_on(shard: int) -> int:
    """A realistic guild id (a 2022 snowflake) on ``shard`` of ``SHARDS``."""
    base = 1009183617451622400 >> 22
    return ((base - base % SHARDS + shard) << 22) | 0x1234


GUILDS = {shard: guild_on(shard) for shard in range(SHARDS)}
CHANNELS = {shard: 900_000_000_000_000_000 + shard for shard in range(SHARDS)}
DM_CHANNEL_ID = 955_000_000_000_000_001


def sharded_settings(settings: Settings, shard_ids: list[int]) -> Settings:
    return Settings.model_validate(settings.model_dump() | {"shard_count": SHARDS, "shard_ids": shard_ids})


def shards_posts(fake: FakeDiscord) -> dict[str, int]:
    """Result creates per channel: a shard's ("0".."3") or the DM's ("dm")."""
    names = {str(channel): str(shard) for shard, channel in CHANNELS.items()} | {str(DM_CHANNEL_ID): "dm"}
    counts: dict[str, int] = {}
    for request in fake.find("POST", r"^/channels/\d+/messages$"):
        name = names[request.path.split("/")[2]]
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.timeout(40)
async def test_sharded_bots_connect_with_their_shards_and_deliver_only_their_guilds_results(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    assert [shard_of(GUILDS[shard], SHARDS) for shard in range(SHARDS)] == list(range(SHARDS))
    async with FakeDiscord() as fake:
        guilds = [
            guild_payload(
                GUILDS[shard],
                channels=[text_channel_payload(CHANNELS[shard], guild_id=GUILDS[shard])],
                bot_user=fake.bot_user,
            )
            for shard in range(SHARDS)
        ]
        by_shard = {
            str(shard): await finished(settings, sessions, guild_id=GUILDS[shard], channel_id=CHANNELS[shard])
            for shard in range(SHARDS)
        } | {"dm": await finished(settings, sessions, guild_id=None, channel_id=DM_CHANNEL_ID)}

        async with FakeGateway(fake, guilds) as gateway:
            middle = make_bot(settings=sharded_settings(settings, [1, 2]), redis=arq_redis, sessions=sessions)
            assert isinstance(middle, ShardedBeatforge) and isinstance(middle, commands.AutoShardedBot)
            async with running(middle, fake, gateway):
                assert gateway.shards_identified == [(1, SHARDS), (2, SHARDS)]
                assert sorted(middle.shards) == [1, 2] and middle.shard_count == SHARDS
                assert sorted(g.id for g in middle.guilds) == [GUILDS[1], GUILDS[2]]
                for name in ("1", "2"):
                    await delivered_job(sessions, by_shard[name], timeout=10)
                await asyncio.sleep(0.5)  # more ticks: the other shards' jobs and the DM's stay untouched
                assert shards_posts(fake) == {"1": 1, "2": 1}
                for name in ("0", "3", "dm"):
                    assert (await get_job(sessions, by_shard[name])).delivered_at is None

            outer = make_bot(settings=sharded_settings(settings, [0, 3]), redis=arq_redis, sessions=sessions)
            async with running(outer, fake, gateway):
                assert sorted(g.id for g in outer.guilds) == [GUILDS[0], GUILDS[3]]
                for name in ("0", "3", "dm"):
                    await delivered_job(sessions, by_shard[name], timeout=10)
                await asyncio.sleep(0.3)
            assert gateway.shards_identified == [(0, SHARDS), (1, SHARDS), (2, SHARDS), (3, SHARDS)]
    assert shards_posts(fake) == {"0": 1, "1": 1, "2": 1, "3": 1, "dm": 1}


def test_unsharded_settings_make_the_plain_bot_and_shard_ids_are_checked(settings: Settings) -> None:
    assert settings.shard_count is None and type(make_bot(settings=settings, redis=None, sessions=None)) is Beatforge  # type: ignore[arg-type]
    everyone = Settings.model_validate(settings.model_dump() | {"shard_count": 3})
    assert everyone.shard_ids is None  # every shard in this process
    for wrong in ({"shard_ids": [0]}, {"shard_count": 2, "shard_ids": [2]}, {"shard_count": 2, "shard_ids": [1, 1]}):
        with pytest.raises(ValueError, match="BEATFORGE_SHARD"):
            Settings.model_validate(settings.model_dump() | wrong)
