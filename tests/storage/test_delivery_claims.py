"""Delivery claims and the shard filter (storage/jobs.py) on SQLite and on a real PostgreSQL
(tests/support/postgres_server.py), with each "bot process" on its own engine: any number of bots claiming one row
at once leave exactly one winner, a delivery is marked once, a dead bot's claim is taken over once it expires, and a
bot reads only its own shards' rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.contract import ArtifactKind, BeatParams, JobStatus
from migrations.runner import upgrade_locked
from storage import claims, jobs
from storage.artifacts import ArtifactRecord
from storage.claims import Shards
from storage.db import make_engine, make_sessionmaker
from storage.models import Generation, utcnow

PARAMS = BeatParams(prompt="lofi", duration_s=3, seed=5)
RECORD = ArtifactRecord(kind=ArtifactKind.AUDIO, path="1/a.wav", bytes=8, sha256="0" * 64, meta=None)
LEASE = timedelta(minutes=5)
#: Bots (each its own engine, as separate processes have) racing for one row.
BOTS = 6
#: Real guild ids (snowflakes of 2016-2024), whose shards differ for the counts below.
GUILDS = (81384788765712384, 222078108977594368, 336642139381301249, 613425648685547541, 1009183617451622400)


@pytest.fixture(params=["sqlite", "postgresql"])
async def bots(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[async_sessionmaker[AsyncSession]]]:
    """``BOTS`` session factories, each on its own engine (connection pool), over one database built by the real
    migrations: SQLite in a file, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'beatforge.db'}"
    await asyncio.to_thread(upgrade_locked, url)
    engines = [make_engine(url) for _ in range(BOTS)]
    yield [make_sessionmaker(engine) for engine in engines]
    for engine in engines:
        await engine.dispose()


async def _finished(sessions: async_sessionmaker[AsyncSession], guild_id: int | None = 1) -> int:
    async with sessions() as session:
        job = await jobs.create_job(
            session, params=PARAMS, user_id=42, user_name="ana", guild_id=guild_id, channel_id=2
        )
        await jobs.mark_done(session, job.id, artifacts=[RECORD])
    return job.id


async def _claim(sessions: async_sessionmaker[AsyncSession], job_id: int, owner: str, **kwargs: object) -> bool:
    async with sessions() as session:
        return await claims.claim_delivery(session, job_id, owner=owner, lease=LEASE, **kwargs)  # type: ignore[arg-type]


async def _undelivered(sessions: async_sessionmaker[AsyncSession], **kwargs: object) -> list[int]:
    async with sessions() as session:
        return [job.id for job in await jobs.list_undelivered(session, **kwargs)]  # type: ignore[arg-type]


async def test_of_many_bots_claiming_one_job_at_once_exactly_one_wins(
    bots: list[async_sessionmaker[AsyncSession]],
) -> None:
    for _ in range(5):
        job_id = await _finished(bots[0])
        won = await asyncio.gather(*(_claim(sessions, job_id, f"bot-{i}") for i, sessions in enumerate(bots)))
        assert sorted(won) == [False] * (BOTS - 1) + [True]
        winner = f"bot-{won.index(True)}"
        async with bots[0]() as session:
            job = await jobs.get_job(session, job_id)
        assert job.delivery_claimed_by == winner and job.delivery_claimed_until is not None
        # The winner's list still has it (its own claim), every other bot's does not.
        for i, sessions in enumerate(bots):
            assert (job_id in await _undelivered(sessions, owner=f"bot-{i}")) is (f"bot-{i}" == winner)


async def test_a_job_marked_delivered_by_two_bots_at_once_counts_once(
    bots: list[async_sessionmaker[AsyncSession]],
) -> None:
    for _ in range(5):
        job_id = await _finished(bots[0])

        async def mark(sessions: async_sessionmaker[AsyncSession], job_id: int = job_id) -> bool:
            async with sessions() as session:
                return await jobs.mark_delivered(session, job_id)

        assert sorted(await asyncio.gather(*(mark(s) for s in bots))) == [False] * (BOTS - 1) + [True]
        async with bots[0]() as session:
            job = await jobs.get_job(session, job_id)
        assert job.delivered_at is not None and job.delivery_claimed_by is None
        assert not await _claim(bots[1], job_id, "late-bot")  # a delivered job is never claimed again


