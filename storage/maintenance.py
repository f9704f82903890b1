"""Keeping the artifact directory and the database in agreement: ``beatforge gc`` and ``beatforge doctor``.

The rows say which files exist (``artifacts.path``, relative to the artifact directory; uploads are named by
their jobs' parameters instead), and the files are what users download. Crashes, full disks, restores and
hand edits make the two drift; these functions find where, and fix what is safe to fix.

What is never touched, by either: files of kept (⭐) jobs; files queued or running jobs have, make, or read
(their own folder, their parent's files, anything their parameters name); fresh temporary files of atomic
writes (``storage.files``) and fresh uploads, which may still be waiting for their job's row. The directory is
listed before the database is read, so a job that finishes in between is seen with its rows.

Garbage collection removes the files and the rows of finished jobs past their age or beyond the quota. The
job rows themselves stay (history, lineage and limits read them), with ``files_removed_at`` set, so anyone,
``doctor`` included, can tell a result collected on purpose from one that was lost.

With ``BEATFORGE_ARTIFACT_BACKEND=s3`` the bucket is the storage and every local folder only a cache, so a file
missing here proves nothing: both then judge the bucket's objects instead (``storage/bucket_files.py``), and gc
deletes objects (and this machine's cached copies).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.contract import ArtifactKind, ErrorCode, JobKind, JobStatus
from storage import jobs
from storage.artifact_files import UPLOADS, ArtifactFiles, FolderFiles, StoredFile
from storage.artifacts import ArtifactStore
from storage.models import Artifact, Generation

log = logging.getLogger(__name__)

#: What doctor --repair writes on a done job whose result files are gone from ``where`` the files are kept.
RESULT_LOST_FROM = "its result files are missing from {where} (found by beatforge doctor)"
RESULT_LOST = RESULT_LOST_FROM.format(where="the artifact directory")
#: Unreferenced uploads younger than this may be waiting for their job's row.
UPLOAD_GRACE = timedelta(days=1)
#: Unreferenced files younger than this are left alone: a write may still be on its way to its row.
FILE_GRACE = timedelta(hours=1)
#: The artifact a finished job of each kind must have to show its result.
REQUIRED_ARTIFACT: dict[JobKind, ArtifactKind] = {
    JobKind.BEAT: ArtifactKind.AUDIO,
    JobKind.COVER: ArtifactKind.COVER,
    JobKind.LOOP: ArtifactKind.LOOP,
    JobKind.MIDI: ArtifactKind.MIDI,
    JobKind.PACK: ArtifactKind.PACK,
}
#: How parameters name a stored file (``beatforge.contract.params.ArtifactPath``).
_STORED_PATH = re.compile(rf"(?:{UPLOADS}|\d+)/[\w.-]+")
_KINDS = {kind.value: kind for kind in JobKind}
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
_FINISHED = (JobStatus.DONE, JobStatus.FAILED)


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    id: int
    job_id: int
    kind: str
    path: str
    bytes: int


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    kind: str
    status: JobStatus
    kept: bool
    parent_id: int | None
    #: When it finished (when it was queued, for old rows without a finish time).
    finished_at: datetime
    #: Its last sign of life while running: the heartbeat, else when it started.
    alive_at: datetime | None
    #: Garbage collection removed its files on purpose.
    files_removed: bool
    #: Upload and artifact paths its parameters name (a melody, an upload to transcribe, a take to continue).
    inputs: frozenset[str]
    artifacts: tuple[ArtifactRow, ...] = ()


async def load_rows(session: AsyncSession) -> dict[int, JobRow]:
    """Every job with its artifact rows, as plain data (two queries; fine for an admin command)."""
    artifacts: dict[int, list[ArtifactRow]] = {}
    for a in (
        await session.execute(
            select(Artifact.id, Artifact.generation_id, Artifact.kind, Artifact.path, Artifact.bytes).order_by(
                Artifact.id
            )
        )
    ).tuples():
        artifacts.setdefault(a[1], []).append(ArtifactRow(*a))
    rows = await session.execute(
        select(
            Generation.id,
            Generation.kind,
            Generation.status,
            Generation.kept,
            Generation.parent_id,
            Generation.finished_at,
            Generation.queued_at,
            Generation.heartbeat_at,
            Generation.started_at,
            Generation.files_removed_at,
            Generation.params,
        )
    )
    return {
        r.id: JobRow(
            id=r.id,
            kind=r.kind,
            status=JobStatus(r.status),
            kept=bool(r.kept),
            parent_id=r.parent_id,
            finished_at=r.finished_at or r.queued_at,
            alive_at=r.heartbeat_at or r.started_at,
            files_removed=r.files_removed_at is not None,
            inputs=frozenset(_paths_in(r.params)),
            artifacts=tuple(artifacts.get(r.id, ())),
        )
        for r in rows
    }


def _paths_in(value: Any) -> Iterator[str]:
    """Strings in a job's parameters that name a stored file (any field: new parameters need no change here)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _paths_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _paths_in(item)
    elif isinstance(value, str) and _STORED_PATH.fullmatch(value):
        yield value


