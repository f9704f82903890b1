"""The first seconds of a beat in the chat while the rest is made: from /beat through a worker process to the
status line's attachment, which the result then replaces (the bot's real discord.py paths, the fake Discord)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import pytest
import soundfile as sf
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from bot.app import Beatforge
from tests.support.bot import CHANNEL_MESSAGES, ORIGINAL, delivered_job
from tests.support.discord_harness import FakeDiscord, RecordedRequest, dispatch_gateway, slash_command_payload

WORKER_TIMEOUT_S = 300
pytestmark = pytest.mark.slow


def _with_preview(request: RecordedRequest) -> bool:
    return request.method == "PATCH" and "/messages/@original" in request.path and bool(request.files)


async def test_the_first_seconds_are_heard_before_the_beat_is_done(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    start_worker: Callable[..., Any],
) -> None:
    bot, fake = discord_bot
    start_worker(settings, preview_s="2")
    dispatched = time.monotonic()
    dispatch_gateway(
        bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "lofi", "duration": 20}, bot=bot)
    )
    preview = await fake.wait_for(_with_preview, timeout=WORKER_TIMEOUT_S)
    heard_after_s = time.monotonic() - dispatched
    (file,) = preview.files
    info = sf.info(io.BytesIO(file.data))
    assert file.filename == "beatforge-1-preview.ogg" and (info.samplerate, info.frames) == (32_000, 64_000)
    assert "🎧 The first seconds" in preview.json["content"] and "generating" in preview.json["content"]

    result = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=WORKER_TIMEOUT_S)
    done_after_s = time.monotonic() - dispatched
    assert preview.index < result.index and heard_after_s < done_after_s
    await delivered_job(sessions, 1)
    final = [r for r in fake.find("PATCH", ORIGINAL) if r.json and str(r.json.get("content", "")).startswith("✅")]
    assert final[-1].json["attachments"] == []  # the result replaces the preview
