"""What workers tell the bot through redis: the models they can run, how fast they work, and that they are alive.

The bot never imports the ML stack, so it learns these from the workers: each worker writes its model
registry at start-up (``/admin model list`` and ``model use`` read it), after every job how much
work it did in how long (``/queue`` turns that into waits), and every few seconds its presence
(:func:`read_workers`: ``beatforge status``, ``/admin status``). Values are JSON; a missing key means no
worker has reported yet, and callers say so instead of guessing.
"""

from __future__ import annotations

import json
import logging
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
    #: ``beatforge.engines``: what the model can do (its options and refusals) follows from it.
    engine: str = "musicgen"


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


# -- worker presence -------------------------------------------------------------------------------------------
#
# Each worker process writes its own key every few seconds with a TTL of a few intervals, so a worker that dies
# (SIGKILL, OOM, a pulled plug) disappears by itself within seconds: there is nothing to clean up and no
# heartbeat to judge. ``generation/worker/presence.py`` writes the keys; the bot and the CLI read them here.

WORKER_KEY_PREFIX = "beatforge:worker:"

log = logging.getLogger(__name__)


class PresenceRedis(Protocol):
    """What worker presence needs of a redis client (``ArqRedis`` and redis-py's asyncio client have it)."""

    def set(self, name: str, value: str, ex: int | None = None) -> Any: ...
    def delete(self, *names: str) -> Any: ...
    def mget(self, keys: list[str]) -> Any: ...
    def scan_iter(self, match: str | None = None, count: int | None = None) -> Any: ...


def worker_key(worker_id: str) -> str:
    return f"{WORKER_KEY_PREFIX}{worker_id}"


@dataclass(frozen=True, slots=True)
class GpuMemory:
    """Bytes on the worker's GPU: what its tensors hold, what torch's caching allocator has reserved (what
    other processes cannot use), and the card's total."""

    allocated: int
    reserved: int
    total: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One live worker process, as it last described itself."""

    #: ``<host>-<pid>``: unique among live processes, and names the process to look for on its machine.
    id: str
    host: str
    pid: int
    #: Unix time the process started, and the time of this report.
    started_at: float
    seen_at: float
    #: The arq queue it takes jobs from.
    queue: str
    #: The torch device it generates on (``cuda``, ``cuda:1``, ``cpu``).
    device: str
    #: Job functions running in the process now, and most at once (``BEATFORGE_WORKER_MAX_JOBS``).
    jobs_running: int
    max_jobs: int
    #: Jobs it finished since it started, whatever their outcome (a failed beat is a finished job; the row says
    #: how it went), and jobs stopped before finishing (cancelled, timed out, or the worker shut down).
    jobs_finished: int
    jobs_interrupted: int
    #: None on a CPU worker.
    gpu: GpuMemory | None = None
    #: The MusicGen models it has loaded (model affinity: ``generation/worker/affinity.py``).
    models: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerInfo:
        data = json.loads(raw)
        gpu = data.pop("gpu", None)
        models = tuple(data.pop("models", ()))
        return cls(**data, gpu=GpuMemory(**gpu) if gpu else None, models=models)


async def publish_worker(redis: PresenceRedis, info: WorkerInfo, *, ttl_s: float) -> None:
    """Write one worker's report; it vanishes after ``ttl_s`` unless written again."""
    await redis.set(worker_key(info.id), info.to_json(), ex=max(1, round(ttl_s)))


async def remove_worker(redis: PresenceRedis, worker_id: str) -> None:
    """Take a worker's report down at once (a clean shutdown), rather than when its TTL runs out."""
    await redis.delete(worker_key(worker_id))


async def read_workers(redis: PresenceRedis) -> list[WorkerInfo]:
    """The workers alive now (reported within their TTL), by host and pid. A report that does not parse (a
    worker of another version) is skipped rather than hiding every other worker."""
    keys = [k.decode() if isinstance(k, bytes) else str(k) async for k in redis.scan_iter(f"{WORKER_KEY_PREFIX}*")]
    if not keys:
        return []
    workers: list[WorkerInfo] = []
    for raw in await redis.mget(sorted(keys)):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            workers.append(WorkerInfo.from_json(raw))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("unreadable worker report skipped", extra={"report": str(raw)[:200], "error": repr(exc)})
    return sorted(workers, key=lambda w: (w.host, w.pid))