async def test_a_dead_bots_claim_is_taken_over_once_it_expires(bots: list[async_sessionmaker[AsyncSession]]) -> None:
    dead, alive = bots[0], bots[1]
    job_id = await _finished(dead)
    assert await _claim(dead, job_id, "dead")
    assert await _undelivered(alive, owner="alive") == []  # hidden while the dead bot's lease runs
    assert not await _claim(alive, job_id, "alive")
    assert await _claim(dead, job_id, "dead")  # the holder renews its own claim
    expired = utcnow() + LEASE + timedelta(seconds=1)
    assert await _undelivered(alive, owner="alive", now=expired) == [job_id]
    racers = [_claim(sessions, job_id, f"heir-{i}", now=expired) for i, sessions in enumerate(bots[1:])]
    assert sorted(await asyncio.gather(*racers)) == [False] * (BOTS - 2) + [True]  # one heir, however many try
    assert not await _claim(dead, job_id, "dead")  # the dead bot, back, cannot take it back while the heir holds it


async def test_a_released_or_failed_attempt_frees_the_job_at_once_but_never_anothers_claim(
    bots: list[async_sessionmaker[AsyncSession]],
) -> None:
    first, second = bots[0], bots[1]
    job_id = await _finished(first)
    assert await _claim(first, job_id, "first")
    async with second() as session:
        assert not await claims.release_delivery(session, job_id, owner="second")  # not its claim
        await jobs.delay_delivery(session, job_id, attempts=1, until=utcnow(), owner="second")
    assert not await _claim(second, job_id, "second")  # still first's
    async with first() as session:
        await jobs.delay_delivery(session, job_id, attempts=1, until=utcnow(), owner="first")
    assert await _claim(second, job_id, "second")  # the failed attempt let it go: the next is anyone's
    async with second() as session:
        assert await claims.release_delivery(session, job_id, owner="second")
        job = await jobs.get_job(session, job_id)
    assert (job.delivery_attempts, job.delivery_claimed_by, job.delivery_claimed_until) == (1, None, None)
    assert await _undelivered(first, owner="first") == [job_id]


@pytest.mark.parametrize(("count", "ids"), [(1, {0}), (2, {1}), (3, {0, 2}), (4, {1, 3}), (7, {0, 1, 2, 3, 4, 5, 6})])
async def test_a_bot_reads_only_its_shards_guilds_and_shard_0_the_jobs_without_one(
    bots: list[async_sessionmaker[AsyncSession]], count: int, ids: set[int]
) -> None:
    by_guild = {guild: await _finished(bots[0], guild) for guild in (*GUILDS, None)}
    shards = Shards(count=count, ids=frozenset(ids))
    expected = sorted(job for guild, job in by_guild.items() if shards.owns(guild))
    assert expected == sorted(
        job for guild, job in by_guild.items() if (0 if guild is None else (guild >> 22) % count) in ids
    )
    assert await _undelivered(bots[1], shards=shards) == expected
    async with bots[1]() as session:  # the same jobs as running ones with status lines: list_active's filter too
        await session.execute(update(Generation).values(status=JobStatus.RUNNING, status_message_id=99))
        await session.commit()
        assert sorted(job.id for job in await jobs.list_active(session, shards=shards)) == expected
        assert len(await jobs.list_active(session)) == len(by_guild)


async def test_the_shards_of_all_processes_split_the_jobs_between_them(
    bots: list[async_sessionmaker[AsyncSession]],
) -> None:
    """Two processes, shards {0, 1} and {2} of 3: every job is read by exactly one of them."""
    job_ids = [await _finished(bots[0], guild) for guild in (*GUILDS, None)]
    first = await _undelivered(bots[1], shards=Shards(count=3, ids=frozenset({0, 1})))
    second = await _undelivered(bots[2], shards=Shards(count=3, ids=frozenset({2})))
    assert sorted(first + second) == sorted(job_ids) and not set(first) & set(second)
    assert first and second
