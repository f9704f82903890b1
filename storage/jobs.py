"""Job rows: keyword-only functions over a session. Transactions stay short and never await Discord or a GPU.

Every write commits before it returns, so a caller can mix reads and writes on one session.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.sql import ColumnElement

from beatforge.contract import (
    ArtifactKind,
    BeatParams,
    ErrorCode,
    JobKind,
    JobParams,
    JobStatus,
    Relation,
    parse_params,
)
from storage.artifacts import ArtifactRecord
from storage.claims import Shards, claim_free_for, in_shards
from storage.errors import JobNotFound
from storage.models import Artifact, Generation, User, utcnow


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as callers see it: plain data, detached from the session."""

    id: int
    kind: JobKind
    parent_id: int | None
    #: How it came from its parent (None: made from scratch).
    relation: Relation | None
    user_id: int
    guild_id: int | None
    channel_id: int | None
    status_message_id: int | None
    result_message_id: int | None
    kept: bool
    queue_job_id: str
    #: The model of its kind: ``BeatParams`` for a beat, ``CoverParams`` for a cover, and so on.
    params: JobParams
    status: JobStatus
    #: What the worker ran: the music model of a beat (and of a loop, the beat's), the transcriber, the cover model.
    resolved_model: str | None
    error_code: ErrorCode | None
    error: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    delivered_at: datetime | None
    artifacts: tuple[ArtifactRecord, ...]
    #: Times a worker took it: above 1 while queued or running means a worker stopped mid-job and it is retried.
    attempts: int = 0
    heartbeat_at: datetime | None = None
    #: Failed delivery attempts so far.
    delivery_attempts: int = 0
    #: When ``beatforge gc`` removed its files (None: they are kept).
    files_removed_at: datetime | None = None
    #: The bot process whose delivery claim the row holds, and until when (``claim_delivery``).
    delivery_claimed_by: str | None = None
    delivery_claimed_until: datetime | None = None

    @property
    def model_name(self) -> str | None:
        """Which model made this result: the one the worker ran; before it runs, the music model asked for
        (None: the worker's default). The one answer to "which model", wherever it is shown or reused."""
        if self.resolved_model is not None:
            return self.resolved_model
        return self.params.model if isinstance(self.params, BeatParams) else None

    @property
    def seconds_taken(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def _view(row: Generation) -> JobView:
    return JobView(
        id=row.id,
        kind=JobKind(row.kind),
        parent_id=row.parent_id,
        relation=Relation(row.relation) if row.relation else None,
        user_id=row.user_id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        status_message_id=row.status_message_id,
        result_message_id=row.result_message_id,
        kept=bool(row.kept),
        queue_job_id=row.queue_job_id or str(row.id),
        params=parse_params(JobKind(row.kind), row.params),
        status=JobStatus(row.status),
        resolved_model=row.resolved_model,
        error_code=ErrorCode(row.error_code) if row.error_code else None,
        error=row.error,
        queued_at=row.queued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        delivered_at=row.delivered_at,
        artifacts=tuple(
            ArtifactRecord(kind=ArtifactKind(a.kind), path=a.path, bytes=a.bytes, sha256=a.sha256, meta=a.meta)
            for a in row.artifacts
        ),
        attempts=row.attempts or 0,
        heartbeat_at=row.heartbeat_at,
        delivery_attempts=row.delivery_attempts or 0,
        files_removed_at=row.files_removed_at,
        delivery_claimed_by=row.delivery_claimed_by,
        delivery_claimed_until=row.delivery_claimed_until,
    )


async def create_job(
    session: AsyncSession,
    *,
    params: JobParams,
    user_id: int,
    user_name: str,
    guild_id: int | None,
    channel_id: int | None,
    parent_id: int | None = None,
    relation: Relation | None = None,
) -> JobView:
    """Record a queued job (and its user, first time seen); its kind is its parameters' (``params.kind``)."""
    await _upsert_user(session, user_id, user_name[:100])
    row = Generation(
        kind=params.kind,
        parent_id=parent_id,
        relation=relation,
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        params=params.model_dump(mode="json"),
        status=JobStatus.QUEUED,
        artifacts=[],
    )
    session.add(row)
    await session.flush()
    row.queue_job_id = f"{row.id}-{secrets.token_hex(4)}"
    await session.commit()
    return _view(row)


async def _upsert_user(session: AsyncSession, user_id: int, name: str) -> None:
    """One statement, so a new user's first two commands at once cannot both insert (SQLite and PostgreSQL)."""
    values = {"id": user_id, "name": name, "created_at": utcnow()}
    if session.get_bind().dialect.name == "postgresql":
        pg = postgresql_insert(User).values(**values)
        await session.execute(pg.on_conflict_do_update(index_elements=[User.id], set_={"name": name}))
    else:
        lite = sqlite_insert(User).values(**values)
        await session.execute(lite.on_conflict_do_update(index_elements=[User.id], set_={"name": name}))


async def get_job(session: AsyncSession, job_id: int) -> JobView:
    row = await session.scalar(
        select(Generation).where(Generation.id == job_id).options(selectinload(Generation.artifacts))
    )
    if row is None:
        raise JobNotFound(job_id)
    return _view(row)


async def _update(session: AsyncSession, job_id: int, *conditions: object, **values: object) -> bool:
    result = await session.execute(
        update(Generation).where(Generation.id == job_id, *conditions).values(**values)  # type: ignore[arg-type]
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_status_message(session: AsyncSession, job_id: int, message_id: int) -> None:
    await _update(session, job_id, status_message_id=message_id)


async def mark_running(session: AsyncSession, job_id: int, *, resolved_model: str | None = None) -> bool:
    """Queued (or re-run after a crash) → running. False if the job is already finished, so a retry is a no-op."""
    return await _update(
        session,
        job_id,
        Generation.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        status=JobStatus.RUNNING,
        started_at=utcnow(),
        resolved_model=resolved_model,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """A worker's try at a job: which try it is, and whose job (for the worker's log lines)."""

    number: int
    user_id: int
    guild_id: int | None


async def start_attempt(session: AsyncSession, job_id: int) -> Attempt | None:
    """A worker took the job: queued (or running, after a crash) → running, one try more, a first heartbeat.

    None when the job already finished (a re-run after a restart, or cancelled while it waited): the worker then
    leaves it alone.
    """
    now = utcnow()
    row = (
        await session.execute(
            update(Generation)
            .where(Generation.id == job_id, Generation.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .values(status=JobStatus.RUNNING, attempts=Generation.attempts + 1, heartbeat_at=now, started_at=now)
            .returning(Generation.attempts, Generation.user_id, Generation.guild_id)
        )
    ).one_or_none()
    await session.commit()
    return Attempt(number=row.attempts, user_id=row.user_id, guild_id=row.guild_id) if row is not None else None


async def heartbeat(session: AsyncSession, job_ids: Sequence[int]) -> list[int]:
    """The worker running these jobs is alive (one statement for all of them). Returns those of them whose rows
    no longer say running (cancelled, or taken back from a worker presumed dead): the worker stops them."""
    if not job_ids:
        return []
    await session.execute(
        update(Generation)
        .where(Generation.id.in_(job_ids), Generation.status == JobStatus.RUNNING)
        .values(heartbeat_at=utcnow())
    )
    await session.commit()
    ended = await session.scalars(
        select(Generation.id).where(Generation.id.in_(job_ids), Generation.status != JobStatus.RUNNING)
    )
    return list(ended)


async def requeue(session: AsyncSession, job_id: int) -> None:
    """Running → queued, when a worker shuts down mid-job and the queue will hand the job out again.

    An orderly shutdown (a deploy) does not count as a try: only a worker that dies costs one.
    """
    await _update(
        session,
        job_id,
        Generation.status == JobStatus.RUNNING,
        status=JobStatus.QUEUED,
        started_at=None,
        heartbeat_at=None,
        attempts=case((Generation.attempts > 0, Generation.attempts - 1), else_=0),
    )


def _silent_since(moment: datetime) -> ColumnElement[bool]:
    """The row showed no life since ``moment``: no heartbeat (rows from before heartbeats: no start, no queueing)."""
    return func.coalesce(Generation.heartbeat_at, Generation.started_at, Generation.queued_at) < moment


async def list_stale_running(session: AsyncSession, *, silent_since: datetime) -> list[JobView]:
    """Running jobs whose worker has said nothing since ``silent_since``: it died (SIGKILL, OOM, power)."""
    rows = await session.scalars(
        select(Generation)
        .where(Generation.status == JobStatus.RUNNING, _silent_since(silent_since))
        .order_by(Generation.id)
        .options(selectinload(Generation.artifacts))
    )
    return [_view(r) for r in rows]


async def list_queued(session: AsyncSession, *, queued_before: datetime) -> list[JobView]:
    """Queued jobs older than ``queued_before`` (younger ones may still be on their way to the queue)."""
    rows = await session.scalars(
        select(Generation)
        .where(Generation.status == JobStatus.QUEUED, Generation.queued_at < queued_before)
        .order_by(Generation.id)
        .options(selectinload(Generation.artifacts))
    )
    return [_view(r) for r in rows]


async def take_back(session: AsyncSession, job_id: int, *, silent_since: datetime) -> bool:
    """Running with a stopped heartbeat → queued. False when the job showed life or moved on meanwhile, or another
    reconciler took it back first: only the caller that gets True re-queues it."""
    return await _update(
        session,
        job_id,
        Generation.status == JobStatus.RUNNING,
        _silent_since(silent_since),
        status=JobStatus.QUEUED,
        heartbeat_at=None,
    )


async def mark_done(session: AsyncSession, job_id: int, *, artifacts: Sequence[ArtifactRecord]) -> bool:
    """Record the files and finish the job in one transaction; re-running replaces earlier rows (idempotent).

    False (and nothing recorded) when the job has failed meanwhile: it was cancelled while it ran.
    """
    # The status first, as one conditional write: from it until the commit the row (PostgreSQL) or the whole
    # database (SQLite) is this transaction's, so a cancel committed before it wins and one after it waits
    # (tests/storage/test_postgres.py races them). Reading the row first would leave a window between the two.
    finished = await session.execute(
        update(Generation)
        .where(Generation.id == job_id, Generation.status != JobStatus.FAILED)
        .values(status=JobStatus.DONE, finished_at=utcnow(), error_code=None, error=None)
    )
    if not finished.rowcount:  # type: ignore[attr-defined]
        await session.rollback()
        if await session.get(Generation, job_id) is None:
            raise JobNotFound(job_id)
        return False
    row = await session.get(Generation, job_id, options=[selectinload(Generation.artifacts)], populate_existing=True)
    if row is None:  # updated just now, in this transaction: only a bug gets here
        raise JobNotFound(job_id)
    kept = [a for a in row.artifacts if a.path not in {r.path for r in artifacts}]
    row.artifacts = kept + [
        Artifact(kind=r.kind, path=r.path, bytes=r.bytes, sha256=r.sha256, meta=r.meta) for r in artifacts
    ]
    await session.commit()
    return True


async def mark_failed(session: AsyncSession, job_id: int, *, code: ErrorCode, message: str) -> bool:
    """Fail the job with why; False when it had already failed, whose first reason stands (a cancelled job's
    worker stopping is not a second failure)."""
    return await _update(
        session,
        job_id,
        Generation.status != JobStatus.FAILED,
        status=JobStatus.FAILED,
        error_code=code,
        error=message[:2000],
        finished_at=utcnow(),
    )


async def cancel(session: AsyncSession, job_id: int, *, by: str) -> bool:
    """Queued or running → failed (cancelled). False when it had already finished."""
    return await _update(
        session,
        job_id,
        Generation.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        status=JobStatus.FAILED,
        error_code=ErrorCode.CANCELLED,
        error=f"cancelled by {by}"[:2000],
        finished_at=utcnow(),
    )


async def set_result_message(session: AsyncSession, job_id: int, message_id: int) -> None:
    await _update(session, job_id, result_message_id=message_id)


async def set_kept(session: AsyncSession, job_id: int, kept: bool) -> None:
    await _update(session, job_id, kept=kept)


async def find_by_message(session: AsyncSession, message_id: int) -> JobView | None:
    """The job whose result (or status) message this is, e.g. the one a 🔁 reaction was added to."""
    row = await session.scalar(
        select(Generation)
        .where((Generation.result_message_id == message_id) | (Generation.status_message_id == message_id))
        .options(selectinload(Generation.artifacts))
        .limit(1)
    )
    return _view(row) if row is not None else None


async def list_history(
    session: AsyncSession, *, user_id: int, guild_id: int | None, offset: int = 0, limit: int = 5, kept: bool = False
) -> tuple[list[JobView], int]:
    """A user's jobs on a server, newest first, one page of them, and how many there are in all."""
    where = [Generation.user_id == user_id, Generation.guild_id == guild_id]
    if kept:
        where.append(Generation.kept.is_(True))
    total = await session.scalar(select(func.count()).select_from(Generation).where(*where))
    rows = await session.scalars(
        select(Generation)
        .where(*where)
        .order_by(Generation.id.desc())
        .offset(offset)
        .limit(limit)
        .options(selectinload(Generation.artifacts))
    )
    return [_view(r) for r in rows], int(total or 0)


async def lineage(session: AsyncSession, job_id: int, *, depth: int = 10) -> list[JobView]:
    """The job's ancestors, nearest first (a re-roll of an extend of a beat: [extend, beat])."""
    found: list[JobView] = []
    parent_id = (await get_job(session, job_id)).parent_id
    while parent_id is not None and len(found) < depth:
        try:
            parent = await get_job(session, parent_id)
        except JobNotFound:
            break
        found.append(parent)
        parent_id = parent.parent_id
    return found


@dataclass(frozen=True, slots=True)
class UserActivity:
    """What the rate limits look at: a user's jobs now, and those started within the window."""

    active: int
    recent: int
    oldest_recent: datetime | None


async def user_activity(session: AsyncSession, *, user_id: int, since: datetime) -> UserActivity:
    mine = Generation.user_id == user_id
    active = await session.scalar(
        select(func.count())
        .select_from(Generation)
        .where(mine, Generation.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
    )
    recent, oldest = (
        await session.execute(
            select(func.count(), func.min(Generation.queued_at)).where(mine, Generation.queued_at >= since)
        )
    ).one()
    if oldest is not None and oldest.tzinfo is None:  # aggregates bypass the column type's conversion
        oldest = oldest.replace(tzinfo=UTC)
    return UserActivity(active=int(active or 0), recent=int(recent or 0), oldest_recent=oldest)


async def mark_delivered(session: AsyncSession, job_id: int) -> bool:
    """The job's result (or the notice that it could not be delivered) is out: the outbox is done with it, and its
    delivery claim is let go.

    False when it was already marked: two bots that both posted (one's claim expired mid-upload) cannot both count
    the delivery, and the first mark's time stays.
    """
    return await _update(
        session,
        job_id,
        Generation.delivered_at.is_(None),
        delivered_at=utcnow(),
        deliver_after=None,
        delivery_claimed_by=None,
        delivery_claimed_until=None,
    )


async def list_undelivered(
    session: AsyncSession,
    *,
    now: datetime | None = None,
    exclude: Sequence[int] = (),
    limit: int = 20,
    owner: str | None = None,
    shards: Shards | None = None,
) -> list[JobView]:
    """Finished jobs whose result has not reached Discord yet and whose next try is due, oldest first.

    ``now``: when "due" is measured (default: the clock); ``exclude``: jobs whose delivery is already in hand;
    ``owner``: the asking bot, whose own claims do not hide a job (others' live claims do); ``shards``: only the
    jobs of these shards' guilds, filtered in SQL so a bot never reads another shard's rows.
    """
    moment = now or utcnow()
    due = Generation.deliver_after.is_(None) | (Generation.deliver_after <= moment)
    where = [
        Generation.status.in_([JobStatus.DONE, JobStatus.FAILED]),
        Generation.delivered_at.is_(None),
        due,
        claim_free_for(owner, moment),
    ]
    if exclude:
        where.append(Generation.id.not_in(exclude))
    if shards is not None:
        where.append(in_shards(shards))
    rows = await session.scalars(
        select(Generation)
        .where(*where)
        .order_by(Generation.id)
        .limit(limit)
        .options(selectinload(Generation.artifacts))
    )
    return [_view(r) for r in rows]


async def list_active(session: AsyncSession, *, shards: Shards | None = None) -> list[JobView]:
    """Queued and running jobs that have a status message to keep up to date (``shards``: of these shards' guilds)."""
    where: list[ColumnElement[bool]] = [
        Generation.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        Generation.status_message_id.is_not(None),
    ]
    if shards is not None:
        where.append(in_shards(shards))
    rows = await session.scalars(
        select(Generation).where(*where).order_by(Generation.id).options(selectinload(Generation.artifacts))
    )
    return [_view(r) for r in rows]


async def active_of_kind(session: AsyncSession, *, guild_id: int, kind: JobKind) -> JobView | None:
    """The server's oldest queued or running job of ``kind`` (one training run per server at a time), or None."""
    row = await session.scalar(
        select(Generation)
        .where(
            Generation.guild_id == guild_id,
            Generation.kind == kind,
            Generation.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        )
        .order_by(Generation.id)
        .limit(1)
        .options(selectinload(Generation.artifacts))
    )
    return _view(row) if row is not None else None


async def count_jobs(session: AsyncSession, *, status: JobStatus | None = None) -> int:
    query = select(func.count()).select_from(Generation)
    if status is not None:
        query = query.where(Generation.status == status)
    return int(await session.scalar(query) or 0)


async def delay_delivery(
    session: AsyncSession, job_id: int, *, attempts: int, until: datetime, owner: str | None = None
) -> None:
    """A delivery attempt failed: record it (``attempts`` failed so far) and when to try again, and let ``owner``'s
    claim go, so the retry is whichever bot comes first once it is due.

    Kept on the row, not in the bot's memory, so a restart neither forgets how often it failed nor retries at once.
    """
    values: dict[str, object] = {"delivery_attempts": attempts, "deliver_after": until}
    if owner is not None:  # only the claim's holder's own: one that lost it meanwhile must not free another's
        values["delivery_claimed_by"] = case(
            (Generation.delivery_claimed_by == owner, None), else_=Generation.delivery_claimed_by
        )
        values["delivery_claimed_until"] = case(
            (Generation.delivery_claimed_by == owner, None), else_=Generation.delivery_claimed_until
        )
    await _update(session, job_id, Generation.delivered_at.is_(None), **values)
