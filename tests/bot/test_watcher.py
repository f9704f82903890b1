"""The job watcher's hot path: a tick reads the database once and the queue once, however many jobs are active,
and every status line takes its place in line, wait and progress from that one read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.asyncio.connection import AbstractConnection
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from beatforge.contract import PROGRESS_KEY, JobProgress
from bot.app import Beatforge
from storage import jobs
from tests.support.bot import get_job, queued_edit
from tests.support.discord_harness import FakeDiscord, dispatch_gateway, settle, slash_command_payload


class Counts:
    redis_round_trips = 0
    sql_statements = 0


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch, sessions: async_sessionmaker[AsyncSession]) -> Iterator[Counts]:
    """Every request sent to redis (a pipeline is one) and every SQL statement, from now on."""
    found = Counts()
    send = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        found.redis_round_trips += 1
        await send(self, *args, **kwargs)

    def statement(*_: Any) -> None:
        found.sql_statements += 1

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    engine: AsyncEngine = sessions.kw["bind"]
    event.listen(engine.sync_engine, "before_cursor_execute", statement)
    yield found
    event.remove(engine.sync_engine, "before_cursor_execute", statement)


async def _queue_beats(bot: Beatforge, fake: FakeDiscord, n: int) -> None:
    for i in range(n):  # each by someone else: a user may have 3 jobs at once
        since = len(fake.requests)
        payload = slash_command_payload("beat", {"prompt": f"beat {i}"}, bot=bot, user_id=100 + i)
        dispatch_gateway(bot, "INTERACTION_CREATE", payload)
        await queued_edit(fake, since)
    await settle(bot)


@pytest.mark.parametrize("active", [2, 8])
async def test_a_tick_is_one_redis_round_trip_and_the_same_sql_whatever_the_number_of_jobs(
    discord_bot: tuple[Beatforge, FakeDiscord],
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    counts: Counts,
    active: int,
) -> None:
    bot, fake = discord_bot
    await bot.watcher.finish()  # this test runs the ticks itself
    await _queue_beats(bot, fake, active)
    # The first job is taken by a worker, halfway through; the others wait behind it.
    async with sessions() as session:
        await jobs.mark_running(session, 1, resolved_model="tiny")
    await arq_redis.set(
        PROGRESS_KEY.format(job_id=1), JobProgress(stage="generating", done=1, total=2).model_dump_json()
    )

    before = (counts.redis_round_trips, counts.sql_statements)
    await bot.watcher.tick()
    round_trips, statements = counts.redis_round_trips - before[0], counts.sql_statements - before[1]

    assert round_trips == 1  # order, speeds, the workers' default model and progress, in one pipeline
    assert statements == 3  # active jobs and their files, undelivered jobs (none here)
    shown = bot.status_board.shown
    assert shown[1] == "🎶 Beat #1 — generating… 50%"
    for job_id in range(2, active + 1):
        assert shown[job_id].startswith(f"⏳ Beat #{job_id} queued — #{job_id} in line")
    assert (await get_job(sessions, 1)).status_message_id is not None
