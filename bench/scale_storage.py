"""The database and artifact storage at scale: SQLite against PostgreSQL on the history write path and on the job
watcher's poll with 10,000 jobs in the table, and a local folder against S3 for artifact writes.

The database part writes what /beat writes (the user, then the job row; then the worker's start and finish), one
job after another and from 4 writers at once, then times the queries the bot's watcher runs every second
(``list_active``, ``list_undelivered``) and /history's page once the table holds ``--rows`` jobs. Both databases
run on this machine: PostgreSQL in a throwaway cluster (tests/support/postgres_server.py), SQLite in a file.

The storage part times what a worker does for a 5 MB file: the local back end writes it atomically and records
it; the s3 back end also uploads it and checks the object (PUT + HEAD), against moto's server on loopback, so
the network and S3's own latency are not in it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import insert

from beatforge.contract import ArtifactKind, BeatParams, JobStatus
from migrations.runner import upgrade_locked
from storage import jobs
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.db import make_engine, make_sessionmaker
from storage.models import Generation, User, utcnow

PARAMS = BeatParams(prompt="bench beat", duration_s=10, seed=1)


async def _timed(calls: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    """Milliseconds of each of ``calls`` sequential calls."""
    out = []
    for i in range(calls):
        started = time.perf_counter()
        await call(i)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _ms(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return f"{statistics.median(samples):8.2f} ms {p99:8.2f} ms"


async def _fill(url: str, rows: int) -> None:
    """``rows`` finished jobs of 200 users in a few statements (the fill is not what is measured)."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(User), [{"id": u, "name": f"user{u}"} for u in range(1000, 1200)])
            now = utcnow()
            batch = [
                {
                    "kind": "beat",
                    "params": PARAMS.model_dump(mode="json"),
                    "user_id": 1000 + i % 200,
                    "guild_id": 1 + i % 50,
                    "channel_id": 1,
                    "status": JobStatus.DONE,
                    "queue_job_id": f"fill-{i}",
                    "queued_at": now,
                    "finished_at": now,
                    "delivered_at": now,
                }
                for i in range(rows)
            ]
            for start in range(0, rows, 2000):
                await conn.execute(insert(Generation), batch[start : start + 2000])
    finally:
        await engine.dispose()


async def bench_database(name: str, url: str, *, rows: int, writes: int) -> list[str]:
    await asyncio.to_thread(upgrade_locked, url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    record = ArtifactRecord(kind=ArtifactKind.AUDIO, path="x/beat.wav", bytes=1, sha256="0" * 64)

    async def write(i: int) -> None:
        async with sessions() as session:
            job = await jobs.create_job(
                session, params=PARAMS, user_id=i % 20, user_name=f"u{i % 20}", guild_id=1, channel_id=1
            )
            await jobs.start_attempt(session, job.id)
            await jobs.mark_done(session, job.id, artifacts=[record])

    lines = []
    try:
        sequential = await _timed(writes, write)
        started = time.perf_counter()
        await asyncio.gather(*(_timed(writes // 4, lambda i, w=w: write(10_000 + w * 1000 + i)) for w in range(4)))
        concurrent_s = time.perf_counter() - started
        lines.append(f"{name:11} job written (create, start, done)      {_ms(sequential)}")
        lines.append(f"{name:11} 4 writers at once: {writes / concurrent_s:7.1f} jobs/s")
        await _fill(url, rows)

        async def poll(_: int) -> None:
            async with sessions() as session:
                await jobs.list_active(session)
                await jobs.list_undelivered(session)

        async def history(i: int) -> None:
            async with sessions() as session:
                await jobs.list_history(session, user_id=1000 + i % 200, guild_id=1 + i % 50)

        lines.append(f"{name:11} watcher poll, {rows:,} jobs in the table    {_ms(await _timed(200, poll))}")
        lines.append(f"{name:11} /history page, {rows:,} jobs in the table   {_ms(await _timed(200, history))}")
    finally:
        await engine.dispose()
    return lines


async def bench_artifacts(run_dir: Path, *, endpoint: str, files: int) -> list[str]:
    """A 5 MB artifact written and recorded (local), and also uploaded and checked (s3)."""
    from storage.backends import LocalArtifacts, S3Artifacts
    from storage.objects import S3Target, make_client

    payload = os.urandom(5 * 1024 * 1024)
    target = S3Target(bucket="bench", prefix="artifacts", endpoint_url=endpoint, region="us-east-1")
    client = make_client(target)
    client.create_bucket(Bucket="bench")
    lines = ["", f"artifact writes ({files} files of 5 MiB)        median      p99"]
    for name, backend_of in (
        ("local folder", lambda store: LocalArtifacts(store)),
        ("s3 (moto on loopback)", lambda store: S3Artifacts(store, target, client)),
    ):
        store = ArtifactStore(run_dir / name.split()[0])
        backend = backend_of(store)

        async def write(i: int, store: ArtifactStore = store, backend: object = backend) -> None:
            def local() -> ArtifactRecord:
                with store.writing(i, "beat.wav") as tmp:
                    tmp.write_bytes(payload)
                return store.record(i, "beat.wav", kind=ArtifactKind.AUDIO)

            record = await asyncio.to_thread(local)
            await backend.publish([record])  # type: ignore[attr-defined]

        lines.append(f"{name:30} {_ms(await _timed(files, write))}")
    return lines
