"""/queue and the queued status line's wait, through the Discord harness with real redis and SQLite."""

from __future__ import annotations

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.contract import PROGRESS_KEY, BeatParams, JobProgress
from beatforge.fleet import record_speed, speed_key
from beatforge.queue import enqueue_job
from bot.app import Beatforge
from storage import jobs
from tests.support.bot import EPHEMERAL
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_USER_ID,
    FakeDiscord,
    dispatch_gateway,
    settle,
    slash_command_payload,
)

ALICE, BOB = 11, 12


async def _queued(
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    *,
    user_id: int,
    model: str,
    duration_s: float,
    takes: int = 1,
    running: bool = False,
    guild_id: int = DEFAULT_GUILD_ID,
) -> int:
    """A job as /beat leaves it (row, status message, on arq's queue), optionally taken by a worker."""
    params = BeatParams(prompt="queued beat", duration_s=duration_s, takes=takes, seed=1, model=model)
    async with sessions() as session:
        job = await jobs.create_job(
            session, params=params, user_id=user_id, user_name="u", guild_id=guild_id, channel_id=DEFAULT_CHANNEL_ID
        )
        await jobs.set_status_message(session, job.id, 900 + job.id)
        if running:
            await jobs.mark_running(session, job.id, resolved_model=model)
    # arq keeps a running job in its sorted set until it finishes, so a running job is queued here too.
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params, user_id=user_id)
    return job.id


async def _queue_reply(bot: Beatforge, fake: FakeDiscord) -> str:
    since = len(fake.requests)
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("queue", {}, bot=bot))
    reply = await fake.wait_for(lambda r: r.index >= since and r.method == "POST" and "/callback" in r.path, timeout=5)
    await settle(bot)
    assert reply.json["type"] == 4 and reply.json["data"]["flags"] & EPHEMERAL
    return str(reply.json["data"]["content"])


async def test_queue_is_empty(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    bot, fake = discord_bot
    assert await _queue_reply(bot, fake) == "📭 The queue is empty: a new job starts right away."


async def test_queue_lists_running_and_waiting_jobs_with_measured_and_guessed_times(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    await record_speed(arq_redis, speed_key("beat", "fast-model"), work=10, seconds=5)  # 2 audio s per s
    running = await _queued(sessions, arq_redis, user_id=ALICE, model="fast-model", duration_s=60, running=True)
    progress = JobProgress(stage="generating", done=1, total=2)  # half of 30 s: 15 s left
    await arq_redis.set(PROGRESS_KEY.format(job_id=running), progress.model_dump_json())
    bobs = await _queued(sessions, arq_redis, user_id=BOB, model="fast-model", duration_s=120, takes=2)  # 120 s
    mine = await _queued(sessions, arq_redis, user_id=DEFAULT_USER_ID, model="new-model", duration_s=60)  # 240 s

    lines = (await _queue_reply(bot, fake)).splitlines()

    assert lines[0].startswith("**Queue**: 1 running, 2 waiting.")
    assert lines[1] == f"▶️ Beat #{running} · <@{ALICE}> · 50% · done in under a minute"
    assert lines[2] == f"`#2` Beat #{bobs} · <@{BOB}> · starts in under a minute · done in 2 min"  # 15 s, 135 s
    assert lines[3] == f"`#3` **Beat #{mine} (yours)** · starts in ~2 min · done in ~6 min"  # 135 s, 375 s guessed
    assert lines[4].startswith("~ a guess")
    assert len(lines) == 5


async def test_other_servers_jobs_are_listed_without_their_users(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    job = await _queued(sessions, arq_redis, user_id=ALICE, model="m", duration_s=10, guild_id=DEFAULT_GUILD_ID + 1)
    text = await _queue_reply(bot, fake)
    assert f"`#1` Beat #{job} · elsewhere · starts in under a minute" in text
    assert f"<@{ALICE}>" not in text


async def test_a_queued_status_line_shows_when_the_job_should_start(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    """The job watcher adds the wait to a queued job's status line: here behind a long beat on an untimed model
    (120 s x 4 takes at the default 0.25 audio s per s: 32 min)."""
    bot, fake = discord_bot
    await _queued(sessions, arq_redis, user_id=ALICE, model="slow-model", duration_s=120, takes=4, running=True)
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "after that"}, bot=bot))
    edit = await fake.wait_for(
        lambda r: (
            r.method == "PATCH" and "@original" in r.path and "starts in" in ((r.json or {}).get("content") or "")
        ),
        timeout=5,
    )
    assert edit.json["content"].endswith("queued — #2 in line · starts in ~32 min")
