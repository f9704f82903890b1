"""What the operators ask first: are workers alive, how long is the queue, how are jobs going.

``beatforge status`` and ``/admin status`` show the same facts because both call :func:`gather_status` and only
format its :class:`OpsStatus`. It lives in ``storage`` because that is the one package both the bot and the CLI
may import that sees the database; what it reads from redis (worker presence, the queue's length) goes through
the kernel (``beatforge.fleet``), so storage still knows nothing of either side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.contract import JobStatus
from beatforge.fleet import PresenceRedis, WorkerInfo, read_workers
from storage.models import Generation

log = logging.getLogger(__name__)

#: The window of "recent" job counts.
RECENT = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class JobStats:
    """Jobs in the database: those waiting or running now, and those that finished since ``since``."""

    since: datetime
    queued: int
    running: int
    done_recently: int
    failed_recently: int
    #: Recent failures per ``ErrorCode`` value (``unknown`` for rows without one), most frequent first.
    failures_by_code: dict[str, int] = field(default_factory=dict)


async def job_stats(session: AsyncSession, *, since: datetime) -> JobStats:
    """Count jobs by state now, and the ones that finished since ``since`` by outcome and error code."""
    by_status = dict(
        (await session.execute(select(Generation.status, func.count()).group_by(Generation.status))).tuples().all()
    )
    recent = dict(
        (
            await session.execute(
                select(Generation.status, func.count())
                .where(Generation.finished_at >= since)
                .group_by(Generation.status)
            )
        )
        .tuples()
        .all()
    )
    codes = (
        await session.execute(
            select(Generation.error_code, func.count())
            .where(Generation.status == JobStatus.FAILED, Generation.finished_at >= since)
            .group_by(Generation.error_code)
        )
    ).tuples()
    failures = sorted(((code or "unknown", int(n)) for code, n in codes), key=lambda item: (-item[1], item[0]))
    return JobStats(
        since=since,
        queued=int(by_status.get(JobStatus.QUEUED, 0)),
        running=int(by_status.get(JobStatus.RUNNING, 0)),
        done_recently=int(recent.get(JobStatus.DONE, 0)),
        failed_recently=int(recent.get(JobStatus.FAILED, 0)),
        failures_by_code=dict(failures),
    )


class StatusRedis(PresenceRedis, Protocol):
    def zcard(self, name: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class OpsStatus:
    """Everything ``status`` shows, read at ``at``."""

    at: datetime
    #: Live workers (by host and pid); empty when none reports, or when redis is unreachable (``redis_error``).
    workers: tuple[WorkerInfo, ...]
    #: Jobs in each arq queue (its sorted set: waiting and running), GPU queue first; None when redis is
    #: unreachable.
    queues: dict[str, int | None]
    jobs: JobStats
    #: Why redis could not be read; the database's facts are shown all the same.
    redis_error: str | None = None


async def gather_status(
    *,
    sessions: async_sessionmaker[AsyncSession],
    redis: StatusRedis,
    queue_names: Sequence[str],
    now: datetime | None = None,
) -> OpsStatus:
    """Read the workers and the queue from redis and the job counts from the database.

    An unreachable redis does not fail the whole answer: in an outage, the database's view is what is left to
    look at, and saying "redis unreachable" is itself the most useful fact.
    """
    now = now or datetime.now(UTC)
    async with sessions() as session:
        stats = await job_stats(session, since=now - RECENT)
    try:
        workers = await read_workers(redis)
        depths: dict[str, int | None] = {name: int(await redis.zcard(name)) for name in queue_names}
    except (RedisError, OSError) as exc:
        log.warning("status: redis unreachable", extra={"error": repr(exc)})
        return OpsStatus(now, (), dict.fromkeys(queue_names), stats, redis_error=repr(exc))
    return OpsStatus(now, tuple(workers), depths, stats)
