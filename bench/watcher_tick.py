"""What one job watcher tick costs as the queue grows: redis round trips and SQL statements.

The real `Beatforge` bot (real redis and SQLite, logged in to the loopback Discord fake) with N active jobs:
one taken by a worker (with progress), the rest waiting. Its polling loop is stopped and ticks are run by hand,
twice: the first edits every status line, the second finds nothing changed. Every request sent to redis counts
once (a pipeline is one request), every SQL statement once.

    .venv/bin/python bench/watcher_tick.py
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio.connection import AbstractConnection
from sqlalchemy import event

from beatforge.config import Settings
from beatforge.contract import PROGRESS_KEY, JobProgress
from beatforge.queue import connect
from bot.app import Beatforge
from migrations.runner import upgrade_locked
from storage import jobs
from storage.db import make_engine, make_sessionmaker
from tests.support.discord_harness import FakeDiscord, connected, dispatch_gateway, settle, slash_command_payload

SIZES = (1, 5, 20, 50)


class Counter:
    redis = 0
    sql = 0


COUNT = Counter()
_send = AbstractConnection.send_packed_command


async def _counted_send(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
    COUNT.redis += 1
    await _send(self, *args, **kwargs)


async def measure(redis_url: str, tmp: str, n_jobs: int) -> list[tuple[int, int]]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_url,
        database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
        artifact_dir=Path(tmp) / "artifacts",
        log_level="WARNING",
        concurrent_jobs=n_jobs,
        jobs_per_hour=n_jobs,
    )
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *_: setattr(COUNT, "sql", COUNT.sql + 1))
    redis = await connect(settings)
    bot = Beatforge(settings=settings, redis=redis, sessions=sessions)
    ticks = []
    try:
        async with FakeDiscord() as fake, connected(bot, fake):
            await bot.watcher.finish()
            for i in range(n_jobs):
                payload = slash_command_payload("beat", {"prompt": f"beat {i}"}, bot=bot)
                dispatch_gateway(bot, "INTERACTION_CREATE", payload)
                await settle(bot)
            async with sessions() as session:
                await jobs.mark_running(session, 1, resolved_model="bench")
            progress = JobProgress(stage="generating", done=1, total=2).model_dump_json()
            await redis.set(PROGRESS_KEY.format(job_id=1), progress)
            for _ in range(2):
                redis_before, sql_before = COUNT.redis, COUNT.sql
                await bot.watcher.tick()
                ticks.append((COUNT.redis - redis_before, COUNT.sql - sql_before))
    finally:
        await redis.aclose()
        await engine.dispose()
    return ticks


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", ""], stdout=subprocess.DEVNULL
    )
    time.sleep(0.3)
    AbstractConnection.send_packed_command = _counted_send  # type: ignore[method-assign]
    try:
        print(f"{'active jobs':>11} {'redis round trips per tick':>27} {'SQL statements per tick':>24}")
        for n_jobs in SIZES:
            subprocess.run(["redis-cli", "-p", str(port), "flushall"], capture_output=True, check=True)
            with tempfile.TemporaryDirectory() as tmp:
                (first_redis, first_sql), (next_redis, next_sql) = asyncio.run(
                    measure(f"redis://127.0.0.1:{port}/0", tmp, n_jobs)
                )
            print(f"{n_jobs:>11} {f'{first_redis} then {next_redis}':>27} {f'{first_sql} then {next_sql}':>24}")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
