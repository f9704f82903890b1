"""Per-user limits and the queue cap, through /beat against the Discord harness, with real redis and SQLite."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, ErrorCode
from bot.app import Beatforge
from storage import guilds, jobs
from tests.support.bot import CALLBACK, EPHEMERAL, ORIGINAL
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_USER_ID,
    FakeDiscord,
    RecordedRequest,
    connected,
    dispatch_gateway,
    settle,
    slash_command_payload,
)

OTHER_USER = 7


@pytest.fixture
def run_bot(settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis) -> Callable[..., Any]:
    """A bot with some settings changed (the limits under test), connected to a fake Discord."""

    @asynccontextmanager
    async def run(**changes: Any) -> AsyncIterator[tuple[Beatforge, FakeDiscord]]:
        bot = Beatforge(settings=settings.model_copy(update=changes), redis=arq_redis, sessions=sessions)
        async with FakeDiscord() as fake, connected(bot, fake):
            yield bot, fake

    return run


async def _job(sessions: async_sessionmaker[AsyncSession], *, user_id: int = DEFAULT_USER_ID, done: bool) -> int:
    """A job row as /beat would have left it: still queued, or already finished."""
    async with sessions() as session:
        job = await jobs.create_job(
            session,
            params=BeatParams(prompt="earlier beat", duration_s=5, seed=1),
            user_id=user_id,
            user_name="someone",
            guild_id=DEFAULT_GUILD_ID,
            channel_id=DEFAULT_CHANNEL_ID,
        )
        if done:
            await jobs.mark_failed(session, job.id, code=ErrorCode.GENERATION_FAILED, message="finished earlier")
    return job.id


async def _answer(bot: Beatforge, fake: FakeDiscord, **options: Any) -> str:
    """Run /beat; what Discord shows the user: an ephemeral reply, or the edit of a deferred response."""
    since = len(fake.requests)
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", options, bot=bot))

    def answered(r: RecordedRequest) -> bool:
        if r.index < since:
            return False
        if r.method == "POST" and re.search(CALLBACK, r.path):
            return r.json["type"] == 4
        return r.method == "PATCH" and re.search(ORIGINAL, r.path) is not None

    request = await fake.wait_for(answered, timeout=5)
    await settle(bot)
    if request.method == "POST":
        assert request.json["data"]["flags"] & EPHEMERAL  # a refusal is private
        return str(request.json["data"]["content"])
    return str(request.json["content"])


async def _assert_nothing_queued(
    bot: Beatforge, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, *, rows: int
) -> None:
    async with sessions() as session:
        assert await jobs.count_jobs(session) == rows  # only the rows the test made
    assert await arq_redis.zcard(bot.settings.queue_name) == 0


async def test_over_the_hourly_limit_is_refused_with_when_to_try_again(
    run_bot: Callable[..., Any], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    first = await _job(sessions, done=True)
    await _job(sessions, done=True)
    async with sessions() as session:
        oldest = (await jobs.get_job(session, first)).queued_at
    async with run_bot(jobs_per_hour=2) as (bot, fake):
        text = await _answer(bot, fake, prompt="one more", duration=5)
        assert "2 jobs in the last hour" in text and "limit here is 2 an hour" in text
        (when,) = re.findall(r"<t:(\d+):R>", text)
        assert abs(int(when) - (oldest + timedelta(hours=1)).timestamp()) <= 2
        await _assert_nothing_queued(bot, sessions, arq_redis, rows=2)


async def test_too_many_jobs_at_once_is_refused(
    run_bot: Callable[..., Any], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    await _job(sessions, done=False)
    async with run_bot(concurrent_jobs=1) as (bot, fake):
        text = await _answer(bot, fake, prompt="another", duration=5)
        assert "You already have 1 queued or running" in text and "1 job at once" in text
        await _assert_nothing_queued(bot, sessions, arq_redis, rows=1)


async def test_a_full_queue_refuses_everyone_even_an_owner(
    run_bot: Callable[..., Any], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    for _ in range(2):
        await _job(sessions, user_id=OTHER_USER, done=False)
    async with run_bot(queue_cap=2, owner_ids=[DEFAULT_USER_ID]) as (bot, fake):
        text = await _answer(bot, fake, prompt="me too", duration=5)
        assert "The queue is full right now (2 jobs waiting" in text and "try again in a few minutes" in text
        await _assert_nothing_queued(bot, sessions, arq_redis, rows=2)


async def test_duration_over_the_servers_maximum_is_refused(
    run_bot: Callable[..., Any], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    async with sessions() as session:
        await guilds.update_guild(session, DEFAULT_GUILD_ID, by=1, action="limits.set", max_duration_s=10.0)
    async with run_bot() as (bot, fake):
        text = await _answer(bot, fake, prompt="long one", duration=30)
        assert "up to 10 s long; you asked for 30 s" in text
        await _assert_nothing_queued(bot, sessions, arq_redis, rows=0)
        # Within the server's maximum, the same request goes through.
        assert "queued" in await _answer(bot, fake, prompt="short one", duration=10)
        assert await arq_redis.zcard(bot.settings.queue_name) == 1


async def test_an_owner_is_exempt_from_per_user_limits(
    run_bot: Callable[..., Any], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    await _job(sessions, done=True)
    await _job(sessions, done=False)
    async with sessions() as session:
        await guilds.update_guild(session, DEFAULT_GUILD_ID, by=1, action="limits.set", max_duration_s=10.0)
    async with run_bot(jobs_per_hour=1, concurrent_jobs=1, owner_ids=[DEFAULT_USER_ID]) as (bot, fake):
        text = await _answer(bot, fake, prompt="owner's beat", duration=30)
        assert "queued" in text and "⚠️" not in text
        async with sessions() as session:
            assert await jobs.count_jobs(session) == 3
        assert await arq_redis.zcard(bot.settings.queue_name) == 1
