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

from beatforge.config import Settings
from beatforge.contract import PREVIEW_KEY, PROGRESS_KEY, JobProgress
from bot.app import Beatforge
from storage import jobs
from storage.artifacts import ArtifactStore
from tests.support.bot import ORIGINAL, delivered_job, finish_job, get_job, queued_edit, wav_bytes
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


async def test_the_first_seconds_go_on_the_status_line_once_and_the_result_takes_them_off(
    discord_bot: tuple[Beatforge, FakeDiscord],
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    settings: Settings,
) -> None:
    bot, fake = discord_bot
    await bot.watcher.finish()  # this test runs the ticks itself
    await _queue_beats(bot, fake, 1)
    async with sessions() as session:
        await jobs.mark_running(session, 1, resolved_model="tiny")
    preview = b"OggS preview bytes"
    await arq_redis.set(PREVIEW_KEY.format(job_id=1), preview)
    progress = JobProgress(stage="generating", done=3, total=10, preview=True)
    await arq_redis.set(PROGRESS_KEY.format(job_id=1), progress.model_dump_json())

    since = len(fake.requests)
    await bot.watcher.tick()
    (edit,) = [r for r in fake.find("PATCH", ORIGINAL) if r.index >= since]
    assert [(f.filename, f.data) for f in edit.files] == [("beatforge-1-preview.ogg", preview)]
    assert edit.json["content"] == "🎶 Beat #1 — generating… 30%\n🎧 The first seconds, while the rest is made:"

    later = JobProgress(stage="generating", done=6, total=10, preview=True)
    await arq_redis.set(PROGRESS_KEY.format(job_id=1), later.model_dump_json())
    since = len(fake.requests)
    await bot.watcher.tick()
    (edit,) = [r for r in fake.find("PATCH", ORIGINAL) if r.index >= since]
    assert edit.files == [] and "attachments" not in edit.json  # the preview stays as it is
    assert edit.json["content"].startswith("🎶 Beat #1 — generating… 60%\n🎧")

    await finish_job(sessions, ArtifactStore(settings.artifact_dir), 1, [("take1.wav", "audio", wav_bytes(32_000), {})])
    since = len(fake.requests)
    await bot.watcher.tick()
    await delivered_job(sessions, 1)
    final = [
        r
        for r in [r for r in fake.find("PATCH", ORIGINAL) if r.index >= since]
        if r.json and r.json.get("content", "").startswith("✅")
    ]
    assert final and final[-1].json["attachments"] == []  # the result replaces the preview