def _protected(rows: dict[int, JobRow]) -> tuple[set[int], set[str]]:
    """Jobs whose files stay, and paths that stay whoever owns them (see the module's docstring)."""
    keep_jobs: set[int] = set()
    keep_paths: set[str] = set()
    for row in rows.values():
        if row.status in _ACTIVE or row.kept:
            keep_jobs.add(row.id)
            keep_paths |= row.inputs
            if row.status in _ACTIVE and row.parent_id is not None:
                keep_jobs.add(row.parent_id)  # a loop, MIDI, cover or extension reads its parent's files
    return keep_jobs, keep_paths


# -- garbage collection -------------------------------------------------------------------------------------------


class Reason(StrEnum):
    AGE = "age"
    QUOTA = "quota"
    UPLOAD = "unused upload"


@dataclass(frozen=True, slots=True)
class Removal:
    path: str
    bytes: int
    reason: Reason
    #: The artifact row removed with the file; None for an upload.
    artifact_id: int | None = None
    job_id: int | None = None


@dataclass(frozen=True, slots=True)
class GcReport:
    removals: tuple[Removal, ...]
    #: Bytes under the artifact directory before, and what removing ``removals`` frees.
    used_bytes: int
    dry_run: bool
    #: Files that could not be deleted (their rows are gone; ``doctor`` lists them as orphans).
    failed: tuple[str, ...] = ()

    @property
    def freed_bytes(self) -> int:
        return sum(r.bytes for r in self.removals)


def plan_gc(
    rows: dict[int, JobRow],
    files: Iterable[StoredFile],
    *,
    now: datetime,
    max_age: timedelta | None,
    quota_bytes: int | None,
) -> tuple[list[Removal], int]:
    """What to remove and the bytes in use now.

    Whole jobs go, never one file of a job: first every finished job older than ``max_age``, then, while the
    rest is over ``quota_bytes``, the oldest finished jobs; then uploads no remaining job names.
    """
    on_disk = {f.path: f for f in files}
    used = sum(f.bytes for f in on_disk.values())
    keep_jobs, keep_paths = _protected(rows)
    finished = sorted(
        (row for row in rows.values() if row.status in _FINISHED and row.id not in keep_jobs),
        key=lambda row: (row.finished_at, row.id),
    )

    def removals_of(row: JobRow, reason: Reason) -> list[Removal]:
        # a row of a missing file frees nothing, but goes with its job
        return [
            Removal(a.path, on_disk[a.path].bytes if a.path in on_disk else 0, reason, a.id, row.id)
            for a in row.artifacts
            if a.path not in keep_paths
        ]

    expired: set[int] = set()
    removals: list[Removal] = []
    if max_age is not None:
        for row in finished:
            if row.finished_at < now - max_age:
                expired.add(row.id)
                removals += removals_of(row, Reason.AGE)
    remaining = used - sum(r.bytes for r in removals)
    if quota_bytes is not None:
        for row in finished:
            if remaining <= quota_bytes:
                break
            if row.id in expired or not row.artifacts:
                continue
            expired.add(row.id)
            evicted = removals_of(row, Reason.QUOTA)
            removals += evicted
            remaining -= sum(r.bytes for r in evicted)

    # An upload stays while a job that keeps its files names it (to re-roll a melody beat, say).
    still_used = set(keep_paths)
    for row in rows.values():
        if row.id not in expired:
            still_used |= row.inputs
    for file in on_disk.values():
        if (
            file.folder == UPLOADS
            and not file.temporary
            and file.path not in still_used
            and file.modified < now - UPLOAD_GRACE
        ):
            removals.append(Removal(file.path, file.bytes, Reason.UPLOAD))
    return removals, used


