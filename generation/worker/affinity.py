"""Model affinity: a GPU worker leaves a beat for a model it has not loaded to a live worker that has it.

Loading a MusicGen model takes seconds to minutes, generating a beat a few seconds, so plain first-come routing
on a queue served by several workers with different models resident makes them swap models back and forth.
arq has one queue per worker and no way to route a job to a worker, so the choice is made where a worker picks
jobs: of the jobs ready in its queue (arq's sorted set, in fair order), it starts

- jobs for a model it has resident, and jobs that need no MusicGen model (covers), in queue order;
- jobs for a model no other live worker has resident: someone must load it, and this worker is free now;
- any job that has waited as long as loading its model takes: the worker that has the model is still busy,
  and waiting longer would cost more than the switch. This is the ski-rental rule: a job never loses more
  than a switch's time to affinity, so it is never worse than twice first-come's wait for it, while a switch
  avoided saves a whole load. Load times are what the workers measured (shared in redis); a model nobody
  has loaded yet, or one slower to load than ``affinity_wait_s``, waits ``affinity_wait_s`` at most.

The others stay in the queue for the worker that has their model. Which worker has which model comes from the
workers' presence reports (``beatforge.fleet.WorkerInfo.models``, a few seconds old at most); what a job needs
comes from its payload in redis (its ``model``, the configured default when it names none). A job arq cannot
read is left to arq, which fails it the way it always does.

Measured in bench/RESULTS.md ("Workers at scale"): a fixed 30 s patience halved the switches on a CPU, where a
load is short next to a beat, but made one job wait 11 s; patience by load time keeps both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from arq.constants import job_key_prefix
from pydantic import ValidationError

from beatforge.config import Settings
from beatforge.contract import BeatParams, JobParams, JobRequest, PackParams
from beatforge.fleet import WorkerInfo, read_workers
from beatforge.queue import loads, served_queue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ready:
    """A job ready in the queue, as affinity sees it."""

    queue_job_id: bytes
    #: The MusicGen model it loads; None when it loads none (or its payload is unreadable: arq deals with it).
    model: str | None
    #: Seconds since it was queued.
    waited_s: float


def pick(
    ready: Sequence[Ready],
    *,
    resident: Collection[str],
    elsewhere: Collection[str],
    load_s: Mapping[str, float],
    max_wait_s: float,
) -> list[bytes]:
    """The ids this worker should start, in queue order (see the module's docstring).

    ``resident``: the models this worker has loaded; ``elsewhere``: those other live workers on its queue have;
    ``load_s``: how long loading each model took; ``max_wait_s``: the longest any job is left waiting.
    """

    def take(job: Ready) -> bool:
        if job.model is None or job.model in resident or job.model not in elsewhere:
            return True
        return job.waited_s >= min(load_s.get(job.model, max_wait_s), max_wait_s)

    return [job.queue_job_id for job in ready if take(job)]


class ResidentModels(Protocol):
    """What affinity needs of the model cache (``generation.music.model_cache.ModelCache``)."""

    def resident(self) -> list[str]: ...
    def load_times(self) -> dict[str, float]: ...


#: Seconds each model took to load, as the workers last measured it (a hash: model → seconds).
LOAD_TIMES_KEY = "beatforge:model-load-s"


def job_model(raw: bytes | None, *, default: str) -> str | None:
    """The model a queued job's payload (arq's job key, our JSON serializer) loads; None when it loads none."""
    if raw is None:
        return None
    try:
        request = JobRequest[JobParams].model_validate(loads(raw)["a"][0])
    except (ValueError, KeyError, IndexError, TypeError, ValidationError):
        return None
    if isinstance(request.params, BeatParams | PackParams):
        return request.params.model or default
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _enqueued_ms(raw: bytes | None) -> float | None:
    try:
        return float(loads(raw)["et"]) if raw is not None else None
    except (ValueError, KeyError, TypeError):
        return None


class Affinity:
    """Orders a worker's picks by model affinity (``ResilientWorker.start_jobs`` asks it at every poll)."""

    #: How long the fleet's view is read once for: presence reports change every few seconds.
    FLEET_TTL_S = 1.0

    def __init__(self, redis: Any, settings: Settings, models: ResidentModels, *, worker_id: str) -> None:
        self.redis, self.settings, self.models, self.worker_id = redis, settings, models, worker_id
        self.queue = served_queue(settings)
        #: When the fleet was last read, the models other workers have resident, and every model's load time.
        self._fleet: tuple[float, frozenset[str], dict[str, float]] = (float("-inf"), frozenset(), {})

    async def fleet(self) -> tuple[frozenset[str], dict[str, float]]:
        """The models other live workers on this worker's queue have resident, and how long models take to load
        (this worker's own measurements are shared on the way)."""
        read_at, elsewhere, load_s = self._fleet
        if time.monotonic() - read_at < self.FLEET_TTL_S:
            return elsewhere, load_s
        workers: list[WorkerInfo] = await read_workers(self.redis)
        elsewhere = frozenset(m for w in workers if w.id != self.worker_id and w.queue == self.queue for m in w.models)
        mine = self.models.load_times()
        if mine:
            await self.redis.hset(LOAD_TIMES_KEY, mapping={model: f"{s:.3f}" for model, s in mine.items()})
        load_s = {_text(k): float(v) for k, v in (await self.redis.hgetall(LOAD_TIMES_KEY)).items()}
        self._fleet = (time.monotonic(), elsewhere, load_s)
        return elsewhere, load_s

    async def choose(self, job_ids: Sequence[bytes]) -> list[bytes]:
        """Of the ready ``job_ids`` (queue order), those to start now, in queue order."""
        if not job_ids:
            return []
        payloads = await self.redis.mget([job_key_prefix + i.decode() for i in job_ids])
        now_ms, default = time.time() * 1000, self.settings.default_model
        ready = []
        for queue_job_id, raw in zip(job_ids, payloads, strict=True):
            enqueued = _enqueued_ms(raw)
            waited = (now_ms - enqueued) / 1000 if enqueued is not None else float("inf")
            ready.append(Ready(queue_job_id, job_model(raw, default=default), waited))
        if all(job.model is None for job in ready):
            return list(job_ids)
        elsewhere, load_s = await self.fleet()
        chosen = pick(
            ready,
            resident=self.models.resident(),
            elsewhere=elsewhere,
            load_s=load_s,
            max_wait_s=self.settings.affinity_wait_s,
        )
        if len(chosen) < len(ready):
            log.debug("left jobs to workers with their model", extra={"left": len(ready) - len(chosen)})
        return chosen
