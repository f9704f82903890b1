"""Nobody is left without an answer: an unexpected error in a command or a button gets the private "💥" reply at
once, the error handler itself cannot crash (its log context is built safely), and a reply Discord refuses is
logged instead of escaping the handler."""

from __future__ import annotations

import logging
import time
from typing import Any

import discord
import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import ErrorCode
from bot.app import Beatforge
from bot.buttons import JobButton, answer_presses
from bot.errors import UNEXPECTED_TEXT
from bot.messages import failure_text
from storage import jobs
from storage.artifacts import ArtifactStore
from tests.support.bot import CALLBACK, CHANNEL_MESSAGES, finish_job, new_job, press, private_text
from tests.support.discord_harness import FakeDiscord, connected, dispatch_gateway, settle, slash_command_payload


def failing_bot(settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis) -> Beatforge:
    """The real bot plus a command that fails the way a bug does: a plain exception, with options to log."""
    bot = Beatforge(settings=settings, redis=arq_redis, sessions=sessions)

    @bot.tree.command(name="boom", description="fails")
    async def boom(interaction: discord.Interaction, level: int, note: str | None = None) -> None:
        raise RuntimeError("/srv/beatforge/data/secret.db is locked")

    return bot


@pytest.mark.timeout(10)
async def test_a_command_raising_a_plain_exception_gets_the_private_apology_within_a_second(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = failing_bot(settings, sessions, arq_redis)
    async with FakeDiscord() as fake, connected(bot, fake):
        with caplog.at_level(logging.ERROR):
            dispatched = time.monotonic()
            dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("boom", {"level": 3}, bot=bot))
            reply = await fake.wait_for("POST", CALLBACK, timeout=3)
            await settle(bot)
    assert reply.timestamp - dispatched < 1.0
    assert private_text(reply) == UNEXPECTED_TEXT and "/srv" not in private_text(reply)
    (logged,) = [r for r in caplog.records if r.getMessage() == "command failed"]
    assert logged.command == "boom" and logged.options == {"level": 3}  # type: ignore[attr-defined]
    assert logged.exc_info is not None and "secret.db is locked" in str(logged.exc_info[1])
    escaped = [r for r in caplog.records if r.name.startswith("discord") and r.levelno >= logging.ERROR]
    assert not escaped  # nothing escaped our handler for discord.py to log


@pytest.mark.timeout(10)
async def test_the_error_handler_survives_a_reply_discord_refuses(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = failing_bot(settings, sessions, arq_redis)
    escaped: list[BaseException] = []
    handler = bot.tree.on_error

    async def watched(interaction: discord.Interaction[Any], error: discord.app_commands.AppCommandError) -> None:
        try:
            await handler(interaction, error)
        except BaseException as exc:  # recorded for the assertion, and re-raised as discord.py would see it
            escaped.append(exc)
            raise

    bot.tree.on_error = watched  # type: ignore[method-assign]
    async with FakeDiscord() as fake, connected(bot, fake):
        fake.fail_next("POST", CALLBACK, 404, {"code": 10062, "message": "Unknown interaction"})
        with caplog.at_level(logging.WARNING, logger="bot.errors"):
            dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("boom", {"level": 1}, bot=bot))
            refused = await fake.wait_for("POST", CALLBACK, timeout=3)
            await settle(bot)
    assert refused.status == 404 and escaped == []
    messages = [r.getMessage() for r in caplog.records]
    assert "command failed" in messages and "could not answer the user" in messages


@pytest.mark.timeout(10)
async def test_a_button_whose_handler_raises_a_plain_exception_gets_the_private_apology(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot, fake = discord_bot
    job_id = await new_job(sessions)
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, [("a.wav", "audio", bytes(100), None)])
    posted = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    message = fake.messages[int(posted.response["id"])]

    async def broken(interaction: discord.Interaction, button: Any) -> None:
        raise KeyError("a bug")

    answer_presses(bot, JobButton, broken)
    with caplog.at_level(logging.ERROR, logger="bot.errors"):
        reply = await press(bot, fake, f"bf:keep:{job_id}", message=message, user_id=42)
        await settle(bot)
    assert private_text(reply) == UNEXPECTED_TEXT
    (logged,) = [r for r in caplog.records if r.getMessage() == "JobButton button failed"]
    assert logged.custom_id == f"bf:keep:{job_id}"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        ("the GPU ran out of memory", ": the GPU ran out of memory"),
        (
            "could not read /srv/beatforge/artifacts/12/take1.wav: truncated",
            ": could not read (a file on the server): truncated",
        ),
        ('Traceback (most recent call last):\n  File "/app/generation/worker.py", line 3', "."),
        ("x" * 400, ": " + "x" * 299 + "…"),
    ],
)
async def test_a_failure_shown_to_users_holds_no_server_paths_or_tracebacks(
    sessions: async_sessionmaker[AsyncSession], error: str, shown: str
) -> None:
    job_id = await new_job(sessions)
    async with sessions() as session:
        await jobs.mark_failed(session, job_id, code=ErrorCode.GENERATION_FAILED, message=error)
        job = await jobs.get_job(session, job_id)
    assert failure_text(job) == f"❌ Beat #{job_id} — Generation failed{shown}"
