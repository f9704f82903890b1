"""Every line the job service logs about a job carries the job's, its user's and its server's ids."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

import discord
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams
from beatforge.log import JsonFormatter
from bot.jobs import JobService
from bot.status import StatusBoard
from storage.artifacts import ArtifactStore


async def test_queueing_a_job_logs_with_its_ids(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bot.jobs")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    client = discord.Client(intents=discord.Intents.none())
    service = JobService(
        sessions=sessions,
        redis=arq_redis,
        settings=settings,
        store=ArtifactStore(settings.artifact_dir),
        status=StatusBoard(client),
    )
    try:
        user = SimpleNamespace(id=42, name="maker")
        job, _ = await service.enqueue(
            BeatParams(prompt="x", duration_s=2, seed=1),
            user=user,  # only id and name are read
            guild_id=77,
            channel_id=88,
            parent_id=None,
            relation=None,
        )
        logger.info("after the job")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        await client.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    queued = next(line for line in lines if line["msg"] == "job queued")
    assert (queued["job_id"], queued["user_id"], queued["guild_id"]) == (job.id, 42, 77)
    assert "job_id" not in lines[-1]  # the context ends with the job's queueing
