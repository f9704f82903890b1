"""The arq worker: one generation at a time per GPU, models loaded at start-up, never on a job's hot path.

More GPUs means more worker processes on the same redis queue. A worker serves one queue (arq's way), its lane's
(``BEATFORGE_WORKER_LANE``): GPU work, or CPU work (MIDI, loops) once ``BEATFORGE_CPU_QUEUE_NAME`` splits it off
(``beatforge.queue.queue_for``); it registers only the functions of the kinds that queue holds. A worker with the
``train`` role (``BEATFORGE_WORKER_ROLES=train``) serves only the training queue.
``beatforge worker`` runs :func:`create_worker`; ``beatforge worker --check`` (the compose healthcheck) reads
:func:`worker_settings`.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from arq import Worker, func
from arq.typing import WorkerCoroutine
from redis.exceptions import RedisError

from beatforge.config import Settings
from beatforge.contract import JobKind
from beatforge.queue import SERIALIZERS, redis_settings, served_kinds, served_queue
from generation.device import resolve_device
from generation.worker.affinity import Affinity
from generation.worker.beat import generate_beat
from generation.worker.context import CONTEXT_KEY, open_context
from generation.worker.cover import draw_cover
from generation.worker.loop import cut_loop_job
from generation.worker.midi import transcribe_midi
from generation.worker.pack import make_pack
from generation.worker.presence import PRESENCE_KEY, start_presence
from generation.worker.train import train_model

log = logging.getLogger(__name__)

#: The key of arq's ``ctx`` that holds the worker's model :class:`Affinity`, when it routes by model.
AFFINITY_KEY = "beatforge:affinity"

#: The function that runs each kind, registered under the contract's name for it (``JobKind.function``).
JOBS: dict[JobKind, WorkerCoroutine] = {
    JobKind.BEAT: generate_beat,
    JobKind.COVER: draw_cover,
    JobKind.LOOP: cut_loop_job,
    JobKind.MIDI: transcribe_midi,
    JobKind.PACK: make_pack,
    JobKind.TRAIN: train_model,
}


async def startup(settings: Settings, ctx: dict[str, Any]) -> None:
    # Reported before the models load (minutes): a worker that is starting is alive, with no job running.
    ctx[PRESENCE_KEY] = presence = start_presence(settings, ctx["redis"], device=resolve_device(settings.device))
    ctx[CONTEXT_KEY] = context = await open_context(settings, ctx["redis"])  # arq's key: the worker's redis pool
    context.liveness.start()
    presence.jobs, presence.models = context.liveness, context.models
    if settings.affinity_wait_s > 0 and {JobKind.BEAT, JobKind.PACK} & set(served_kinds(settings)):
        ctx[AFFINITY_KEY] = Affinity(ctx["redis"], settings, context.models, worker_id=presence.id)


async def shutdown(ctx: dict[str, Any]) -> None:
    if CONTEXT_KEY in ctx:  # absent when start-up failed (it cleans up after itself)
        await ctx[CONTEXT_KEY].close()
    if PRESENCE_KEY in ctx:
        await ctx[PRESENCE_KEY].stop()


def worker_settings(settings: Settings) -> dict[str, Any]:
    """arq settings sized for one GPU: one job at a time, few retries, frequent health checks."""
    training = settings.worker_roles == "train"
    return {
        # the bot enqueues by these names
        "functions": [func(JOBS[kind], name=kind.function) for kind in served_kinds(settings)],
        "queue_name": served_queue(settings),
        "redis_settings": redis_settings(settings),
        "on_startup": partial(startup, settings),
        "on_shutdown": shutdown,
        # several beat jobs at once, so the batcher can put them in one generate call (one GPU, one generate
        # at a time: the batcher's lock); covers, loops and MIDI run beside them
        "max_jobs": 1 if training else settings.worker_max_jobs,  # a training run has the GPU to itself
        "job_timeout": settings.train_job_timeout_s if training else settings.job_timeout_s,
        # arq counts a try each time it starts a job, orderly shutdowns included; the tries that matter (workers
        # dying mid-job) are counted on the job's row and enforced by the reconciler (``job_max_tries``)
        "max_tries": settings.job_max_tries + 10,
        "job_completion_wait": 90,  # on SIGTERM, let the running beat finish (compose: stop_grace_period)
        "poll_delay": settings.worker_poll_delay_s,
        "allow_abort_jobs": True,
        "health_check_interval": 30,
        "keep_result": 0,  # jobs return nothing: a job's outcome is its row, which the bot reads
        **SERIALIZERS,
    }


#: Pauses between polls while redis is unreachable: doubling from the first to the last.
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.25, 2.0


class ResilientWorker(Worker):
    """An arq worker that outlives a redis outage.

    arq's poll loop lets a connection error end the worker (``main`` returns, the process exits), and a poll
    that fails between taking a job slot and starting the job leaks the slot. Here a failed poll is logged and
    retried with backoff; redis-py reconnects on the next command. Running jobs go on: their results live in
    the database, and their progress writes are best effort.
    """

    _reconnect_s = 0.0

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            self._reconnect_s = min(max(self._reconnect_s * 2, RECONNECT_FIRST_S), RECONNECT_MAX_S)
            log.warning("redis unreachable; retrying", extra={"retry_in_s": self._reconnect_s, "error": repr(exc)})
            await asyncio.sleep(self._reconnect_s)
        else:
            if self._reconnect_s:
                log.info("redis reachable again")
            self._reconnect_s = 0.0

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        affinity: Affinity | None = self.ctx.get(AFFINITY_KEY)
        if affinity is not None:  # of the ready jobs, those for this worker's models (or nobody's)
            job_ids = await affinity.choose(job_ids)
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except (RedisError, OSError):
                # arq took a slot for this job just before its redis calls failed, and never gives it back
                self.job_counter -= 1
                self.sem.release()
                raise


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    return ResilientWorker(**{**worker_settings(settings), **overrides})
