"""Storage on a real PostgreSQL (tests/support/postgres_server.py): the same migrations, schema and job operations as
on SQLite, and the races two processes can run on the same row."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, types, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from beatforge.contract import ArtifactKind, BeatParams, ErrorCode, JobStatus
from migrations.runner import alembic_config, upgrade_locked
from storage import claims, jobs
from storage.artifacts import ArtifactRecord
from storage.db import make_engine, make_sessionmaker
from storage.models import Base, Generation, utcnow

ROOT = Path(__file__).resolve().parents[2]

PARAMS = BeatParams(prompt="lofi", duration_s=3, seed=5)
RECORD = ArtifactRecord(kind=ArtifactKind.AUDIO, path="1/a.wav", bytes=8, sha256="0" * 64, meta=None)


@pytest.fixture
async def pg_sessions(postgres_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions over a fresh PostgreSQL database built by the real Alembic migrations (never create_all)."""
    await asyncio.to_thread(upgrade_locked, postgres_url)
    engine = make_engine(postgres_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def second_engine(postgres_url: str, pg_sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncEngine]:
    """Another engine (its own connection pool) on the same database: the second process of a race."""
    engine = make_engine(postgres_url)
    yield engine
    await engine.dispose()


async def _create(sessions: async_sessionmaker[AsyncSession], user_id: int = 42) -> int:
    async with sessions() as session:
        job = await jobs.create_job(session, params=PARAMS, user_id=user_id, user_name="ana", guild_id=1, channel_id=2)
    return job.id


# --- (a) the migrations -----------------------------------------------------------------------------------------


def _current_and_diff(conn: Connection) -> tuple[str | None, list[Any]]:
    context = MigrationContext.configure(conn)
    return context.get_current_revision(), compare_metadata(context, Base.metadata)


async def test_the_migrations_run_to_head_and_build_the_models(postgres_url: str) -> None:
    await asyncio.to_thread(upgrade_locked, postgres_url)
    engine = make_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            current, diff = await conn.run_sync(_current_and_diff)
    finally:
        await engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(postgres_url)).get_current_head()
    assert current == head
    assert diff == []


def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    # the bot and the workers all run the migrations at start-up; separate processes, as in production (Alembic's
    # context is one per process)
    code = "import sys; from migrations.runner import upgrade_locked; upgrade_locked(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, postgres_url], stderr=subprocess.PIPE, cwd=ROOT) for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors


async def test_the_migrations_go_down_and_up_again(postgres_url: str) -> None:
    """Every downgrade is real DDL on PostgreSQL too (SQLite runs them in batch mode: copy-and-rename tables)."""
    await asyncio.to_thread(upgrade_locked, postgres_url)
    await asyncio.to_thread(command.downgrade, alembic_config(postgres_url), "base")
    await asyncio.to_thread(upgrade_locked, postgres_url)


# --- (b) the same schema as SQLite ------------------------------------------------------------------------------


def _type_name(column_type: types.TypeEngine[Any]) -> str:
    """A reflected type in dialect-neutral words.

    The differences this hides are the dialects', not ours: SQLite reflects ``DateTime(timezone=True)`` as a zoneless
    DATETIME (it stores no zone; ``UTCDateTime`` adds UTC back on read), PostgreSQL as TIMESTAMP WITH TIME ZONE; and
    ``Float`` comes back from PostgreSQL as DOUBLE PRECISION (what ``FLOAT`` means there), from SQLite as FLOAT.
    """
    generic = column_type.as_generic()
    if isinstance(generic, types.DateTime):
        return "DATETIME"
    if isinstance(generic, types.Float):
        return "FLOAT"
    if isinstance(generic, types.String) and not isinstance(generic, types.Text | types.Enum):
        return f"VARCHAR({generic.length})"
    return type(generic).__name__.upper()


def _schema(conn: Connection) -> dict[str, Any]:
    """Tables, columns (normalised type, nullability), primary keys, indexes, unique constraints and foreign keys.

    Left out: column comments (SQLite keeps none), server default expressions (each dialect quotes and casts them
    its own way; ``compare_metadata`` above already checks them against the models), and the indexes PostgreSQL
    builds behind a unique constraint (SQLite hides its own; the constraint is compared instead).
    """
    inspector = inspect(conn)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        indexes = {
            (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
            for ix in inspector.get_indexes(table)
            if "duplicates_constraint" not in ix
        }
        schema[table] = {
            "columns": {c["name"]: (_type_name(c["type"]), c["nullable"]) for c in inspector.get_columns(table)},
            "primary_key": tuple(inspector.get_pk_constraint(table)["constrained_columns"]),
            "indexes": indexes,
            "unique": {(u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)},
            "foreign_keys": {
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    (fk.get("options") or {}).get("ondelete"),
                )
                for fk in inspector.get_foreign_keys(table)
            },
        }
    return schema


