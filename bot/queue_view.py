"""The queue as users see it: what is running and waiting, in the order the worker takes it, with when each job
likely starts and finishes (``bot.eta``, from the speeds workers measured).

The order is arq's sorted set (one per queue, ``beatforge.queue.queue_names``), which holds waiting *and*
running jobs until they finish; the rows behind it are the active jobs the caller read from the database. A
snapshot is one redis round trip (order, speeds, the workers' default model, running jobs' progress), taken
once per job watcher tick for every status line, and once per /queue (``bot/cogs/queue.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from arq.connections import ArqRedis
from pydantic import ValidationError

from beatforge.config import Settings
from beatforge.contract import PROGRESS_KEY, BeatParams, JobKind, JobProgress, JobStatus, PackParams
from beatforge.fleet import MODELS_KEY, SPEED_KEY, Speed, parse_models, parse_speeds
from beatforge.queue import queue_for, queue_names
from bot.eta import Estimate, Running, Work, estimate, humanize
from bot.messages import label
from bot.model_choice import default_model
from storage.jobs import JobView

log = logging.getLogger(__name__)

#: Lines /queue lists before summing up the rest (Discord caps a message at 2000 characters).
MAX_LINES = 15


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One job in line. ``job`` is None for an id in redis without a row to show yet (being set up)."""

    queue_job_id: str
    #: 1-based place in arq's sorted set, counted the way status lines count it (running jobs included).
    position: int | None
    job: JobView | None
    running: bool
    progress: JobProgress | None
    estimate: Estimate


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Running jobs first, then the waiting ones in order."""

    entries: tuple[QueueEntry, ...]
    _by_job: dict[int, QueueEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_job", {e.job.id: e for e in self.entries if e.job is not None})

    def entry_for(self, job_id: int) -> QueueEntry | None:
        """The job's place in line, estimate and progress; None for a job the queue does not hold."""
        return self._by_job.get(job_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _progress(raw: bytes | str | None, job_id: int) -> JobProgress | None:
    if not raw:
        return None
    try:
        return JobProgress.model_validate_json(raw)
    except ValidationError:
        log.warning("unreadable progress record", extra={"job_id": job_id})
        return None


def _work(key: str, job: JobView | None, default_model: str, default_duration_s: float) -> Work:
    if job is None:  # nothing known yet: sized as a default beat
        return Work(key, JobKind.BEAT, default_model, default_duration_s)
    model = job.model_name or default_model
    if isinstance(job.params, BeatParams):
        return Work(key, job.kind, model, job.params.duration_s, job.params.generated_takes)
    if isinstance(job.params, PackParams):  # its generation dominates: sized as a beat with a take per loop
        p = job.params
        return Work(key, JobKind.BEAT, model, p.loop.generation_seconds(p.bpm), p.count)
    return Work(key, job.kind, model, 0.0)  # loops, MIDI and covers are timed per job, not per audio second


def _running(work: Work, job: JobView, progress: JobProgress | None, now: datetime) -> Running:
    elapsed = (now - job.started_at).total_seconds() if job.started_at is not None else None
    if progress is not None and progress.stage == "generating":
        return Running(work, fraction_done=progress.done / progress.total, remaining_s=progress.eta_s)
    return Running(work, elapsed_s=elapsed)


async def read_queue(redis: ArqRedis, settings: Settings, active: Sequence[JobView]) -> QueueSnapshot:
    """The queue now, in one redis round trip; ``active``: the queued and running rows (``jobs.list_active``).

    Each queue (``queue_names``: GPU work, and CPU work when it is split off) is its own line of workers, so each
    is estimated on its own; the GPU queue's entries come first.
    """
    lanes = queue_names(settings)
    running_rows = [j for j in active if j.status is JobStatus.RUNNING]
    async with redis.pipeline(transaction=False) as pipe:
        for lane in lanes:
            pipe.zrange(lane, 0, -1)
        pipe.hgetall(SPEED_KEY)
        pipe.get(MODELS_KEY)
        if running_rows:
            pipe.mget([PROGRESS_KEY.format(job_id=j.id) for j in running_rows])
        replies = await pipe.execute()
    orders, (raw_speeds, raw_models, *rest) = replies[: len(lanes)], replies[len(lanes) :]
    speeds = parse_speeds(raw_speeds)
    model = default_model(parse_models(raw_models), settings)
    raw_progress = rest[0] if running_rows else []
    progress = {j.id: _progress(raw, j.id) for j, raw in zip(running_rows, raw_progress, strict=True)}

    def work(queue_job_id: str, job: JobView | None) -> Work:
        return _work(queue_job_id, job, model, settings.default_duration_s)

    now = datetime.now(UTC)
    entries: list[QueueEntry] = []
    for lane, order in zip(lanes, orders, strict=True):
        rows = [j for j in active if queue_for(settings, j.kind) == lane]
        entries += _lane_entries([_text(m) for m in order], rows, progress, work, now, speeds)
    return QueueSnapshot(tuple(entries))


def _lane_entries(
    order: list[str],
    rows: Sequence[JobView],
    progress: dict[int, JobProgress | None],
    work: Callable[[str, JobView | None], Work],
    now: datetime,
    speeds: dict[str, Speed],
) -> list[QueueEntry]:
    """One queue's entries: running in queue order (then any the queue no longer lists), then every waiting id
    in order."""
    by_queue_id = {j.queue_job_id: j for j in rows}
    positions = {queue_job_id: i + 1 for i, queue_job_id in enumerate(order)}
    running_ids = [q for q in order if q in by_queue_id and by_queue_id[q].status is JobStatus.RUNNING]
    running_ids += [j.queue_job_id for j in rows if j.status is JobStatus.RUNNING and j.queue_job_id not in positions]
    waiting_ids = [q for q in order if q not in by_queue_id or by_queue_id[q].status is JobStatus.QUEUED]
    running = [
        _running(work(q, by_queue_id[q]), by_queue_id[q], progress.get(by_queue_id[q].id), now) for q in running_ids
    ]
    estimates = estimate([work(q, by_queue_id.get(q)) for q in waiting_ids], running, speeds)
    return [
        QueueEntry(
            queue_job_id=e.key,
            position=positions.get(e.key),
            job=by_queue_id.get(e.key),
            running=i < len(running),
            progress=progress.get(by_queue_id[e.key].id) if i < len(running) else None,
            estimate=e,
        )
        for i, e in enumerate(estimates)
    ]


def _when(seconds: float, measured: bool) -> str:
    text = humanize(seconds)
    return text if measured or seconds < 60 else f"~{text}"  # "under a minute" is vague enough already


def _entry_line(entry: QueueEntry, *, guild_id: int | None, user_id: int) -> str:
    e, job = entry.estimate, entry.job
    if job is None:
        name, who = "A job being set up", ""
    else:
        name = f"**{label(job)} (yours)**" if job.user_id == user_id else label(job)
        # Other servers' members mean nothing here (and are none of this server's business).
        who = "" if job.user_id == user_id else f" · <@{job.user_id}>" if job.guild_id == guild_id else " · elsewhere"
    if entry.running:
        percent = f" · {entry.progress.percent}%" if entry.progress is not None else ""
        return f"▶️ {name}{who}{percent} · done in {_when(e.end_s, e.measured)}"
    place = f"`#{entry.position}` " if entry.position is not None else ""
    return f"{place}{name}{who} · starts in {_when(e.start_s, e.measured)} · done in {_when(e.end_s, e.measured)}"


def queue_text(entries: Sequence[QueueEntry], *, guild_id: int | None, user_id: int) -> str:
    """What /queue shows: a heading, one line per job (the first ``MAX_LINES``), and what "~" means."""
    if not entries:
        return "📭 The queue is empty: a new job starts right away."
    running = sum(e.running for e in entries)
    lines = [
        f"**Queue**: {running} running, {len(entries) - running} waiting. "
        "Times assume one job at a time, so they are upper bounds."
    ]
    lines += [_entry_line(e, guild_id=guild_id, user_id=user_id) for e in entries[:MAX_LINES]]
    if len(entries) > MAX_LINES:
        mine = sum(1 for e in entries[MAX_LINES:] if e.job is not None and e.job.user_id == user_id)
        lines.append(f"…and {len(entries) - MAX_LINES} more waiting ({mine} of them yours).")
    if not all(e.estimate.measured for e in entries):
        lines.append("~ a guess: no job like it has been timed on this bot yet.")
    return "\n".join(lines)
