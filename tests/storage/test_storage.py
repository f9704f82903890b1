"""Storage against real SQLite files built by the real migrations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import (
    ArtifactKind,
    BeatParams,
    CoverParams,
    ErrorCode,
    JobStatus,
    LoopJobParams,
    LoopParams,
    MidiParams,
    Relation,
)
from migrations.runner import alembic_config, upgrade_locked
from storage import jobs
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.db import make_engine, make_sessionmaker
from storage.errors import JobNotFound, UnsafeArtifactPath
from storage.models import Base, Generation

PARAMS = BeatParams(prompt="lofi", duration_s=3, seed=5)
PARAMS_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


async def _create(sessions: async_sessionmaker[AsyncSession], user_id: int = 42) -> int:
    async with sessions() as session:
        job = await jobs.create_job(session, params=PARAMS, user_id=user_id, user_name="ana", guild_id=1, channel_id=2)
    return job.id


def test_migrations_match_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_locked(url)
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_locked(url)
    command.downgrade(alembic_config(url), "base")
    upgrade_locked(url)  # idempotent and repeatable


async def test_concurrent_start_up_migrations_do_not_collide(settings: Settings) -> None:
    await asyncio.gather(*(asyncio.to_thread(upgrade_locked, settings.database_url) for _ in range(4)))


async def test_job_lifecycle(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    job_id = await _create(sessions)
    store = ArtifactStore(tmp_path / "artifacts")
    with store.writing(job_id, "a.wav") as tmp:
        tmp.write_bytes(b"RIFF....")
    record = store.record(job_id, "a.wav", kind="audio")
    async with sessions() as session:
        assert (await jobs.get_job(session, job_id)).status is JobStatus.QUEUED
        assert await jobs.mark_running(session, job_id, resolved_model="tiny")
        await jobs.mark_done(session, job_id, artifacts=[record])
        await jobs.mark_done(session, job_id, artifacts=[record])  # a re-run replaces, never duplicates
        job = await jobs.get_job(session, job_id)
        assert [j.id for j in await jobs.list_undelivered(session)] == [job_id]
        await jobs.mark_delivered(session, job_id)
        assert await jobs.list_undelivered(session) == []
        assert not await jobs.mark_running(session, job_id)  # finished jobs are not restarted
    assert job.status is JobStatus.DONE and job.resolved_model == "tiny" and job.params == PARAMS
    assert job.artifacts == (record,) and record.bytes == 8 and len(record.sha256) == 64
    assert job.seconds_taken is not None and job.seconds_taken >= 0


async def test_failure_is_recorded_with_code_and_reason(sessions: async_sessionmaker[AsyncSession]) -> None:
    job_id = await _create(sessions)
    async with sessions() as session:
        await jobs.mark_failed(session, job_id, code=ErrorCode.MODEL_UNAVAILABLE, message="no weights")
        job = await jobs.get_job(session, job_id)
    assert (job.status, job.error_code, job.error) == (JobStatus.FAILED, ErrorCode.MODEL_UNAVAILABLE, "no weights")


async def test_users_are_created_once_and_renamed(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _create(sessions)
    async with sessions() as session:
        await jobs.create_job(session, params=PARAMS, user_id=42, user_name="ana2", guild_id=1, channel_id=2)
        assert await jobs.count_jobs(session) == 2
        assert await jobs.count_jobs(session, status=JobStatus.QUEUED) == 2


async def test_a_new_users_first_commands_at_once_both_succeed(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Two sessions create the same new user's first jobs concurrently: an upsert, not look-up-then-insert."""

    async def first_command(name: str) -> int:
        async with sessions() as session:
            job = await jobs.create_job(session, params=PARAMS, user_id=777, user_name=name, guild_id=1, channel_id=2)
            return job.id

    ids = await asyncio.gather(*(first_command(f"new{i}") for i in range(8)))
    assert len(set(ids)) == 8
    async with sessions() as session:
        activity = await jobs.user_activity(session, user_id=777, since=PARAMS_EPOCH)
    assert activity.active == 8


async def test_a_job_is_of_its_parameters_kind_and_reads_back_typed(sessions: async_sessionmaker[AsyncSession]) -> None:
    beat_id = await _create(sessions)
    follow_ups = [
        (CoverParams(prompt="lofi", seed=9), Relation.COVER),
        (LoopJobParams(prompt="lofi", seed=5, take=2, loop=LoopParams(bars=4)), Relation.LOOP),
        (MidiParams(prompt="lofi", seed=5, stems=True), Relation.MIDI),
        (PARAMS.model_copy(update={"seed": 6}), Relation.REROLL),
    ]
    async with sessions() as session:
        for params, relation in follow_ups:
            job = await jobs.create_job(
                session, params=params, user_id=42, user_name="ana", guild_id=1, channel_id=2,
                parent_id=beat_id, relation=relation,
            )  # fmt: skip
            read = await jobs.get_job(session, job.id)
            assert (read.kind, read.params, read.relation) == (params.kind, params, relation)
            assert type(read.params) is type(params) and read == job


async def test_the_model_of_a_job_is_what_ran_else_what_was_asked(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        asked = await jobs.create_job(
            session, params=PARAMS.model_copy(update={"model": "small"}), user_id=42, user_name="ana", guild_id=1,
            channel_id=2,
        )  # fmt: skip
        default = await jobs.create_job(session, params=PARAMS, user_id=42, user_name="ana", guild_id=1, channel_id=2)
        assert (asked.model_name, default.model_name) == ("small", None)  # None: the worker's default
        await jobs.mark_running(session, asked.id, resolved_model="small-ft")
        await jobs.mark_running(session, default.id, resolved_model="medium")
        ran = [await jobs.get_job(session, job_id) for job_id in (asked.id, default.id)]
    assert [job.model_name for job in ran] == ["small-ft", "medium"]


async def test_unknown_job(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        with pytest.raises(JobNotFound, match="#999"):
            await jobs.get_job(session, 999)


def test_artifact_paths_cannot_escape_the_store(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(UnsafeArtifactPath):
        store.resolve("../etc/passwd")


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.writing(1, "a.wav") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")
    assert list((tmp_path / "1").iterdir()) == []


async def test_a_cancel_committed_while_the_job_finishes_wins(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A cancel that commits while mark_done runs must win, not be overwritten by DONE: the canceller holds the
    row (PostgreSQL) or the database's write lock (SQLite, which ignores FOR UPDATE), mark_done's conditional
    write waits on it, then finds the job failed."""
    job_id = await _create(sessions)
    async with sessions() as session:
        await jobs.start_attempt(session, job_id)
    other = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(other)() as canceller:
            assert await canceller.execute(
                update(Generation).where(Generation.id == job_id).values(status=JobStatus.FAILED)
            )  # not committed yet: the write lock is the canceller's

            async def finish() -> bool:
                async with sessions() as session:
                    record = ArtifactRecord(kind=ArtifactKind.AUDIO, path=f"{job_id}/a.wav", bytes=1, sha256="0" * 64)
                    return await jobs.mark_done(session, job_id, artifacts=[record])

            finishing = asyncio.create_task(finish())
            await asyncio.sleep(0.3)  # mark_done waits on the lock
            assert not finishing.done()
            await canceller.commit()
            done = await finishing
    finally:
        await other.dispose()
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert (done, job.status, job.artifacts) == (False, JobStatus.FAILED, ())