def _timestamp_zones(conn: Connection) -> set[bool]:
    return {
        bool(getattr(c["type"], "timezone", False))
        for table in inspect(conn).get_table_names()
        for c in inspect(conn).get_columns(table)
        if isinstance(c["type"].as_generic(), types.DateTime)
    }


async def _reflect(url: str) -> tuple[dict[str, Any], set[bool]]:
    await asyncio.to_thread(upgrade_locked, url)
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema), await conn.run_sync(_timestamp_zones)
    finally:
        await engine.dispose()


async def test_postgresql_gets_the_same_schema_as_sqlite(postgres_url: str, tmp_path: Path) -> None:
    # One after the other: Alembic's ``context`` is process-global, so two upgrades in threads at once trample
    # each other (upgrade_locked serialises SQLite ones with a file lock, but takes none for PostgreSQL).
    postgres, zones = await _reflect(postgres_url)
    sqlite, _ = await _reflect(f"sqlite+aiosqlite:///{tmp_path / 'beatforge.db'}")
    assert postgres.keys() == sqlite.keys()
    for table in sqlite:
        assert postgres[table] == sqlite[table], table
    assert zones == {True}  # every timestamp keeps its zone on PostgreSQL: UTCDateTime's impl asks for one


# --- (c) the job operations ---------------------------------------------------------------------------------------


async def test_a_job_runs_finishes_and_is_delivered(pg_sessions: async_sessionmaker[AsyncSession]) -> None:
    job_id = await _create(pg_sessions)
    async with pg_sessions() as session:
        attempt = await jobs.start_attempt(session, job_id)
        assert attempt is not None and (attempt.number, attempt.user_id, attempt.guild_id) == (1, 42, 1)
        await jobs.heartbeat(session, [job_id])
        assert await jobs.mark_done(session, job_id, artifacts=[RECORD])
        assert await jobs.mark_done(session, job_id, artifacts=[RECORD])  # a re-run replaces, never duplicates
        assert [j.id for j in await jobs.list_undelivered(session)] == [job_id]
        await jobs.delay_delivery(session, job_id, attempts=1, until=utcnow() + timedelta(hours=1))
        assert await jobs.list_undelivered(session) == []  # not due yet
        assert [j.id for j in await jobs.list_undelivered(session, now=utcnow() + timedelta(hours=2))] == [job_id]
        await jobs.mark_delivered(session, job_id)
        assert await jobs.list_undelivered(session, now=utcnow() + timedelta(hours=2)) == []
        assert await jobs.start_attempt(session, job_id) is None  # finished jobs are not restarted
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.DONE and job.params == PARAMS and job.artifacts == (RECORD,)
    assert job.delivery_attempts == 1 and job.delivered_at is not None and job.delivered_at.tzinfo is not None
    assert job.seconds_taken is not None and job.seconds_taken >= 0


async def test_a_stale_job_is_taken_back_and_cancelled(pg_sessions: async_sessionmaker[AsyncSession]) -> None:
    job_id = await _create(pg_sessions)
    async with pg_sessions() as session:
        await jobs.start_attempt(session, job_id)
        assert await jobs.list_stale_running(session, silent_since=utcnow() - timedelta(minutes=1)) == []
        later = utcnow() + timedelta(minutes=1)
        assert [j.id for j in await jobs.list_stale_running(session, silent_since=later)] == [job_id]
        assert await jobs.take_back(session, job_id, silent_since=later)
        assert [j.id for j in await jobs.list_queued(session, queued_before=later)] == [job_id]
        assert await jobs.cancel(session, job_id, by="ana")
        assert not await jobs.cancel(session, job_id, by="ana")
        job = await jobs.get_job(session, job_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, ErrorCode.CANCELLED)


async def test_a_new_users_first_commands_at_once_both_succeed(pg_sessions: async_sessionmaker[AsyncSession]) -> None:
    """The user upsert's PostgreSQL branch (ON CONFLICT DO UPDATE), under eight concurrent first commands."""
    ids = await asyncio.gather(*(_create(pg_sessions, user_id=777) for _ in range(8)))
    assert len(set(ids)) == 8
    async with pg_sessions() as session:
        activity = await jobs.user_activity(session, user_id=777, since=utcnow() - timedelta(hours=1))
    assert (activity.active, activity.recent) == (8, 8)
    assert activity.oldest_recent is not None and activity.oldest_recent.tzinfo is not None


