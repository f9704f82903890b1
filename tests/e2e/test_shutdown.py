"""SIGTERM and SIGINT close the bot in order (deliveries finish or are cancelled, Discord and the download server
are closed, redis and the database after them) instead of killing it where it stands: sent for real, to the bot
running as a process of its own (``tests/e2e/bot_process.py``)."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from beatforge.config import Settings
from tests.conftest import ROOT
from tests.support.processes import settings_env


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.timeout(90)
async def test_a_signal_runs_the_orderly_shutdown(settings: Settings, sent: signal.Signals) -> None:
    env = settings_env(settings) | {"BEATFORGE_DISCORD_TOKEN": "fake-token"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.e2e.bot_process",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        ready = await asyncio.wait_for(proc.stdout.readline(), 60)  # imports and migrations, on 2 shared cores
        assert ready == b"READY\n", ready
        proc.send_signal(sent)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = err.decode()
    assert proc.returncode == 0, log
    assert out.decode().splitlines() == ["EXIT 0"]  # run_bot returned: the close ran, it was not killed
    assert "bot.app: signal received; closing" in log
    assert log.index("bot.app: bot shutting down") < log.index("bot.app: bot shut down")
