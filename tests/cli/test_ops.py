"""``beatforge status``, ``gc`` and ``doctor`` through ``cli.main.main``, over a real redis, a real migrated SQLite
database and real files."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from redis import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings, get_settings
from beatforge.contract import ArtifactKind, BeatParams, ErrorCode
from beatforge.fleet import GpuMemory, WorkerInfo, worker_key
from cli.main import main
from storage import jobs
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.db import make_engine, make_sessionmaker
from storage.models import Generation

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings) -> Iterator[None]:
    """The CLI reads its settings from the environment, as in production."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("BEATFORGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BEATFORGE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BEATFORGE_ARTIFACT_DIR", str(settings.artifact_dir))
    monkeypatch.setenv("BEATFORGE_REDIS_URL", settings.redis_url)
    get_settings.cache_clear()
    assert main(["db", "upgrade"]) == 0
    yield
    get_settings.cache_clear()


def with_db(settings: Settings, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    async def go() -> T:
        engine = make_engine(settings.database_url)
        try:
            return await work(make_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def done_job(settings: Settings, *, finished: datetime, size: int = 1000) -> int:
    async def work(sessions: async_sessionmaker[AsyncSession]) -> int:
        async with sessions() as session:
            params = BeatParams(prompt="x", duration_s=2, seed=1)
            job = await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=1, channel_id=1)
            path = ArtifactStore(settings.artifact_dir).resolve(f"{job.id}/take1.wav")
            path.parent.mkdir(parents=True)
            path.write_bytes(b"x" * size)
            record = ArtifactRecord(kind=ArtifactKind.AUDIO, path=f"{job.id}/take1.wav", bytes=size, sha256="0" * 64)
            await jobs.mark_running(session, job.id)
            await jobs.mark_done(session, job.id, artifacts=[record])
            await session.execute(update(Generation).where(Generation.id == job.id).values(finished_at=finished))
            await session.commit()
            return job.id

    return with_db(settings, work)


def test_status_prints_workers_queue_and_job_counts(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    worker = WorkerInfo(
        "gpu1-7", "gpu1", 7, 0.0, 1.0, settings.queue_name, "cuda", 2, 8, 5, 1, GpuMemory(2**30, 2**31, 2**32)
    )
    client = Redis.from_url(settings.redis_url)
    client.set(worker_key(worker.id), worker.to_json(), ex=30)
    client.close()

    async def fail_one(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session:
            params = BeatParams(prompt="x", duration_s=2, seed=1)
            job = await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=1, channel_id=1)
            await jobs.mark_failed(session, job.id, code=ErrorCode.MODEL_UNAVAILABLE, message="no model")
            await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=1, channel_id=1)

    with_db(settings, fail_one)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "workers alive: 1" in out
    assert "gpu1-7 (cuda, queue beatforge:gpu): 2/8 jobs running, 5 finished, 1 interrupted" in out
    assert "GPU 1.0 GiB allocated, 2.0 GiB reserved of 4.0 GiB" in out
    assert "queue beatforge:gpu: 0 waiting" in out
    assert "database: 1 queued, 0 running" in out
    assert "last hour: 0 done, 1 failed\n  model_unavailable: 1" in out

    assert main(["status", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["workers"][0]["gpu"]["total"] == 2**32 and facts["jobs"]["failures_by_code"] == {
        "model_unavailable": 1
    }


def test_status_with_redis_down_still_shows_the_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BEATFORGE_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "redis: UNREACHABLE" in out and "database: 0 queued, 0 running" in out


def test_gc_dry_run_lists_then_gc_removes(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    old = done_job(settings, finished=datetime.now(UTC) - timedelta(days=10))
    done_job(settings, finished=datetime.now(UTC))
    file = ArtifactStore(settings.artifact_dir).resolve(f"{old}/take1.wav")

    assert main(["gc", "--dry-run", "--max-age-days", "7"]) == 0
    out = capsys.readouterr().out
    assert f"would remove {old}/take1.wav (job #{old}): 1000 bytes, age" in out
    assert "would remove 1 files, 1000 bytes" in out and file.exists()

    assert main(["gc"]) == 0  # the default age (30 days) keeps it
    assert "removed 0 files" in capsys.readouterr().out and file.exists()
    assert main(["gc", "--max-age-days", "7"]) == 0
    assert "removed 1 files, 1000 bytes" in capsys.readouterr().out and not file.exists()
    assert main(["gc", "--max-age-days", "-1"]) == 1


def test_doctor_exit_status_says_whether_anything_is_wrong(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    job = done_job(settings, finished=datetime.now(UTC))
    assert main(["doctor"]) == 0
    assert "clean" in capsys.readouterr().out

    stray = ArtifactStore(settings.artifact_dir).resolve(f"{job}/stray.bin")
    stray.write_bytes(b"abc")
    stamp = (datetime.now(UTC) - timedelta(days=1)).timestamp()
    os.utime(stray, (stamp, stamp))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"orphan file: {job}/stray.bin: no row refers to it (3 bytes) [--repair deletes the file]" in out
    assert "1 problems found; --repair would fix 1" in out and stray.exists()

    assert main(["doctor", "--repair"]) == 0
    assert "1 problems found, 1 repaired, 0 left for an admin" in capsys.readouterr().out and not stray.exists()
    assert main(["doctor"]) == 0


def test_worker_check_reports_only_this_machines_workers(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The container healthcheck: healthy while a worker on this host reports itself, not on another's report."""
    import socket

    assert main(["worker", "--check"]) == 1
    assert "no worker on" in capsys.readouterr().out
    client = Redis.from_url(settings.redis_url)
    elsewhere = WorkerInfo("other-1", "other", 1, 0.0, 1.0, settings.queue_name, "cuda", 0, 8, 0, 0, None)
    client.set(worker_key(elsewhere.id), elsewhere.to_json(), ex=30)
    assert main(["worker", "--check"]) == 1
    host = socket.gethostname()
    here = WorkerInfo(f"{host}-9", host, 9, 0.0, 1.0, settings.queue_name, "cpu", 1, 8, 4, 0, None)
    client.set(worker_key(here.id), here.to_json(), ex=30)
    client.close()
    capsys.readouterr()
    assert main(["worker", "--check"]) == 0
    assert f"ok: worker {host}-9, 1 job(s) running, 4 done" in capsys.readouterr().out
