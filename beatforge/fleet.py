"""What workers tell the bot through redis: the models they can run and how fast they work.

The bot never imports the ML stack, so it learns these from the workers: each worker writes its model
registry at start-up (``/admin model list`` and ``model use`` read it) and, after every job, how much
work it did in how long (``/queue`` turns that into waits). Values are JSON; a missing key means no
worker has reported yet, and callers say so instead of guessing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

MODELS_KEY = "beatforge:models"
SPEED_KEY = "beatforge:speed"
#: How much one new measurement moves the running speed estimate.
SPEED_SMOOTHING = 0.3


class Redis(Protocol):
    """What this module needs of a redis client; redis-py types its methods as sync-or-async, hence ``Any``."""

    def get(self, name: str) -> Any: ...
    def set(self, name: str, value: str) -> Any: ...
    def hget(self, name: str, key: str) -> Any: ...
    def hset(self, name: str, key: str, value: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as the bot shows it; the fields of ``generation.music.registry.ModelSpec`` users care about."""

    name: str
    kind: str
    licence: str
    description: str
    melody: bool = False
    stereo: bool = False
    base: str | None = None


async def publish_models(redis: Redis, models: list[ModelInfo], *, default: str) -> None:
    payload = {"default": default, "at": time.time(), "models": [asdict(m) for m in models]}
    await redis.set(MODELS_KEY, json.dumps(payload))


async def read_models(redis: Redis) -> tuple[list[ModelInfo], str] | None:
    """The models workers can run and the default one, or None when no worker has started yet."""
    return parse_models(await redis.get(MODELS_KEY))


def parse_models(raw: bytes | str | None) -> tuple[list[ModelInfo], str] | None:
    """The models key as redis returns it (``GET``, e.g. inside a caller's pipeline); see ``read_models``."""
    if not raw:
        return None
    data = json.loads(raw)
    return [ModelInfo(**m) for m in data["models"]], str(data["default"])


@dataclass(frozen=True, slots=True)
class Speed:
    """Work per wall-clock second: audio seconds for a model's beats, jobs for ``job:<kind>`` keys."""

    rate: float
    samples: int


def speed_key(kind: str, model: str | None) -> str:
    """Beats are timed per model (audio seconds per second); other jobs per kind (jobs per second)."""
    return f"model:{model}" if kind == "beat" else f"job:{kind}"


async def record_speed(redis: Redis, key: str, *, work: float, seconds: float) -> Speed:
    """Fold one job's measured speed into the running estimate (an exponential moving average)."""
    if work <= 0 or seconds <= 0:
        raise ValueError(f"work and seconds must be positive, not {work} and {seconds}")
    raw = await redis.hget(SPEED_KEY, key)
    rate = work / seconds
    if raw:
        old = Speed(**json.loads(raw))
        speed = Speed(rate=old.rate + SPEED_SMOOTHING * (rate - old.rate), samples=old.samples + 1)
    else:
        speed = Speed(rate=rate, samples=1)
    await redis.hset(SPEED_KEY, key, json.dumps({"rate": speed.rate, "samples": speed.samples}))
    return speed


def parse_speeds(raw: Mapping[bytes | str, bytes | str] | None) -> dict[str, Speed]:
    """The speed hash as redis returns it (``HGETALL``, e.g. inside a caller's pipeline), keyed by ``speed_key``."""
    return {(k.decode() if isinstance(k, bytes) else k): Speed(**json.loads(v)) for k, v in (raw or {}).items()}
