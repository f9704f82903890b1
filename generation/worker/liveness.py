"""A worker's side of job liveness: a heartbeat for every job it runs, and the reconciler's regular pass.

The heartbeat is a database write every ``job_heartbeat_s`` for all of this worker's running jobs at once, from
the event loop (generation runs in threads, so the loop stays free). When the worker dies, the writes stop
and another worker's (or its own restarted) reconciler takes the jobs back after ``job_stale_after_s``
(``storage/reconcile.py``). Neither a failing write nor a failing pass stops the worker: they are logged and
tried again next time.

The same beat reads back which of its jobs are no longer running on their rows (cancelled, or taken back) and
sets their stop flags, so the generation thread stops at its next step. arq's abort (``allow_abort_jobs``) is the
fast way a cancel reaches the worker; this is the way that does not depend on it: a cancel that reached the
database stops the job wherever it runs, within a heartbeat, even if redis lost the abort.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from storage import jobs
from storage.reconcile import reconcile

log = logging.getLogger(__name__)


class Liveness:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], redis: ArqRedis) -> None:
        self.settings, self.sessions, self.redis = settings, sessions, redis
        #: The jobs this worker runs now, and how many ended since it started (``beatforge status`` shows them).
        self.running: set[int] = set()
        self.finished = 0
        #: Ended by a cancel, a timeout or a shutdown (a job that fails ends normally: its failure is on its row).
        self.interrupted = 0
        #: Each running job's stop flag and arq job id: the flag is set, and arq's abort asked for again, when its
        #: row stops saying "running".
        self._stops: dict[int, tuple[threading.Event, str | None]] = {}
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def holding(self, job_id: int, stop: threading.Event, *, queue_job_id: str | None) -> Iterator[None]:
        """Heartbeat for ``job_id`` while the block runs; stop it if its row stops saying "running": set ``stop``
        (generation checks it between steps) and ask arq to abort ``queue_job_id`` (which ends the job's task even
        while it waits on a batch that others in it keep running)."""
        self.running.add(job_id)
        self._stops[job_id] = (stop, queue_job_id)
        try:
            yield
        except BaseException:
            self.interrupted += 1
            raise
        else:
            self.finished += 1
        finally:
            self.running.discard(job_id)
            self._stops.pop(job_id, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="beatforge-liveness")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        next_pass = time.monotonic()  # reconcile at once: jobs a crashed predecessor left are picked up first
        while True:
            await self.beat()
            if time.monotonic() >= next_pass:
                await self.reconcile()
                next_pass = time.monotonic() + self.settings.reconcile_interval_s
            await asyncio.sleep(min(self.settings.job_heartbeat_s, self.settings.reconcile_interval_s))

    async def beat(self) -> None:
        try:
            async with self.sessions() as session:
                ended = await jobs.heartbeat(session, sorted(self.running))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("heartbeat failed", extra={"jobs": sorted(self.running), "error": repr(exc)})
            return
        for job_id in ended:
            stop, queue_job_id = self._stops.get(job_id, (None, None))
            if stop is None or stop.is_set():
                continue
            log.info("job no longer running on its row (cancelled?); stopping it", extra={"job_id": job_id})
            stop.set()
            if queue_job_id is not None:
                try:
                    await self.redis.zadd(abort_jobs_ss, {queue_job_id: timestamp_ms()})
                except (RedisError, OSError) as exc:  # the flag alone stops it at generation's next step
                    log.warning("could not ask arq to abort", extra={"job_id": job_id, "error": repr(exc)})

    async def reconcile(self) -> None:
        try:
            done = await reconcile(self.sessions, self.redis, self.settings)
        except (RedisError, SQLAlchemyError, OSError) as exc:
            log.warning("reconcile pass failed", extra={"error": repr(exc)})
            return
        if done.retried or done.failed or done.restored:
            log.warning(
                "reconciled jobs", extra={"retried": done.retried, "failed": done.failed, "restored": done.restored}
            )
