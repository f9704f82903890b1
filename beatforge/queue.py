"""The arq connection both sides share: JSON on the wire, one queue name, one redis URL."""

from __future__ import annotations

import json
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from beatforge.config import Settings


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
