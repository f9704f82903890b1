"""Worker presence: every worker process says, every few seconds, that it is alive and what it is doing.

Each process writes ``beatforge:worker:<host>-<pid>`` (``beatforge.fleet.WorkerInfo`` as JSON) every
``worker_presence_interval_s`` with a TTL of three intervals, so a worker that dies without a word (SIGKILL,
the OOM killer, a lost machine) drops off ``beatforge status`` and ``/admin status`` within seconds, and one
that stops cleanly takes its key down at once. A write that fails (redis restarting, a network blip) is logged
and tried again at the next interval; presence never stops the worker or its jobs.

Jobs are counted where the worker runs them (``generation.worker.liveness.Liveness``, which also beats their
hearts); until the worker's context is open none runs, and the report says 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from redis.exceptions import RedisError

from beatforge.config import Settings
from beatforge.fleet import GpuMemory, PresenceRedis, WorkerInfo, publish_worker, remove_worker
from beatforge.queue import served_queue
from generation.worker.affinity import ResidentModels
from generation.worker.liveness import Liveness

log = logging.getLogger(__name__)

#: The key of arq's ``ctx`` that holds the worker's :class:`Presence` (beside the job context's).
PRESENCE_KEY = "beatforge:presence"
#: A report outlives this many missed intervals, so one slow write never makes a live worker vanish.
TTL_INTERVALS = 3


def gpu_memory(device: str) -> GpuMemory | None:
    """What torch holds on ``device``'s GPU, or None on a CPU (or when CUDA cannot answer)."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    return GpuMemory(
        allocated=int(torch.cuda.memory_allocated(index)),
        reserved=int(torch.cuda.memory_reserved(index)),
        total=int(torch.cuda.get_device_properties(index).total_memory),
    )


class Presence:
    """One worker process's report, kept current by a background task (:meth:`start`, :meth:`stop`)."""

    def __init__(self, *, redis: PresenceRedis, device: str, queue: str, max_jobs: int, interval_s: float) -> None:
        self.redis, self.device, self.queue, self.max_jobs, self.interval_s = redis, device, queue, max_jobs, interval_s
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.id = f"{self.host}-{self.pid}"
        self.started_at = time.time()
        #: Where this worker's jobs are counted, and its models loaded, once its context is open.
        self.jobs: Liveness | None = None
        self.models: ResidentModels | None = None
        self._task: asyncio.Task[None] | None = None
        #: Whether the last write failed, so an outage is logged once, not every interval.
        self._failing = False
        self._gpu_broken = False

    # -- reporting --------------------------------------------------------------------------------------------------

    def _gpu(self) -> GpuMemory | None:
        if self._gpu_broken:
            return None
        try:
            return gpu_memory(self.device)
        except RuntimeError as exc:  # a CUDA error here must not stop the reports; memory shows as unknown
            log.warning("cannot read GPU memory; reporting none from now on", extra={"error": repr(exc)})
            self._gpu_broken = True
            return None

    def snapshot(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            seen_at=time.time(),
            queue=self.queue,
            device=self.device,
            jobs_running=len(self.jobs.running) if self.jobs else 0,
            max_jobs=self.max_jobs,
            jobs_finished=self.jobs.finished if self.jobs else 0,
            jobs_interrupted=self.jobs.interrupted if self.jobs else 0,
            gpu=self._gpu(),
            models=tuple(self.models.resident()) if self.models else (),
        )

    async def publish(self) -> bool:
        """Write the report once; False (logged, not raised) when redis cannot take it."""
        try:
            async with asyncio.timeout(self.interval_s * TTL_INTERVALS):
                await publish_worker(self.redis, self.snapshot(), ttl_s=self.interval_s * TTL_INTERVALS)
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning(
                    "could not report this worker's presence; retrying every interval",
                    extra={"worker": self.id, "error": repr(exc)},
                )
            self._failing = True
            return False
        if self._failing:
            log.info("reporting this worker's presence again", extra={"worker": self.id})
        self._failing = False
        return True

    async def _report_forever(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        """Report every interval, from now until :meth:`stop`."""
        self._task = asyncio.create_task(self._report_forever(), name=f"presence {self.id}")
        log.info("worker presence reporting", extra={"worker": self.id, "interval_s": self.interval_s})

    async def stop(self) -> None:
        """Stop reporting and take the report down, so the worker leaves the list now rather than at its TTL."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                # The cancel above; re-raise only if *this* coroutine is being cancelled too.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            self._task = None
        try:
            await remove_worker(self.redis, self.id)
        except (RedisError, OSError) as exc:  # the report expires by itself within its TTL
            log.warning("could not remove this worker's presence", extra={"worker": self.id, "error": repr(exc)})


def start_presence(settings: Settings, redis: PresenceRedis, *, device: str) -> Presence:
    """A started :class:`Presence` for this worker process (``generation.worker.settings.startup``)."""
    presence = Presence(
        redis=redis,
        device=device,
        queue=served_queue(settings),
        max_jobs=settings.worker_max_jobs,
        interval_s=settings.worker_presence_interval_s,
    )
    presence.start()
    return presence