async def collect_garbage(
    *,
    sessions: async_sessionmaker[AsyncSession],
    store: ArtifactStore,
    max_age_days: float,
    quota_gb: float,
    dry_run: bool,
    now: datetime | None = None,
    kept_in: ArtifactFiles | None = None,
) -> GcReport:
    """Remove what :func:`plan_gc` picks (or only say what, with ``dry_run``). 0 days / 0 GiB = no limit.

    Rows go first, in one transaction that checks again that each job is finished and not kept (a ⭐ or a new
    child job may have arrived since the plan), then the files of the rows actually deleted.

    ``kept_in``: where the files are (default: ``store``'s directory; the bucket with s3).
    """
    now = now or datetime.now(UTC)
    kept_in = kept_in or FolderFiles(store)
    files = await asyncio.to_thread(kept_in.scan)
    async with sessions() as session:
        rows = await load_rows(session)
    removals, used = plan_gc(
        rows,
        files,
        now=now,
        max_age=timedelta(days=max_age_days) if max_age_days > 0 else None,
        quota_bytes=int(quota_gb * 2**30) if quota_gb > 0 else None,
    )
    if dry_run or not removals:
        return GcReport(tuple(removals), used, dry_run)

    artifact_ids = [r.artifact_id for r in removals if r.artifact_id is not None]
    deleted: set[int] = set()
    async with sessions() as session:
        for chunk in _chunks(artifact_ids, 500):
            result = await session.execute(
                delete(Artifact)
                .where(
                    Artifact.id.in_(chunk),
                    Artifact.generation_id.in_(
                        select(Generation.id).where(Generation.status.in_(_FINISHED), Generation.kept.is_(False))
                    ),
                )
                .returning(Artifact.id)
            )
            deleted |= set(result.scalars())
        emptied = {r.job_id for r in removals if r.artifact_id in deleted}
        for chunk in _chunks(sorted(j for j in emptied if j is not None), 500):
            await session.execute(
                update(Generation)
                .where(Generation.id.in_(chunk), Generation.status == JobStatus.DONE)
                .values(files_removed_at=now)
            )
        await session.commit()
    done = [r for r in removals if r.artifact_id is None or r.artifact_id in deleted]
    failed = await asyncio.to_thread(kept_in.delete, [r.path for r in done])
    log.info("garbage collected", extra={"files": len(done), "bytes": sum(r.bytes for r in done)})
    return GcReport(tuple(done), used, dry_run, tuple(failed))


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- doctor ---------------------------------------------------------------------------------------------------------


class Problem(StrEnum):
    MISSING_FILE = "missing file"
    SIZE_MISMATCH = "size mismatch"
    ORPHAN_FILE = "orphan file"
    NO_RESULT = "done without result"
    STALE_RUNNING = "stale running job"


#: What ``--repair`` does for each problem; None: reported only, an admin decides.
REPAIRS: dict[Problem, str | None] = {
    Problem.MISSING_FILE: "drops the artifact row",
    Problem.SIZE_MISMATCH: None,
    Problem.ORPHAN_FILE: "deletes the file",
    Problem.NO_RESULT: "marks the job failed, saying its files are missing",
    Problem.STALE_RUNNING: None,
}


@dataclass(slots=True)
class Finding:
    problem: Problem
    #: What it is about: a relative path, or ``job #N``.
    subject: str
    detail: str
    repaired: bool = False

    @property
    def repairable(self) -> bool:
        return REPAIRS[self.problem] is not None

    def line(self) -> str:
        if self.repaired:
            state = f"repaired: {REPAIRS[self.problem]}"
        elif self.repairable:
            state = f"--repair {REPAIRS[self.problem]}"
        else:
            state = "not repaired automatically"
        return f"{self.problem.value}: {self.subject}: {self.detail} [{state}]"


@dataclass(frozen=True, slots=True)
class DoctorReport:
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    repair: bool = False

    @property
    def clean(self) -> bool:
        """Nothing found, or (with repair) everything found was repaired."""
        return all(f.repaired for f in self.findings)


