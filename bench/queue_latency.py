"""Time from a /beat being accepted to its job starting in the worker, over real redis and SQLite.

Runs a real `beatforge worker` process (tiny MusicGen, 1 s beats) and submits jobs one after
another the way the bot does (insert the row, enqueue by name), timing acceptance → the worker's
`started_at`. Compares beatforge's worker poll delay with arq's default (0.5 s) in the same run.

    .venv/bin/python bench/queue_latency.py --jobs 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beatforge.config import Settings
from beatforge.contract import BeatParams, JobStatus
from beatforge.queue import connect, enqueue_job
from generation.music.tiny import save_tiny_musicgen
from migrations.runner import upgrade_locked
from storage import jobs
from storage.db import make_engine, make_sessionmaker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(settings: Settings, n_jobs: int, log_path: Path) -> list[float]:
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATFORGE_")}
    env |= {
        f"BEATFORGE_{k.upper()}": str(v)
        for k, v in settings.model_dump(exclude={"discord_token"}).items()
        if v is not None
    }
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    redis = await connect(settings)
    latencies: list[float] = []
    try:
        for i in range(n_jobs + 1):  # the first job also waits for the worker's start-up: not counted
            params = BeatParams(prompt="bench beat", duration_s=1.0, seed=i)
            accepted = time.time()
            async with sessions() as session:
                job = await jobs.create_job(
                    session, params=params, user_id=1, user_name="bench", guild_id=1, channel_id=1
                )
            await enqueue_job(redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params)
            while True:
                async with sessions() as session:
                    job = await jobs.get_job(session, job.id)
                if job.status in (JobStatus.DONE, JobStatus.FAILED):
                    break
                await asyncio.sleep(0.01)
            if job.status is JobStatus.FAILED or job.started_at is None:
                raise RuntimeError(f"job {job.id} failed: {job.error}")
            if i:
                latencies.append(job.started_at.timestamp() - accepted)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await redis.aclose()
        await engine.dispose()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    port = free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = save_tiny_musicgen(Path(tmp) / "tiny")
            for label, poll in (("arq default poll (0.5 s)", 0.5), ("beatforge poll (0.05 s)", 0.05)):
                settings = Settings(
                    _env_file=None,  # type: ignore[call-arg]
                    redis_url=f"redis://127.0.0.1:{port}/0",
                    database_url=f"sqlite+aiosqlite:///{tmp}/{poll}.db",
                    artifact_dir=Path(tmp) / f"artifacts-{poll}",
                    default_model=str(model),
                    device="cpu",
                    worker_poll_delay_s=poll,
                    queue_name=f"bench:{poll}",
                    log_level="WARNING",
                )
                lat = asyncio.run(measure(settings, args.jobs, Path(tmp) / f"worker-{poll}.log"))
                rows.append((label, statistics.median(lat), max(lat), len(lat)))
    finally:
        redis.terminate()
    print(f"{'accept → job started in worker':34} {'median':>9} {'worst':>9} {'jobs':>5}")
    for label, med, worst, n in rows:
        print(f"{label:34} {med * 1000:7.1f}ms {worst * 1000:7.1f}ms {n:5d}")


if __name__ == "__main__":
    main()
