"""The arq connection both sides share: JSON on the wire, one queue name, one redis URL."""

from __future__ import annotations

import json
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from redis.exceptions import RedisError

from beatforge.config import Settings
from beatforge.contract import BeatParams, GenerateRequest


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    return json.loads(data)


#: arq's default is pickle, which would make the bot unpickle worker-side classes (torch exceptions).
SERIALIZERS: dict[str, Any] = {"job_serializer": dumps, "job_deserializer": loads}


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url)


async def connect(settings: Settings) -> ArqRedis:
    return await create_pool(redis_settings(settings), default_queue_name=settings.queue_name, **SERIALIZERS)


class QueueError(Exception):
    """The job could not be put on the queue; nothing will run it."""


async def enqueue_job(redis: ArqRedis, job_name: str, *, job_id: int, queue_job_id: str, params: BeatParams) -> None:
    """Queue a stored job for the worker, by function name (``JOB_*``) and as JSON (see the contract).

    Raises:
        QueueError: redis is unreachable, or arq already holds this job id (it would drop the job silently).
    """
    payload = GenerateRequest(job_id=job_id, params=params).model_dump(mode="json")
    try:
        queued = await redis.enqueue_job(job_name, payload, _job_id=queue_job_id)
    except (RedisError, OSError) as exc:
        raise QueueError(f"redis is unreachable: {exc!r}") from exc
    if queued is None:
        raise QueueError(f"arq already holds a job with id {queue_job_id}")
