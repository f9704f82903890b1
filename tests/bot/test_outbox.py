"""Delivery as a durable outbox: each job's delivery on its own (bounded, one per job, never holding up the
watcher), failures scheduled on the row, a result posted once even when the bot dies halfway, and a job whose
first status edit failed still delivered.

Faults happen for real: the fake Discord answers 404/503 or holds a request unanswered, a delivery is cancelled
right after Discord accepted it, and a second bot instance starts on the same database and fake.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

import discord
import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import PROGRESS_KEY, JobProgress
from bot.app import Beatforge
from storage import jobs
from storage.artifacts import ArtifactStore
from storage.models import utcnow
from tests.support.bot import (
    CHANNEL_MESSAGES,
    FOLLOWUP,
    ORIGINAL,
    delivered_job,
    finish_job,
    get_job,
    new_job,
    queued_edit,
    wait_for_edit,
)
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    FakeDiscord,
    connected,
    dispatch_gateway,
    settle,
    slash_command_payload,
)

#: A channel of its own for the job whose delivery a test makes fail or stall (the fake fails calls by path).
SLOW_CHANNEL_ID = 777_000_000_000_000_777
SLOW_CHANNEL_MESSAGES = rf"^/channels/{SLOW_CHANNEL_ID}/messages$"

BotFactory = Callable[..., AbstractAsyncContextManager[Beatforge]]


@pytest.fixture
def bot_on(settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis) -> BotFactory:
    """A fresh bot instance on the shared database, redis and the given fake (a restart is a second one)."""

    @asynccontextmanager
    async def start(fake: FakeDiscord, *, retry_base_s: float = 0.05, **overrides: Any) -> AsyncIterator[Beatforge]:
        bot = Beatforge(settings=settings.model_copy(update=overrides), redis=arq_redis, sessions=sessions)
        bot.delivery.retry_base_s = retry_base_s  # the schedule's shape is under test, not its pace
        async with connected(bot, fake):
            yield bot

    return start


async def finished(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], *, channel_id: int = DEFAULT_CHANNEL_ID
) -> int:
    job_id = await new_job(sessions, channel_id=channel_id)
    await finish(settings, sessions, job_id)
    return job_id


async def finish(settings: Settings, sessions: async_sessionmaker[AsyncSession], job_id: int) -> None:
    audio = ("a.wav", "audio", bytes(1_000), {"take": 1, "seed": 9})
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, [audio])


async def until(predicate: Callable[[], Any], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- the fake honours nonces like Discord ------------------------------------------------------------------------


async def test_the_fake_answers_a_repeated_nonce_with_the_first_message_and_creates_nothing(
    discord_bot: tuple[Beatforge, FakeDiscord],
) -> None:
    bot, fake = discord_bot
    channel = bot.get_partial_messageable(DEFAULT_CHANNEL_ID)
    first = await channel.send("one", nonce="bf1-abc")
    again = await channel.send("one, again", nonce="bf1-abc")
    other = await channel.send("two", nonce="bf2-abc")
    assert again.id == first.id and other.id != first.id
    assert [m["content"] for m in fake.messages_in(DEFAULT_CHANNEL_ID)] == ["one", "two"]
    assert all(r.json["enforce_nonce"] is True for r in fake.find("POST", CHANNEL_MESSAGES))
    await first.delete()
    with pytest.raises(discord.NotFound):  # Discord: the nonce of a message deleted shortly before
        await channel.send("one, once more", nonce="bf1-abc")


# --- 1. a failed first status edit ----------------------------------------------------------------------------


@pytest.mark.timeout(15)
async def test_a_job_whose_first_status_edit_failed_is_still_delivered_to_the_channel(
    bot_on: BotFactory, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with FakeDiscord() as fake, bot_on(fake) as bot:
        # The "queued" edit fails: the job is queued but has no status message.
        fake.fail_next("PATCH", ORIGINAL, 404, {"code": 10008, "message": "Unknown Message"})
        dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "x"}, bot=bot))
        await settle(bot)
        assert (await get_job(sessions, 1)).status_message_id is None
        assert not bot.status_board.answering(1)  # delivered as soon as it is done, no grace period waited out
        # and the user is not told something went wrong: the job is fine
        assert not [r for r in fake.requests if "went wrong" in str(r.json)]
        await finish(settings, sessions, 1)
        post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
        assert [f.filename for f in post.files] == ["a.wav"] and "message_reference" not in post.json
        job = await delivered_job(sessions, 1)
        assert job.result_message_id == int(post.response["id"])
        # The interaction still lives, so the answer nobody saw become "ready" too.
        await wait_for_edit(fake, lambda content: content.startswith("✅ Beat #1 is ready"))


# --- 2. each delivery on its own --------------------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_a_failing_delivery_delays_no_other_and_retries_on_a_growing_schedule(
    bot_on: BotFactory, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with FakeDiscord() as fake, bot_on(fake, retry_base_s=0.4) as bot:
        fake.fail_next("POST", SLOW_CHANNEL_MESSAGES, 503, times=2)
        failing = await finished(settings, sessions, channel_id=SLOW_CHANNEL_ID)
        started = time.monotonic()
        other = await finished(settings, sessions)
        await delivered_job(sessions, other)
        assert time.monotonic() - started < 1.5  # not behind the failing one's retries

        await until(lambda: _attempts(sessions, failing, 1))
        assert (await get_job(sessions, failing)).delivered_at is None
        job = await delivered_job(sessions, failing, timeout=10)
        posts = fake.find("POST", SLOW_CHANNEL_MESSAGES)
        assert [r.status for r in posts] == [503, 503, 200] and job.result_message_id == int(posts[-1].response["id"])
        assert job.delivery_attempts == 2
        gaps = [later.timestamp - earlier.timestamp for earlier, later in itertools.pairwise(posts)]
        assert gaps[0] >= 0.4 and gaps[1] >= 0.8  # 2 × base after the second failure, recorded on the row
        assert len({r.json["nonce"] for r in posts}) == 1 and len(fake.messages_in(SLOW_CHANNEL_ID)) == 1
        assert bot.watcher.deliveries == {}


async def _attempts(sessions: async_sessionmaker[AsyncSession], job_id: int, at_least: int) -> bool:
    return (await get_job(sessions, job_id)).delivery_attempts >= at_least


@pytest.mark.timeout(15)
async def test_a_stalled_delivery_holds_up_neither_other_results_nor_status_lines(
    bot_on: BotFactory, settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    async with FakeDiscord() as fake, bot_on(fake) as bot:
        dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "waiting"}, bot=bot))
        await queued_edit(fake, 0)
        await settle(bot)
        stall = fake.stall("POST", SLOW_CHANNEL_MESSAGES)
        slow = await finished(settings, sessions, channel_id=SLOW_CHANNEL_ID)
        await asyncio.wait_for(stall.arrived.wait(), 5)

        quick = await finished(settings, sessions)
        await delivered_job(sessions, quick)
        async with sessions() as session:
            await jobs.mark_running(session, 1, resolved_model="tiny")
        progress = JobProgress(stage="generating", done=1, total=2).model_dump_json()
        await arq_redis.set(PROGRESS_KEY.format(job_id=1), progress)
        await wait_for_edit(fake, lambda content: "generating… 50%" in content)
        assert slow in bot.watcher.deliveries and (await get_job(sessions, slow)).delivered_at is None

        stall.release()
        await delivered_job(sessions, slow)
        assert len(fake.messages_in(SLOW_CHANNEL_ID)) == 1


@pytest.mark.timeout(15)
async def test_deliveries_run_at_most_the_configured_number_at_once_one_per_job(
    bot_on: BotFactory, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # A channel each: discord.py itself sends one request at a time to a route it has not heard back from yet.
    channels = [SLOW_CHANNEL_ID + n for n in range(4)]
    async with FakeDiscord() as fake, bot_on(fake, delivery_concurrency=2) as bot:
        stall = fake.stall("POST", r"^/channels/\d+/messages$", times=10)
        try:
            job_ids = [await finished(settings, sessions, channel_id=channel) for channel in channels]
            await until(lambda: _held(stall, 2))
            await asyncio.sleep(0.5)  # several ticks: none starts a third delivery, nor a second for the same job
            assert stall.held == 2 and sorted(bot.watcher.deliveries) == job_ids[:2]
        finally:
            stall.release()
        for job_id in job_ids:
            await delivered_job(sessions, job_id)
        posts = fake.find("POST", r"^/channels/\d+/messages$")
        assert len(posts) == 4 and len({r.json["nonce"] for r in posts}) == 4
        assert [len(fake.messages_in(channel)) for channel in channels] == [1, 1, 1, 1]


async def _held(stall: Any, count: int) -> bool:
    return bool(stall.held >= count)


@pytest.mark.timeout(15)
async def test_a_restart_keeps_the_retry_schedule_on_the_row(
    bot_on: BotFactory, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with FakeDiscord() as fake:
        async with bot_on(fake, retry_base_s=60) as first:
            fake.fail_next("POST", CHANNEL_MESSAGES, 503)
            job_id = await finished(settings, sessions)
            await until(lambda: _attempts(sessions, job_id, 1))
            assert first.watcher.deliveries == {}
        async with bot_on(fake) as second:
            await asyncio.sleep(0.5)  # a fresh process: it must not retry before the time on the row
            assert [r.status for r in fake.find("POST", CHANNEL_MESSAGES)] == [503]
            async with sessions() as session:
                assert await jobs.list_undelivered(session) == []
                await jobs.delay_delivery(session, job_id, attempts=1, until=utcnow() - timedelta(seconds=1))
            job = await delivered_job(sessions, job_id)
            assert [r.status for r in fake.find("POST", CHANNEL_MESSAGES)] == [503, 200]
            assert job.result_message_id is not None and second.watcher.deliveries == {}


async def test_list_undelivered_returns_only_due_jobs_not_in_hand(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    due, later, in_hand = [await finished(settings, sessions) for _ in range(3)]
    now = utcnow()
    async with sessions() as session:
        await jobs.delay_delivery(session, later, attempts=1, until=now + timedelta(seconds=30))
        assert [j.id for j in await jobs.list_undelivered(session, exclude=[in_hand])] == [due]
        assert [j.id for j in await jobs.list_undelivered(session, now=now + timedelta(seconds=31))] == [
            due,
            later,
            in_hand,
        ]
        await jobs.mark_delivered(session, due)
        assert [j.id for j in await jobs.list_undelivered(session)] == [in_hand]


# --- 3. posted once, even when the bot dies after Discord accepted it ----------------------------------------------


@pytest.mark.timeout(20)
async def test_a_bot_killed_after_discord_accepted_the_result_posts_it_once_after_restart(
    bot_on: BotFactory,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never_recorded(*_: Any, **__: Any) -> None:
        await asyncio.Event().wait()  # the process dies before this write lands

    async with FakeDiscord() as fake:
        async with bot_on(fake) as first:
            monkeypatch.setattr(jobs, "set_result_message", never_recorded)
            job_id = await finished(settings, sessions)
            accepted = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
            assert accepted.status == 200 and job_id in first.watcher.deliveries
            await first.watcher.finish(grace_s=0.2)  # shutdown cancels the delivery stuck after the post
            assert first.watcher.deliveries == {}
        monkeypatch.undo()
        job = await get_job(sessions, job_id)
        assert job.result_message_id is None and job.delivered_at is None  # to the database, never posted

        async with bot_on(fake):
            job = await delivered_job(sessions, job_id)
        again = fake.find("POST", CHANNEL_MESSAGES)[-1]
    assert again.index != accepted.index and again.json["nonce"] == accepted.json["nonce"]
    assert len(fake.messages_in(DEFAULT_CHANNEL_ID)) == 1  # Discord answered the repeat with the first message
    assert job.result_message_id == int(accepted.response["id"]) == int(again.response["id"])
    assert not fake.find("POST", FOLLOWUP)


@pytest.mark.timeout(15)
async def test_a_failed_database_write_after_the_post_retries_without_posting_twice(
    bot_on: BotFactory,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = jobs.set_result_message
    failures = [OSError("disk I/O error")]

    async def flaky(session: AsyncSession, job_id: int, message_id: int) -> None:
        if failures:
            raise failures.pop()
        await record(session, job_id, message_id)

    monkeypatch.setattr(jobs, "set_result_message", flaky)
    async with FakeDiscord() as fake, bot_on(fake):
        job_id = await finished(settings, sessions)
        job = await delivered_job(sessions, job_id)
    posts = fake.find("POST", CHANNEL_MESSAGES)
    assert len(posts) == 2 and posts[0].json["nonce"] == posts[1].json["nonce"]
    assert len(fake.messages_in(DEFAULT_CHANNEL_ID)) == 1
    assert job.result_message_id == int(posts[0].response["id"]) and job.delivery_attempts == 1