def examine(
    rows: dict[int, JobRow],
    files: Iterable[StoredFile],
    *,
    kept_in: ArtifactFiles,
    now: datetime,
    stale_after: timedelta,
) -> list[Finding]:
    """Every disagreement between ``rows`` and ``files`` (see :class:`Problem`), one finding each."""
    on_disk = {f.path: f for f in files}
    findings: list[Finding] = []
    referenced: set[str] = set()
    missing: set[int] = set()
    for row in rows.values():
        referenced |= row.inputs
        for a in row.artifacts:
            referenced.add(a.path)
            file = on_disk.get(a.path)
            if file is None and not kept_in.exists(a.path):
                missing.add(a.id)
                findings.append(Finding(Problem.MISSING_FILE, a.path, f"job #{row.id}'s {a.kind} file is gone"))
            elif file is not None and file.bytes != a.bytes:
                findings.append(
                    Finding(
                        Problem.SIZE_MISMATCH,
                        a.path,
                        f"job #{row.id}'s {a.kind} is {file.bytes} bytes, its row says {a.bytes} "
                        "(restore it, or delete it and run doctor --repair)",
                    )
                )

    for row in rows.values():
        required = REQUIRED_ARTIFACT.get(_KINDS[row.kind]) if row.kind in _KINDS else None
        if row.status is not JobStatus.DONE or required is None or row.files_removed:
            continue
        if not any(a.kind == required and a.id not in missing for a in row.artifacts):
            findings.append(Finding(Problem.NO_RESULT, f"job #{row.id}", f"a done {row.kind} without its {required}"))

    for row in rows.values():
        if row.status is JobStatus.RUNNING and (row.alive_at is None or row.alive_at < now - stale_after):
            silent = "never" if row.alive_at is None else f"{(now - row.alive_at).total_seconds():.0f} s ago"
            findings.append(
                Finding(
                    Problem.STALE_RUNNING,
                    f"job #{row.id}",
                    f"running, last sign of life {silent} (a running worker's reconciler takes it back; "
                    "start one if none runs)",
                )
            )

    active_folders = {str(row.id) for row in rows.values() if row.status in _ACTIVE}
    for file in on_disk.values():
        if file.path in referenced or file.folder in active_folders:
            continue
        grace = UPLOAD_GRACE if file.folder == UPLOADS and not file.temporary else FILE_GRACE
        if file.modified >= now - grace:
            continue
        what = "a temporary file left by an interrupted write" if file.temporary else "no row refers to it"
        findings.append(Finding(Problem.ORPHAN_FILE, file.path, f"{what} ({file.bytes} bytes)"))
    return findings


async def doctor(
    *,
    sessions: async_sessionmaker[AsyncSession],
    store: ArtifactStore,
    stale_after: timedelta,
    repair: bool,
    now: datetime | None = None,
    kept_in: ArtifactFiles | None = None,
) -> DoctorReport:
    """Find where rows and files disagree and, with ``repair``, fix what is safe (``REPAIRS``).

    ``kept_in``: where the files are (default: ``store``'s directory; the bucket with s3, never a mere cache).
    """
    now = now or datetime.now(UTC)
    kept_in = kept_in or FolderFiles(store)
    files = await asyncio.to_thread(kept_in.scan)
    async with sessions() as session:
        rows = await load_rows(session)
    findings = await asyncio.to_thread(examine, rows, files, kept_in=kept_in, now=now, stale_after=stale_after)
    if repair:
        await _repair(sessions, kept_in, rows, findings)
    return DoctorReport(tuple(findings), repair)


async def _repair(
    sessions: async_sessionmaker[AsyncSession], kept_in: ArtifactFiles, rows: dict[int, JobRow], findings: list[Finding]
) -> None:
    by_path = {a.path: a for row in rows.values() for a in row.artifacts}

    async def gone(paths: Iterable[str]) -> bool:
        """Still missing? A restore may have happened since the scan (asked outside any write transaction)."""
        return not any([await asyncio.to_thread(kept_in.exists, path) for path in paths])

    for finding in findings:
        if finding.problem is Problem.MISSING_FILE and await gone([finding.subject]):
            async with sessions() as session, session.begin():
                await session.execute(delete(Artifact).where(Artifact.id == by_path[finding.subject].id))
            finding.repaired = True
    for finding in findings:
        if finding.problem is Problem.NO_RESULT:
            job_id = int(finding.subject.removeprefix("job #"))
            async with sessions() as session:
                job = await jobs.get_job(session, job_id)
            required = REQUIRED_ARTIFACT[job.kind]
            # Still done and still without its result? (Otherwise leave the row to whoever changed it.)
            if job.status is JobStatus.DONE and await gone(a.path for a in job.artifacts if a.kind == required):
                async with sessions() as session:
                    lost = RESULT_LOST_FROM.format(where=kept_in.where)
                    await jobs.mark_failed(session, job_id, code=ErrorCode.INTERNAL, message=lost)
                finding.repaired = True
    orphans = [f for f in findings if f.problem is Problem.ORPHAN_FILE]
    failed = set(await asyncio.to_thread(kept_in.delete, [f.subject for f in orphans]))
    for finding in orphans:
        finding.repaired = finding.subject not in failed
    log.info("doctor repaired", extra={"repaired": sum(f.repaired for f in findings), "found": len(findings)})
