"""The job service on its own: built from the database, the queue, the settings and the store (no bot object),
and its one rule for who may act on a job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import discord
import pytest
from arq.connections import ArqRedis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import CoverParams, JobStatus, Relation
from beatforge.queue import connect
from bot.access import Actor
from bot.errors import NotYours, UserFacingError
from bot.jobs import JobService
from bot.status import StatusBoard
from storage.artifacts import ArtifactStore
from storage.models import Generation, utcnow
from storage.reconcile import reconcile
from tests.support.bot import get_job, new_job
from tests.support.discord_harness import DEFAULT_GUILD_ID
from tests.support.redis_server import RedisServer

MAKER, STRANGER, OWNER = 42, 7, 4242


@pytest.fixture
async def service(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> AsyncIterator[JobService]:
    client = discord.Client(intents=discord.Intents.none())  # never logged in: the service does not need Discord
    yield JobService(
        sessions=sessions,
        redis=arq_redis,
        settings=settings.model_copy(update={"owner_ids": [OWNER]}),
        store=ArtifactStore(settings.artifact_dir),
        status=StatusBoard(client),
    )
    await client.close()


def actor(user_id: int, *, admin: bool = False) -> Actor:
    return Actor(discord.Object(user_id), admin=admin)  # type: ignore[arg-type]  # only the id is read


async def test_its_maker_or_an_admin_may_act_on_a_job_and_no_one_else(
    service: JobService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    job = await get_job(sessions, await new_job(sessions, user_id=MAKER))
    service.check_owner(job, actor(MAKER))
    service.check_owner(job, actor(STRANGER, admin=True))
    service.check_owner(job, actor(STRANGER), everyone=True)  # a server that lets anyone re-roll
    with pytest.raises(NotYours, match=rf"^Beat #{job.id} is <@{MAKER}>'s; only they or an admin can do that\.$"):
        service.check_owner(job, actor(STRANGER))
    with pytest.raises(NotYours, match="only they or an admin can re-post it"):
        service.check_owner(job, actor(STRANGER), doing="re-post it")


async def test_own_job_finds_only_this_servers_jobs_of_the_kind_asked_for(
    service: JobService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    beat_id = await new_job(sessions, user_id=MAKER)
    cover_id = await new_job(
        sessions, CoverParams(prompt="art", seed=1), user_id=MAKER, parent_id=beat_id, relation=Relation.COVER
    )
    here, me = DEFAULT_GUILD_ID, actor(MAKER)
    assert (await service.own_job(me, beat_id, guild_id=here)).id == beat_id
    assert (await service.own_job(me, cover_id, guild_id=here, beat=False)).id == cover_id
    with pytest.raises(UserFacingError, match=f"There is no beat #{cover_id} on this server"):
        await service.own_job(me, cover_id, guild_id=here)
    with pytest.raises(UserFacingError, match=f"There is no beat #{beat_id} on this server"):
        await service.own_job(me, beat_id, guild_id=here + 1)
    with pytest.raises(UserFacingError, match="There is no job #999"):
        await service.own_job(me, 999, guild_id=here, beat=False)
    with pytest.raises(NotYours):
        await service.own_job(actor(STRANGER), beat_id, guild_id=here)


def test_a_bot_owner_counts_as_an_admin_everywhere() -> None:
    # A reaction's member is judged by their roles; an owner needs none (plain objects have no roles at all).
    assert Actor.of_member(discord.Object(OWNER), [OWNER]).admin  # type: ignore[arg-type]
    assert not Actor.of_member(discord.Object(STRANGER), [OWNER]).admin  # type: ignore[arg-type]


async def test_cancel_marks_the_row_and_takes_the_job_off_the_queue(
    service: JobService, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    class User:
        id, name = MAKER, "maker"

    job, position = await service.enqueue(
        CoverParams(prompt="art", seed=1),
        user=User(),  # type: ignore[arg-type]
        guild_id=DEFAULT_GUILD_ID,
        channel_id=None,
        parent_id=None,
        relation=None,
    )
    assert position == 1 and await arq_redis.zcard(service.settings.queue_name) == 1
    assert await service.cancel(job, by="test")
    assert (await get_job(sessions, job.id)).status is JobStatus.FAILED
    assert await arq_redis.zcard(service.settings.queue_name) == 0
    assert not await service.cancel(job, by="test")  # already finished: nothing to cancel


async def test_a_job_sent_while_redis_is_down_is_kept_and_queued_once_redis_is_back(
    service: JobService, settings: Settings, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """A redis restart costs the user a wait, not a refusal: the row is the job, and the reconciler queues it."""

    class User:
        id, name = MAKER, "maker"

    server = RedisServer(tmp_path)
    server.start()
    settings = settings.model_copy(update={"redis_url": server.url})
    service.redis = redis = await connect(settings)
    try:
        server.stop()
        job, position = await service.enqueue(
            CoverParams(prompt="art", seed=1),
            user=User(),  # type: ignore[arg-type]
            guild_id=DEFAULT_GUILD_ID,
            channel_id=None,
            parent_id=None,
            relation=None,
        )
        assert position is None and (await get_job(sessions, job.id)).status is JobStatus.QUEUED

        server.start()  # back, empty; a worker's reconciler passes by after its grace
        async with sessions() as session:
            then = utcnow() - timedelta(seconds=settings.job_stale_after_s + 1)
            await session.execute(update(Generation).where(Generation.id == job.id).values(queued_at=then))
            await session.commit()
        assert (await reconcile(sessions, redis, settings)).restored == [job.id]
        assert await redis.zscore(settings.queue_name, job.queue_job_id) is not None
    finally:
        await redis.aclose()
        server.stop()
