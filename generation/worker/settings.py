"""The arq worker: one generation at a time per GPU, models loaded at start-up, never on a job's hot path.

More GPUs means more worker processes on the same redis queue. ``beatforge worker`` runs :func:`create_worker`;
``beatforge worker --check`` (the compose healthcheck) reads :func:`worker_settings`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from arq import Worker, func
from arq.typing import WorkerCoroutine

from beatforge.config import Settings
from beatforge.contract import JobKind
from beatforge.queue import SERIALIZERS, redis_settings
from generation.worker.beat import generate_beat
from generation.worker.context import CONTEXT_KEY, open_context
from generation.worker.cover import draw_cover
from generation.worker.loop import cut_loop_job
from generation.worker.midi import transcribe_midi

#: The function that runs each kind, registered under the contract's name for it (``JobKind.function``).
JOBS: dict[JobKind, WorkerCoroutine] = {
    JobKind.BEAT: generate_beat,
    JobKind.COVER: draw_cover,
    JobKind.LOOP: cut_loop_job,
    JobKind.MIDI: transcribe_midi,
}


async def startup(settings: Settings, ctx: dict[str, Any]) -> None:
    ctx[CONTEXT_KEY] = await open_context(settings, ctx["redis"])  # arq's own key: the worker's redis pool


async def shutdown(ctx: dict[str, Any]) -> None:
    if CONTEXT_KEY in ctx:  # absent when start-up failed (it cleans up after itself)
        await ctx[CONTEXT_KEY].close()


def worker_settings(settings: Settings) -> dict[str, Any]:
    """arq settings sized for one GPU: one job at a time, few retries, frequent health checks."""
    return {
        # the bot enqueues by these names
        "functions": [func(job, name=kind.function) for kind, job in JOBS.items()],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings),
        "on_startup": partial(startup, settings),
        "on_shutdown": shutdown,
        # several beat jobs at once, so the batcher can put them in one generate call (one GPU, one generate
        # at a time: the batcher's lock); covers, loops and MIDI run beside them
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.job_timeout_s,
        "max_tries": 2,
        "job_completion_wait": 90,  # on SIGTERM, let the running beat finish (compose: stop_grace_period)
        "poll_delay": settings.worker_poll_delay_s,
        "allow_abort_jobs": True,
        "health_check_interval": 30,
        "keep_result": 0,  # jobs return nothing: a job's outcome is its row, which the bot reads
        **SERIALIZERS,
    }


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    return Worker(**{**worker_settings(settings), **overrides})
