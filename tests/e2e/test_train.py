"""/admin train in Discord, end to end: a zip of captioned clips uploaded to the real bot (Discord harness), a
generation worker that leaves the run alone, a training worker process (``BEATFORGE_WORKER_ROLES=train``) that
trains the tiny MusicGen on it with its progress on the status line, and the model then usable by the server."""

from __future__ import annotations

import asyncio
import io
import re
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import JobStatus
from bot.app import Beatforge
from storage import jobs
from tests.support.bot import (
    CHANNEL_MESSAGES,
    MANAGE_SERVER,
    command,
    delivered_job,
    models_published,
    private_text,
    wait_for_edit,
)
from tests.support.discord_harness import FakeDiscord

WORKER_TIMEOUT_S = 120
STEPS = 30
pytestmark = pytest.mark.slow


def clips_zip(count: int = 4, seconds: float = 2.0, rate: int = 32_000) -> bytes:
    """Tones a few semitones apart, each WAV with a .txt caption beside it."""
    rng = np.random.default_rng(7)
    t = np.arange(round(seconds * rate)) / rate
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(count):
            tone = 0.3 * np.sin(2 * np.pi * 110 * 2 ** (i / 4) * t) + 0.01 * rng.standard_normal(t.size)
            wav = io.BytesIO()
            sf.write(wav, tone.astype(np.float32), rate, format="WAV")
            zf.writestr(f"clips/tone{i}.wav", wav.getvalue())
            zf.writestr(f"clips/tone{i}.txt", f"a soft sine tone number {i}")
    return buffer.getvalue()


async def test_a_server_trains_a_model_on_a_training_worker_and_switches_to_it(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    start_worker: Callable[..., Any],
) -> None:
    bot, fake = discord_bot
    settings = settings.model_copy(update={"train_window_s": 0.5})
    start_worker(settings)  # a generation worker: it must leave the run alone
    await models_published(arq_redis, WORKER_TIMEOUT_S)

    attachment = fake.add_attachment("my clips.zip", clips_zip())
    options = {"name": "house", "data": attachment, "steps": STEPS, "base": "debug"}
    await command(bot, fake, "admin", options, subcommand="train", permissions=MANAGE_SERVER)
    await wait_for_edit(fake, lambda c: "Training #1 of `house` queued" in c, timeout=5)

    await asyncio.sleep(3)  # the generation worker polls its queue all along
    async with sessions() as session:
        assert (await jobs.get_job(session, 1)).status is JobStatus.QUEUED
    assert await arq_redis.zcard(settings.train_queue_name) == 1

    since = len(fake.requests)
    start_worker(settings, worker_roles="train")
    progress = re.compile(rf"🧠 Training #1 of `house` — step \d+/{STEPS} · loss \d+\.\d\d")
    await wait_for_edit(fake, lambda c: bool(progress.search(c)), timeout=WORKER_TIMEOUT_S, since=since)
    posted = await fake.wait_for(
        lambda r: r.method == "POST" and re.match(CHANNEL_MESSAGES, r.path) is not None and "house" in str(r.json),
        since=since,
        timeout=WORKER_TIMEOUT_S,
    )
    text = posted.json["content"]
    assert "Model `house` is trained" in text and "`/admin model use house`" in text, text
    job = await delivered_job(sessions, 1)
    assert job.status is JobStatus.DONE

    switched = await command(bot, fake, "admin", {"name": "house"}, subcommand="model use", permissions=MANAGE_SERVER)
    assert "New beats on this server use `house`" in private_text(switched)

    # the generation worker started before the model existed, and still makes a beat with it
    since = len(fake.requests)
    await command(bot, fake, "beat", {"prompt": "soft tone", "duration": 1})
    await fake.wait_for("POST", CHANNEL_MESSAGES, since=since, timeout=WORKER_TIMEOUT_S)
    beat = await delivered_job(sessions, 2)
    assert (beat.status, beat.resolved_model) == (JobStatus.DONE, "house")
