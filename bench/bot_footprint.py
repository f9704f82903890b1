"""Memory of the bot process after start-up, and proof that it never loads the ML stack.

Each row is a fresh Python process: the bot (real `Beatforge` with real redis and SQLite,
logged in to the loopback Discord fake from tests/support/discord_harness, commands synced), and for
comparison the same process after also importing the worker's stack.

    .venv/bin/python bench/bot_footprint.py
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from beatforge.config import Settings
from beatforge.queue import connect
from bot.app import Beatforge
from migrations.runner import upgrade_locked
from storage.db import make_engine, make_sessionmaker
from tests.support.discord_harness import FakeDiscord, connected

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

async def main(redis_url, tmp, with_worker_stack):
    settings = Settings(_env_file=None, redis_url=redis_url, database_url=f"sqlite+aiosqlite:///{tmp}/b.db",
                        artifact_dir=f"{tmp}/a", log_level="WARNING")
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    engine = make_engine(settings.database_url)
    redis = await connect(settings)
    bot = Beatforge(settings=settings, redis=redis, sessions=make_sessionmaker(engine))
    async with FakeDiscord() as fake, connected(bot, fake):
        if with_worker_stack:
            import generation.worker.settings  # torch + transformers
        await asyncio.sleep(0.5)
        out = {"rss_mib": round(rss_mib(), 1), "torch": "torch" in sys.modules,
               "transformers": "transformers" in sys.modules, "commands_synced": len(fake.find("PUT", "commands"))}
    await redis.aclose()
    await engine.dispose()
    print(json.dumps(out))

asyncio.run(main(sys.argv[2], sys.argv[3], sys.argv[4] == "1"))
"""


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", ""], stdout=subprocess.DEVNULL
    )
    time.sleep(0.3)
    try:
        print(f"{'process':42} {'RSS MiB':>8} {'torch loaded':>13}")
        for label, flag in (("bot (beatforge bot)", "0"), ("baseline: bot + worker stack imported", "1")):
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(ROOT), f"redis://127.0.0.1:{port}/0", tmp, flag],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{label:42} {result['rss_mib']:8.1f} {result['torch']!s:>13}")
    finally:
        redis.terminate()


if __name__ == "__main__":
    main()
