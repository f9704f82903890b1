"""``beatforge status``, ``gc`` and ``doctor``: what an operator runs on the machine that holds the data.

They read the same database and artifact directory as the bot and the workers (``BEATFORGE_DATABASE_URL``,
``BEATFORGE_ARTIFACT_DIR``), and may run while those run: nothing here holds a transaction open while it
touches files, and nothing removes what a queued or running job needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import OperationalError

from beatforge.config import Settings
from beatforge.fleet import WorkerInfo
from beatforge.queue import plain_redis, queue_names
from storage.artifact_files import kept_files
from storage.artifacts import ArtifactStore
from storage.db import open_database
from storage.errors import StorageError
from storage.maintenance import REPAIRS, DoctorReport, GcReport, collect_garbage, doctor
from storage.stats import OpsStatus, gather_status

#: Seconds to wait for redis before ``status`` says it is unreachable (a CLI should answer, not hang).
REDIS_TIMEOUT_S = 3.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    status = commands.add_parser(
        "status",
        help="live workers, queue depth, jobs in the last hour",
        description="Workers alive (jobs running, GPU memory), the queue's depth, jobs done and failed in the last "
        "hour (failures by error code), and jobs queued or running in the database. Also /admin status.",
    )
    status.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    status.set_defaults(run=run_status)

    gc = commands.add_parser(
        "gc",
        help="remove old artifacts (files and rows)",
        description="Remove the files (and artifact rows) of finished jobs older than --max-age-days, then, while "
        "the artifact directory is over --quota-gb, of the oldest finished jobs; then uploads no remaining job "
        "needs (older than a day). Never kept (⭐) jobs, nor what queued or running jobs need. The job rows stay "
        "(history and limits read them) and say their files were removed. With BEATFORGE_ARTIFACT_BACKEND=s3 it "
        "judges and deletes the bucket's objects (and this machine's cached copies of them).",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed and the bytes freed")
    gc.add_argument(
        "--max-age-days",
        type=float,
        default=settings.artifact_max_age_days,
        help="age in days (default BEATFORGE_ARTIFACT_MAX_AGE_DAYS, %(default)g; 0 = no age limit)",
    )
    gc.add_argument(
        "--quota-gb",
        type=float,
        default=settings.artifact_quota_gb,
        help="GiB the artifacts may take (default BEATFORGE_ARTIFACT_QUOTA_GB, %(default)g; 0 = no quota)",
    )
    gc.set_defaults(run=run_gc)

    repairs = "; ".join(f"{problem.value}: {what or 'reported only'}" for problem, what in REPAIRS.items())
    doc = commands.add_parser(
        "doctor",
        help="find rows and files that disagree (--repair fixes the safe cases)",
        description="Checks that every artifact row has its file at its recorded size, that every file has a row, "
        "that every done job has its result, and that running jobs show signs of life. One line per finding, "
        "then a summary; exit status 0 when clean (with --repair: when everything found was repaired), else 1. "
        f"What --repair does: {repairs}. With BEATFORGE_ARTIFACT_BACKEND=s3 the files checked are the bucket's "
        "objects, not this machine's folder (only a cache).",
    )
    doc.add_argument("--repair", action="store_true", help="fix what is safe to fix (see above)")
    doc.add_argument(
        "--stale-after",
        type=float,
        default=max(settings.job_stale_after_s * 10, 300.0),
        metavar="SECONDS",
        help="a running job silent this long is reported (default %(default)g)",
    )
    doc.set_defaults(run=run_doctor)


def _fail(message: str) -> int:
    sys.stderr.write(f"beatforge: {message}\n")
    return 1


# -- status ------------------------------------------------------------------------------------------------------


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    try:
        status = asyncio.run(_status(settings))
    except OperationalError as exc:
        return _fail(f"cannot read the database ({exc.orig}); is it upgraded (`beatforge db upgrade`)?")
    text = json.dumps(asdict(status), default=str, indent=2) if args.json else "\n".join(status_lines(status))
    sys.stdout.write(text + "\n")
    return 0


async def _status(settings: Settings) -> OpsStatus:
    redis = plain_redis(settings, timeout_s=REDIS_TIMEOUT_S)
    try:
        async with open_database(settings.database_url) as sessions:
            return await gather_status(sessions=sessions, redis=redis, queue_names=queue_names(settings))
    finally:
        await redis.aclose()


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def worker_line(worker: WorkerInfo, now: datetime) -> str:
    up = timedelta(seconds=round(now.timestamp() - worker.started_at))
    gpu = (
        f"GPU {gib(worker.gpu.allocated)} allocated, {gib(worker.gpu.reserved)} reserved of {gib(worker.gpu.total)}"
        if worker.gpu
        else "no GPU"
    )
    return (
        f"  {worker.id} ({worker.device}, queue {worker.queue}): {worker.jobs_running}/{worker.max_jobs} jobs "
        f"running, {worker.jobs_finished} finished, {worker.jobs_interrupted} interrupted; {gpu}; up {up}"
    )


def status_lines(status: OpsStatus) -> list[str]:
    jobs = status.jobs
    lines = [f"status at {status.at:%Y-%m-%d %H:%M:%S} UTC"]
    if status.redis_error:
        lines.append(f"redis: UNREACHABLE ({status.redis_error}); workers and queue unknown")
    else:
        lines.append(f"workers alive: {len(status.workers)}")
        lines += [worker_line(w, status.at) for w in status.workers]
        lines += [f"queue {name}: {depth} waiting" for name, depth in status.queues.items()]
    lines.append(f"database: {jobs.queued} queued, {jobs.running} running")
    lines.append(f"last hour: {jobs.done_recently} done, {jobs.failed_recently} failed")
    lines += [f"  {code}: {count}" for code, count in jobs.failures_by_code.items()]
    return lines


# -- gc ----------------------------------------------------------------------------------------------------------


def run_gc(args: argparse.Namespace, settings: Settings) -> int:
    if args.max_age_days < 0 or args.quota_gb < 0:
        return _fail("--max-age-days and --quota-gb must be 0 (no limit) or more")
    try:
        report = asyncio.run(_gc(args, settings))
    except OperationalError as exc:
        return _fail(f"cannot read the database ({exc.orig}); is it upgraded (`beatforge db upgrade`)?")
    except StorageError as exc:  # s3: no bucket configured, or it could not be listed (nothing was removed)
        return _fail(str(exc))
    verb = "would remove" if report.dry_run else "removed"
    for removal in report.removals:
        owner = f" (job #{removal.job_id})" if removal.job_id is not None else ""
        sys.stdout.write(f"{verb} {removal.path}{owner}: {removal.bytes} bytes, {removal.reason.value}\n")
    sys.stdout.write(
        f"{verb} {len(report.removals)} files, {report.freed_bytes} bytes ({report.freed_bytes / 2**20:.1f} MiB) of "
        f"{report.used_bytes / 2**20:.1f} MiB\n"
    )
    for path in report.failed:
        sys.stderr.write(f"beatforge: could not delete {path} (its row is gone; `beatforge doctor` lists it)\n")
    return 1 if report.failed else 0


async def _gc(args: argparse.Namespace, settings: Settings) -> GcReport:
    async with open_database(settings.database_url) as sessions:
        store = ArtifactStore(settings.artifact_dir)
        return await collect_garbage(
            sessions=sessions,
            store=store,
            kept_in=kept_files(settings, store),  # s3: the bucket, not this machine's cache
            max_age_days=args.max_age_days,
            quota_gb=args.quota_gb,
            dry_run=args.dry_run,
        )


# -- doctor ------------------------------------------------------------------------------------------------------


def run_doctor(args: argparse.Namespace, settings: Settings) -> int:
    try:
        report = asyncio.run(_doctor(args, settings))
    except OperationalError as exc:
        return _fail(f"cannot read the database ({exc.orig}); is it upgraded (`beatforge db upgrade`)?")
    except StorageError as exc:  # s3: no bucket configured, or it could not be listed or asked
        return _fail(str(exc))
    for finding in report.findings:
        sys.stdout.write(finding.line() + "\n")
    found = len(report.findings)
    repaired = sum(f.repaired for f in report.findings)
    if not found:
        summary = "clean: every row has its file and every file its row"
    elif args.repair:
        summary = f"{found} problems found, {repaired} repaired, {found - repaired} left for an admin"
    else:
        fixable = sum(f.repairable for f in report.findings)
        summary = f"{found} problems found; --repair would fix {fixable}"
    sys.stdout.write(summary + "\n")
    return 0 if report.clean else 1


async def _doctor(args: argparse.Namespace, settings: Settings) -> DoctorReport:
    async with open_database(settings.database_url) as sessions:
        store = ArtifactStore(settings.artifact_dir)
        return await doctor(
            sessions=sessions,
            store=store,
            kept_in=kept_files(settings, store),  # s3: the bucket, not this machine's cache
            stale_after=timedelta(seconds=args.stale_after),
            repair=args.repair,
            now=datetime.now(UTC),
        )
