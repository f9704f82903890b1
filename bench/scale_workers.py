"""Workers at scale: throughput and queue wait with 1, 2 and 4 worker processes, and model-affinity routing
against plain first-come routing, over real redis and SQLite with real `beatforge worker` processes (tiny
random MusicGen models, CPU).

Throughput: a burst of beats queued at once, timed from the first queueing to the last job done, once every
worker is up (start-up is not counted). Wait: a job's ``started_at - queued_at``.

Affinity: two workers, each holding one model at a time (``BEATFORGE_MODEL_MAX_RESIDENT=1``, as a GPU full with
one large model would), and a stream of beats for two models in a seeded random order. Switches are the model
loads the workers log after start-up; the same jobs, in the same order and at the same times, run once with
``BEATFORGE_AFFINITY_WAIT_S=0`` (first come, first served) and once with affinity.

    .venv/bin/python bench/scale.py workers --jobs 24
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from beatforge.config import Settings
from beatforge.contract import BeatParams, JobStatus
from beatforge.fleet import read_workers
from beatforge.queue import connect, enqueue_job
from migrations.runner import upgrade_locked
from storage import jobs
from storage.db import make_engine, make_sessionmaker
from tests.support.processes import settings_env


@dataclass(frozen=True, slots=True)
class Run:
    label: str
    jobs: int
    seconds: float
    waits: list[float]
    switches: int

    def row(self) -> str:
        waits = sorted(self.waits)
        p99 = waits[min(len(waits) - 1, round(0.99 * (len(waits) - 1)))]
        rate = self.jobs / self.seconds * 60
        return (
            f"{self.label:34} {self.jobs:5d} {rate:8.1f}/min {statistics.median(waits):8.2f}s {p99:8.2f}s "
            f"{self.switches:9d}"
        )


HEADER = f"{'':34} {'jobs':>5} {'throughput':>12} {'wait p50':>9} {'wait p99':>9} {'switches':>9}"


def _model_loads(log: Path) -> int:
    """Model loads a worker logged (``generation.music.model_cache``: "model resident")."""
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        count += record.get("msg") == "model resident"
    return count


async def _wait_for_workers(settings: Settings, n: int, timeout_s: float = 600) -> None:
    redis = await connect(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while len([w for w in await read_workers(redis) if w.models]) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} workers did not come up in {timeout_s} s")
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()


def _start_workers(settings: Settings, n: int, logs: Path) -> tuple[list[subprocess.Popen[bytes]], list[Path]]:
    logs.mkdir(parents=True, exist_ok=True)
    procs, paths = [], [logs / f"worker-{i}.log" for i in range(n)]
    for path in paths:
        with path.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "worker"],
                    cwd=ROOT,
                    env=settings_env(settings),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs, paths


async def run_jobs(
    settings: Settings, label: str, workers: int, models: list[str | None], *, every_s: float, logs: Path
) -> Run:
    """Start ``workers`` worker processes, queue a beat for each of ``models`` (None: the default) ``every_s``
    apart once all are up, and time them to the last one done."""
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    procs, paths = await asyncio.to_thread(_start_workers, settings, workers, logs / label.replace(" ", "_"))
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    redis = await connect(settings)
    try:
        await _wait_for_workers(settings, workers)
        loads_at_start = sum(_model_loads(p) for p in paths)
        started = time.monotonic()
        ids = []
        for i, model in enumerate(models):
            params = BeatParams(prompt="bench beat", duration_s=1.0, seed=i, model=model)
            async with sessions() as session:
                job = await jobs.create_job(
                    session, params=params, user_id=i, user_name="bench", guild_id=1, channel_id=1
                )
            await enqueue_job(redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params, user_id=i)
            ids.append(job.id)
            await asyncio.sleep(every_s)
        waits = []
        for job_id in ids:
            while True:
                async with sessions() as session:
                    job = await jobs.get_job(session, job_id)
                if job.status in (JobStatus.DONE, JobStatus.FAILED):
                    break
                await asyncio.sleep(0.05)
            if job.status is JobStatus.FAILED or job.started_at is None:
                raise RuntimeError(f"job {job.id} failed: {job.error}")
            waits.append((job.started_at - job.queued_at).total_seconds())
        seconds = time.monotonic() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=120)
        await redis.aclose()
        await engine.dispose()
    switches = sum(_model_loads(p) for p in paths) - loads_at_start
    return Run(label, len(models), seconds, waits, switches)


async def bench_workers(base: Settings, run_dir: Path, *, jobs_n: int) -> list[str]:
    """Throughput and wait with 1, 2 and 4 worker processes."""
    lines = ["", "workers (a burst of 1 s beats, one model)", HEADER]
    for n in (1, 2, 4):
        settings = base.model_copy(
            update={"database_url": f"sqlite+aiosqlite:///{run_dir}/workers-{n}.db", "queue_name": f"bench:w{n}"}
        )
        run = await run_jobs(settings, f"{n} worker(s)", n, [None] * jobs_n, every_s=0.0, logs=run_dir / "logs")
        lines.append(run.row())
        print(lines[-1], flush=True)
    return lines


async def bench_routing(base: Settings, run_dir: Path, *, jobs_n: int, model_b: str, every_s: float) -> list[str]:
    """Model affinity against first come: two workers, one model and one job at a time each, beats for two
    models in a seeded random order."""
    rng = random.Random(7)
    order = [rng.choice([None, model_b]) for _ in range(jobs_n)]
    lines = [
        "",
        f"routing (2 workers, 1 model and 1 job at a time each; a beat every {every_s} s, "
        f"{order.count(model_b)} of {jobs_n} for model B)",
        HEADER,
    ]
    for label, wait_s in (("first come (affinity off)", 0.0), ("model affinity (30 s)", 30.0)):
        settings = base.model_copy(
            update={
                "database_url": f"sqlite+aiosqlite:///{run_dir}/affinity-{wait_s}.db",
                "queue_name": f"bench:a{wait_s}",
                "model_max_resident": 1,
                "worker_max_jobs": 1,
                "affinity_wait_s": wait_s,
            }
        )
        run = await run_jobs(settings, label, 2, order, every_s=every_s, logs=run_dir / "logs")
        lines.append(run.row())
        print(lines[-1], flush=True)
    return lines
