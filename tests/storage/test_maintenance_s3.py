"""``gc`` and ``doctor`` with ``BEATFORGE_ARTIFACT_BACKEND=s3``, against a real S3-compatible server (moto, on
loopback): the bucket is the storage, so they judge its objects; this machine's artifact folder is only a cache
that starts empty, and a file missing from it must never cost a row.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import ErrorCode, JobStatus, MidiParams
from cli.ops import run_doctor, run_gc
from storage.artifact_files import BucketFiles, FolderFiles, kept_files
from storage.artifacts import ArtifactStore
from storage.errors import StorageError
from storage.maintenance import RESULT_LOST_FROM, Problem, Reason, collect_garbage, doctor
from tests.storage.test_maintenance import NOW, OLD, Jobs
from tests.support.s3_server import MotoServer, raw_client

PREFIX = "bf/artifacts"
#: Objects moto writes are dated now: judging from two days on makes them old enough to be orphans.
LATER = NOW + timedelta(days=2)
STALE = timedelta(minutes=5)

pytestmark = pytest.mark.usefixtures("aws_test_credentials")


class Bucket:
    """The test's own view of the bucket (a plain client, not the code under test's)."""

    def __init__(self, endpoint: str, name: str) -> None:
        self.raw: Any = raw_client(endpoint)
        self.name = name

    def put_all(self, store: ArtifactStore) -> None:
        """Every file a worker left in ``store``, as publishing leaves it in the bucket."""
        for path in sorted(p for p in store.root.rglob("*") if p.is_file()):
            self.put(path.relative_to(store.root).as_posix(), path.read_bytes())

    def put(self, relative: str, data: bytes) -> None:
        self.raw.put_object(Bucket=self.name, Key=f"{PREFIX}/{relative}", Body=data)

    def delete(self, relative: str) -> None:
        self.raw.delete_object(Bucket=self.name, Key=f"{PREFIX}/{relative}")

    def keys(self) -> list[str]:
        listed = self.raw.list_objects_v2(Bucket=self.name).get("Contents", [])
        return sorted(str(o["Key"]).removeprefix(f"{PREFIX}/") for o in listed)


async def test_doctor_judges_the_bucket_and_never_drops_rows_of_files_only_the_cache_lacks(
    s3_settings: Settings, sessions: async_sessionmaker[AsyncSession], moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    j = Jobs(sessions, ArtifactStore(tmp_path / "worker"))  # the files are made on a worker, elsewhere
    healthy = await j.make(JobStatus.DONE, files={"a.wav": 100})
    lost = await j.make(JobStatus.DONE, files={"a.wav": 100, "c.png": 10})
    damaged = await j.make(JobStatus.DONE, files={"a.wav": 100})
    s3 = Bucket(moto.url, bucket)
    s3.put_all(j.store)
    cache = ArtifactStore(s3_settings.artifact_dir)  # this machine's: empty
    kept_in = kept_files(s3_settings, cache)
    assert isinstance(kept_in, BucketFiles) and kept_in.where == f"s3://{bucket}/{PREFIX}/"

    # Judged by the empty cache, every result would be "missing" and --repair would drop every row.
    by_cache = await doctor(sessions=sessions, store=cache, stale_after=STALE, repair=False, now=NOW)
    assert {f.problem for f in by_cache.findings} == {Problem.MISSING_FILE, Problem.NO_RESULT}
    report = await doctor(sessions=sessions, store=cache, kept_in=kept_in, stale_after=STALE, repair=True, now=LATER)
    assert report.findings == () and report.clean

    s3.delete(f"{lost}/a.wav")
    s3.put(f"{damaged}/a.wav", b"short")
    s3.put(f"{healthy}/stray.wav", b"x" * 7)
    s3.put("uploads/abc-orphan.wav", b"x" * 5)
    report = await doctor(sessions=sessions, store=cache, kept_in=kept_in, stale_after=STALE, repair=False, now=LATER)
    assert sorted((f.problem, f.subject) for f in report.findings) == sorted(
        [
            (Problem.MISSING_FILE, f"{lost}/a.wav"),
            (Problem.NO_RESULT, f"job #{lost}"),
            (Problem.SIZE_MISMATCH, f"{damaged}/a.wav"),
            (Problem.ORPHAN_FILE, f"{healthy}/stray.wav"),
            (Problem.ORPHAN_FILE, "uploads/abc-orphan.wav"),
        ]
    )

    repaired = await doctor(sessions=sessions, store=cache, kept_in=kept_in, stale_after=STALE, repair=True, now=LATER)
    state = {(f.problem, f.subject): f.repaired for f in repaired.findings}
    assert state[(Problem.MISSING_FILE, f"{lost}/a.wav")] and state[(Problem.NO_RESULT, f"job #{lost}")]
    assert state[(Problem.ORPHAN_FILE, f"{healthy}/stray.wav")]
    assert state[(Problem.ORPHAN_FILE, "uploads/abc-orphan.wav")]
    assert not state[(Problem.SIZE_MISMATCH, f"{damaged}/a.wav")]
    lost_job = await j.get(lost)
    assert (lost_job.status, lost_job.error_code) == (JobStatus.FAILED, ErrorCode.INTERNAL)
    assert lost_job.error == RESULT_LOST_FROM.format(where=f"s3://{bucket}/{PREFIX}/")
    assert [a.path for a in lost_job.artifacts] == [f"{lost}/c.png"]  # still in the bucket: stays
    assert s3.keys() == sorted([f"{healthy}/a.wav", f"{damaged}/a.wav", f"{lost}/c.png"])
    assert (await j.get(healthy)).artifacts  # never judged by the cache


async def test_gc_deletes_the_objects_of_the_jobs_it_removes_and_this_machines_cached_copies(
    s3_settings: Settings, sessions: async_sessionmaker[AsyncSession], moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    j = Jobs(sessions, ArtifactStore(tmp_path / "worker"))
    old = await j.make(JobStatus.DONE, finished=OLD, files={"a.wav": 100, "c.png": 10})
    kept = await j.make(JobStatus.DONE, finished=OLD, files={"a.wav": 100}, kept=True)
    fresh = await j.make(JobStatus.DONE, files={"a.wav": 100})
    await j.make(JobStatus.DONE, finished=OLD, params=MidiParams(prompt="t.wav", upload="uploads/abc-t.wav"))
    j.write("uploads/abc-t.wav", 50)
    s3 = Bucket(moto.url, bucket)
    s3.put_all(j.store)
    cache = ArtifactStore(s3_settings.artifact_dir)
    cache.resolve(f"{old}/a.wav").parent.mkdir(parents=True)
    cache.resolve(f"{old}/a.wav").write_bytes(b"x" * 100)  # fetched here once, to post it
    kept_in = kept_files(s3_settings, cache)

    dry = await collect_garbage(
        sessions=sessions, store=cache, kept_in=kept_in, max_age_days=30, quota_gb=0, dry_run=True, now=LATER
    )
    assert (dry.used_bytes, dry.freed_bytes) == (360, 160)  # the bucket's bytes, not the cache's
    assert len(s3.keys()) == 5

    report = await collect_garbage(
        sessions=sessions, store=cache, kept_in=kept_in, max_age_days=30, quota_gb=0, dry_run=False, now=LATER
    )
    assert sorted((r.path, r.reason) for r in report.removals) == [
        (f"{old}/a.wav", Reason.AGE),
        (f"{old}/c.png", Reason.AGE),
        ("uploads/abc-t.wav", Reason.UPLOAD),
    ]
    assert report.failed == ()
    assert s3.keys() == sorted([f"{kept}/a.wav", f"{fresh}/a.wav"])
    assert not cache.resolve(str(old)).exists()
    assert (await j.get(old)).artifacts == () and (await j.get(kept)).artifacts


async def test_an_unreachable_bucket_stops_doctor_and_gc_before_they_touch_anything(
    s3_settings: Settings, sessions: async_sessionmaker[AsyncSession], capsys: pytest.CaptureFixture[str]
) -> None:
    j = Jobs(sessions, ArtifactStore(s3_settings.artifact_dir))
    job = await j.make(JobStatus.DONE, finished=OLD, files={"a.wav": 100})
    dead = s3_settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9"})

    with pytest.raises(StorageError, match="could not list s3://"):
        await doctor(
            sessions=sessions,
            store=j.store,
            kept_in=kept_files(dead, j.store),
            stale_after=STALE,
            repair=True,
        )
    doc = argparse.Namespace(repair=True, stale_after=300.0)
    assert await asyncio.to_thread(run_doctor, doc, dead) == 1  # the CLI runs its own event loop
    gc = argparse.Namespace(max_age_days=30.0, quota_gb=0.0, dry_run=False)
    assert await asyncio.to_thread(run_gc, gc, dead) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("beatforge: could not list s3://") for line in err)
    assert (await j.get(job)).artifacts and j.store.resolve(f"{job}/a.wav").exists()

    no_bucket = s3_settings.model_copy(update={"s3_bucket": None})
    assert await asyncio.to_thread(run_doctor, doc, no_bucket) == 1
    assert "needs BEATFORGE_S3_BUCKET" in capsys.readouterr().err
    assert isinstance(kept_files(s3_settings.model_copy(update={"artifact_backend": "local"}), j.store), FolderFiles)