# --- (d) races between two processes ------------------------------------------------------------------------------


async def test_two_reconcilers_taking_back_the_same_job_one_wins(
    pg_sessions: async_sessionmaker[AsyncSession], second_engine: AsyncEngine
) -> None:
    """Only the caller that gets True re-queues the job (storage/reconcile.py): never both."""
    other = make_sessionmaker(second_engine)
    for _ in range(5):
        job_id = await _create(pg_sessions)
        async with pg_sessions() as session:
            await jobs.start_attempt(session, job_id)
        later = utcnow() + timedelta(minutes=1)

        async def take_back(
            sessions: async_sessionmaker[AsyncSession], job_id: int = job_id, later: datetime = later
        ) -> bool:
            async with sessions() as session:
                return await jobs.take_back(session, job_id, silent_since=later)

        assert sorted(await asyncio.gather(take_back(pg_sessions), take_back(other))) == [False, True]


async def test_two_cancels_of_the_same_job_one_wins(
    pg_sessions: async_sessionmaker[AsyncSession], second_engine: AsyncEngine
) -> None:
    other = make_sessionmaker(second_engine)
    for _ in range(5):
        job_id = await _create(pg_sessions)

        async def cancel(sessions: async_sessionmaker[AsyncSession], job_id: int = job_id) -> bool:
            async with sessions() as session:
                return await jobs.cancel(session, job_id, by="ana")

        assert sorted(await asyncio.gather(cancel(pg_sessions), cancel(other))) == [False, True]


async def test_two_workers_starting_the_same_job_count_two_tries(
    pg_sessions: async_sessionmaker[AsyncSession], second_engine: AsyncEngine
) -> None:
    """start_attempt lets a running job be taken again (a re-run after a crash), so both may start it; what must hold
    is that the tries are counted in the row (attempts + 1 in SQL), never lost to a read-then-write."""
    other = make_sessionmaker(second_engine)
    for _ in range(5):
        job_id = await _create(pg_sessions)

        async def start(sessions: async_sessionmaker[AsyncSession], job_id: int = job_id) -> int:
            async with sessions() as session:
                attempt = await jobs.start_attempt(session, job_id)
            assert attempt is not None
            return attempt.number

        assert sorted(await asyncio.gather(start(pg_sessions), start(other))) == [1, 2]


async def test_two_deliveries_of_the_same_job_leave_it_delivered_once(
    pg_sessions: async_sessionmaker[AsyncSession], second_engine: AsyncEngine
) -> None:
    """Two bots that both posted (one's claim ran out mid-upload) mark it at once: exactly one counts, no deadlock."""
    other = make_sessionmaker(second_engine)
    for _ in range(5):
        job_id = await _create(pg_sessions)
        async with pg_sessions() as session:
            await jobs.mark_done(session, job_id, artifacts=[RECORD])

        async def deliver(sessions: async_sessionmaker[AsyncSession], job_id: int = job_id) -> bool:
            async with sessions() as session:
                return await jobs.mark_delivered(session, job_id)

        assert sorted(await asyncio.gather(deliver(pg_sessions), deliver(other))) == [False, True]
        async with pg_sessions() as session:
            assert await jobs.list_undelivered(session) == []
            assert (await jobs.get_job(session, job_id)).delivered_at is not None


async def test_a_claim_waiting_on_another_bots_uncommitted_claim_loses(
    pg_sessions: async_sessionmaker[AsyncSession], second_engine: AsyncEngine
) -> None:
    """The race made deterministic: one bot's claim holds the row (not committed yet) while another's UPDATE runs.
    The second waits, then re-checks its condition against the committed claim and matches nothing; a
    read-then-write claim would have seen the row free and won too."""
    job_id = await _create(pg_sessions)
    async with pg_sessions() as session:
        await jobs.mark_done(session, job_id, artifacts=[RECORD])
    async with make_sessionmaker(second_engine)() as holder:
        await holder.execute(
            update(Generation)
            .where(Generation.id == job_id)
            .values(delivery_claimed_by="first", delivery_claimed_until=utcnow() + timedelta(minutes=5))
        )  # not committed yet: the row is locked

        async def claim() -> bool:
            async with pg_sessions() as session:
                return await claims.claim_delivery(session, job_id, owner="second", lease=timedelta(minutes=5))

        claiming = asyncio.create_task(claim())
        await asyncio.sleep(0.3)  # the second claim has found the row and waits on the lock
        assert not claiming.done()
        await holder.commit()
        won = await claiming
    async with pg_sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert (won, job.delivery_claimed_by) == (False, "first")
