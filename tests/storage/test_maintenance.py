"""``gc`` and ``doctor`` over a real migrated SQLite database and real files in a temporary artifact directory."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import ArtifactKind, BeatParams, ErrorCode, JobParams, JobStatus, MidiParams
from storage import jobs
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.maintenance import RESULT_LOST, GcReport, Problem, Reason, collect_garbage, doctor
from storage.models import Generation

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
MIB = 2**20


class Jobs:
    """Jobs in given states with real files, the way workers leave them."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], store: ArtifactStore) -> None:
        self.sessions, self.store = sessions, store

    def write(self, relative: str, size: int, *, age: timedelta = timedelta(days=2)) -> Path:
        path = self.store.resolve(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        stamp = (NOW - age).timestamp()
        os.utime(path, (stamp, stamp))
        return path

    async def make(
        self,
        status: JobStatus,
        *,
        finished: datetime = NOW,
        files: dict[str, int] | None = None,
        kept: bool = False,
        params: JobParams | None = None,
        parent_id: int | None = None,
    ) -> int:
        params = params or BeatParams(prompt="dusty loop", duration_s=2, seed=1)
        async with self.sessions() as session:
            job = await jobs.create_job(
                session, params=params, user_id=1, user_name="u", guild_id=5, channel_id=6, parent_id=parent_id
            )
            if status is not JobStatus.QUEUED:
                await jobs.mark_running(session, job.id)
            records = []
            for n, (name, size) in enumerate((files or {}).items()):
                self.write(f"{job.id}/{name}", size)
                kind = ArtifactKind.AUDIO if n == 0 else ArtifactKind.COVER
                records.append(ArtifactRecord(kind=kind, path=f"{job.id}/{name}", bytes=size, sha256="0" * 64))
            if status is JobStatus.DONE:  # otherwise, like a running job's, the files have no rows yet
                await jobs.mark_done(session, job.id, artifacts=records)
            if status is JobStatus.FAILED:
                await jobs.mark_failed(session, job.id, code=ErrorCode.GENERATION_FAILED, message="x")
            if kept:
                await jobs.set_kept(session, job.id, True)
            await session.execute(update(Generation).where(Generation.id == job.id).values(finished_at=finished))
            await session.commit()
        return job.id

    async def get(self, job_id: int) -> jobs.JobView:
        async with self.sessions() as session:
            return await jobs.get_job(session, job_id)


async def gc(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    max_age_days: float,
    quota_gb: float = 0,
    dry_run: bool = False,
) -> GcReport:
    store = ArtifactStore(settings.artifact_dir)
    return await collect_garbage(
        sessions=sessions, store=store, max_age_days=max_age_days, quota_gb=quota_gb, dry_run=dry_run, now=NOW
    )


async def test_gc_removes_old_finished_jobs_files_and_rows_but_never_kept_or_active_ones(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = ArtifactStore(settings.artifact_dir)
    j = Jobs(sessions, store)
    old = await j.make(JobStatus.DONE, finished=OLD, files={"a.wav": 100, "c.png": 10})
    fresh = await j.make(JobStatus.DONE, files={"a.wav": 100})
    kept = await j.make(JobStatus.DONE, finished=OLD, files={"a.wav": 100}, kept=True)
    parent = await j.make(JobStatus.DONE, finished=OLD, files={"a.wav": 100})  # a running loop reads it
    await j.make(JobStatus.RUNNING, parent_id=parent)

    dry = await gc(settings, sessions, max_age_days=30, quota_gb=0, dry_run=True)
    assert sorted(r.path for r in dry.removals) == [f"{old}/a.wav", f"{old}/c.png"]
    assert (dry.freed_bytes, dry.used_bytes) == (110, 410)
    assert store.resolve(f"{old}/a.wav").exists() and len((await j.get(old)).artifacts) == 2  # dry: untouched

    report = await gc(settings, sessions, max_age_days=30, quota_gb=0, dry_run=False)
    assert {r.reason for r in report.removals} == {Reason.AGE} and report.freed_bytes == 110
    assert not store.resolve(str(old)).exists()  # files and the emptied folder
    collected = await j.get(old)
    assert collected.artifacts == () and collected.status is JobStatus.DONE
    assert collected.files_removed_at is not None and collected.error is None
    for survivor in (fresh, kept, parent):
        assert (await j.get(survivor)).artifacts and store.resolve(f"{survivor}/a.wav").exists()

    # 0 days = never by age: nothing else goes
    again = await gc(settings, sessions, max_age_days=0, quota_gb=0, dry_run=False)
    assert again.removals == ()


async def test_over_the_quota_the_oldest_finished_jobs_go_first_and_whole(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    j = Jobs(sessions, ArtifactStore(settings.artifact_dir))
    oldest = await j.make(JobStatus.DONE, finished=NOW - timedelta(days=3), files={"a.wav": MIB, "c.png": MIB})
    middle = await j.make(JobStatus.DONE, finished=NOW - timedelta(days=2), files={"a.wav": MIB})
    newest = await j.make(JobStatus.DONE, finished=NOW - timedelta(days=1), files={"a.wav": MIB})
    kept = await j.make(JobStatus.DONE, finished=NOW - timedelta(days=9), files={"a.wav": MIB}, kept=True)
    quota_gb = 2.5 * MIB / 2**30  # 5 MiB used: two jobs must go to fit, the kept one never

    report = await gc(settings, sessions, max_age_days=0, quota_gb=quota_gb, dry_run=False)
    assert [(r.job_id, r.reason) for r in report.removals] == [(oldest, Reason.QUOTA)] * 2 + [(middle, Reason.QUOTA)]
    assert report.freed_bytes == 3 * MIB
    assert (await j.get(newest)).artifacts and (await j.get(kept)).artifacts


async def test_uploads_go_once_no_remaining_job_needs_them_and_a_day_has_passed(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = ArtifactStore(settings.artifact_dir)
    j = Jobs(sessions, store)
    j.write("uploads/orphan.wav", 50)
    j.write("uploads/just-sent.wav", 50, age=timedelta(minutes=5))  # its job row may not exist yet
    j.write("uploads/old-job.wav", 50)
    j.write("uploads/live-job.wav", 50)
    midi = MidiParams(prompt="old-job.wav", upload="uploads/old-job.wav")
    await j.make(JobStatus.DONE, finished=OLD, params=midi)
    await j.make(JobStatus.DONE, params=MidiParams(prompt="live", upload="uploads/live-job.wav"))

    report = await gc(settings, sessions, max_age_days=30, quota_gb=0, dry_run=False)
    assert sorted(r.path for r in report.removals if r.reason is Reason.UPLOAD) == [
        "uploads/old-job.wav",
        "uploads/orphan.wav",
    ]
    assert sorted(p.name for p in store.resolve("uploads").iterdir()) == ["just-sent.wav", "live-job.wav"]


async def test_doctor_reports_every_disagreement_and_exits_clean_only_when_there_is_none(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = ArtifactStore(settings.artifact_dir)
    j = Jobs(sessions, store)
    healthy = await j.make(JobStatus.DONE, files={"a.wav": 100})
    assert (await doctor(sessions=sessions, store=store, stale_after=timedelta(minutes=5), repair=False)).clean

    lost = await j.make(JobStatus.DONE, files={"a.wav": 100, "c.png": 10})
    store.resolve(f"{lost}/a.wav").unlink()
    damaged = await j.make(JobStatus.DONE, files={"a.wav": 100})
    store.resolve(f"{damaged}/a.wav").write_bytes(b"short")
    j.write(f"{healthy}/stray.wav", 7)
    j.write(f"{healthy}/.tmp-0badc0de-b.wav", 3)  # left by a crash mid-write
    j.write(f"{healthy}/.tmp-12345678-c.wav", 3, age=timedelta(seconds=5))  # a write in progress: not a finding
    stale = await j.make(JobStatus.RUNNING)
    running = await j.make(JobStatus.RUNNING)
    j.write(f"{running}/take1.wav", 9)  # being written: no row yet, and none is expected
    async with sessions() as session:
        await session.execute(
            update(Generation).where(Generation.id == stale).values(heartbeat_at=NOW - timedelta(hours=1))
        )
        await session.execute(update(Generation).where(Generation.id == running).values(heartbeat_at=NOW))
        await session.commit()

    report = await doctor(sessions=sessions, store=store, stale_after=timedelta(minutes=5), repair=False, now=NOW)
    found = sorted((f.problem, f.subject) for f in report.findings)
    assert found == sorted(
        [
            (Problem.MISSING_FILE, f"{lost}/a.wav"),
            (Problem.NO_RESULT, f"job #{lost}"),
            (Problem.SIZE_MISMATCH, f"{damaged}/a.wav"),
            (Problem.ORPHAN_FILE, f"{healthy}/stray.wav"),
            (Problem.ORPHAN_FILE, f"{healthy}/.tmp-0badc0de-b.wav"),
            (Problem.STALE_RUNNING, f"job #{stale}"),
        ]
    )
    assert not report.clean
    assert all(not f.repaired for f in report.findings) and store.resolve(f"{healthy}/stray.wav").exists()

    repaired = await doctor(sessions=sessions, store=store, stale_after=timedelta(minutes=5), repair=True, now=NOW)
    state = {(f.problem, f.subject): f.repaired for f in repaired.findings}
    assert state[(Problem.MISSING_FILE, f"{lost}/a.wav")] and state[(Problem.NO_RESULT, f"job #{lost}")]
    assert state[(Problem.ORPHAN_FILE, f"{healthy}/stray.wav")]
    assert not state[(Problem.SIZE_MISMATCH, f"{damaged}/a.wav")]  # an admin decides: restore or delete
    assert not state[(Problem.STALE_RUNNING, f"job #{stale}")]  # the reconciler's call, not the doctor's
    assert not repaired.clean
    lost_job = await j.get(lost)
    assert (lost_job.status, lost_job.error_code, lost_job.error) == (JobStatus.FAILED, ErrorCode.INTERNAL, RESULT_LOST)
    assert [a.path for a in lost_job.artifacts] == [f"{lost}/c.png"]  # the cover that is still there stays
    assert not store.resolve(f"{healthy}/stray.wav").exists()
    assert store.resolve(f"{running}/take1.wav").exists() and store.resolve(f"{healthy}/a.wav").exists()

    # What is left is what the repair may not touch; deleting the damaged file makes it repairable.
    store.resolve(f"{damaged}/a.wav").unlink()
    async with sessions() as session:
        await jobs.mark_failed(session, stale, code=ErrorCode.INTERNAL, message="worker lost")
    final = await doctor(sessions=sessions, store=store, stale_after=timedelta(minutes=5), repair=True, now=NOW)
    assert final.clean and {f.problem for f in final.findings} == {Problem.MISSING_FILE, Problem.NO_RESULT}
    assert (
        await doctor(sessions=sessions, store=store, stale_after=timedelta(minutes=5), repair=False, now=NOW)
    ).findings == ()


async def test_doctor_does_not_call_collected_results_lost(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = ArtifactStore(settings.artifact_dir)
    j = Jobs(sessions, store)
    await j.make(JobStatus.DONE, finished=OLD, files={"a.wav": 100})
    await gc(settings, sessions, max_age_days=30, quota_gb=0, dry_run=False)
    report = await doctor(sessions=sessions, store=store, stale_after=timedelta(minutes=5), repair=False)
    assert report.findings == () and report.clean
