"""Beyond one machine, measured on this one: workers (throughput, queue wait, model-affinity routing), the
database (SQLite against PostgreSQL) and artifact storage (a local folder against S3).

Each part starts its own servers on loopback (redis, PostgreSQL, an S3 endpoint) and prints ours against the
baseline, side by side in one run:

    .venv/bin/python bench/scale.py workers routing database artifacts --jobs 24
    .venv/bin/python bench/scale.py routing --arch small --jobs 16 --every 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beatforge.config import Settings
from generation.music.tiny import save_tiny_musicgen
from tests.support.redis_server import RedisServer


def _base(run_dir: Path, redis_url: str, model: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_url,
        database_url=f"sqlite+aiosqlite:///{run_dir}/bench.db",
        artifact_dir=run_dir / "artifacts",
        default_model=str(model),
        device="cpu",
        cover_mode="off",
        log_level="INFO",
        log_json=True,
    )


@contextmanager
def _redis(run_dir: Path) -> Iterator[str]:
    server = RedisServer(run_dir / "redis")
    server.workdir.mkdir()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def _workers(args: argparse.Namespace, run_dir: Path) -> list[str]:
    from bench.scale_workers import bench_workers

    with _redis(run_dir) as url:
        model = save_tiny_musicgen(run_dir / "model-a", seed=0)
        return await bench_workers(_base(run_dir, url, model), run_dir, jobs_n=args.jobs)


def _save_model(directory: Path, arch: str, seed: int) -> Path:
    """A model on disk, loaded by the real from_pretrained path: tiny, or musicgen-small's architecture with
    random weights (loading it costs what loading the real one does)."""
    if arch == "tiny":
        return save_tiny_musicgen(directory, seed=seed)
    if arch == "slow-load":  # tiny, with a 2**22-wide text encoder: 1 GiB of weights to load, a beat still quick
        return save_tiny_musicgen(directory, seed=seed, text_ff_dim=2**22)
    from bench.engine import build_real_arch

    model, processor = build_real_arch(arch, "cpu")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


async def _routing(args: argparse.Namespace, run_dir: Path) -> list[str]:
    from bench.scale_workers import bench_routing

    with _redis(run_dir) as url:
        model_a = _save_model(run_dir / "model-a", args.arch, seed=0)
        model_b = _save_model(run_dir / "model-b", args.arch, seed=1)
        base = _base(run_dir, url, model_a)
        return await bench_routing(base, run_dir, jobs_n=args.jobs, model_b=str(model_b), every_s=args.every)


async def _database(args: argparse.Namespace, run_dir: Path) -> list[str]:
    from bench.scale_storage import bench_database
    from tests.support.postgres_server import PostgresServer

    lines = ["", "database (a job: created, started, done: three commits; polls and pages: median, p99 of 200)"]
    lines += await bench_database("sqlite", f"sqlite+aiosqlite:///{run_dir}/bench.db", rows=args.rows, writes=200)
    server = PostgresServer()
    server.start()
    try:
        lines += await bench_database("postgresql", server.create_database(), rows=args.rows, writes=200)
    finally:
        server.stop()
    return lines


async def _artifacts(args: argparse.Namespace, run_dir: Path) -> list[str]:
    from bench.scale_storage import bench_artifacts
    from tests.support.s3_server import MotoServer

    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(name, value)  # moto takes any keys; real ones are never needed or read here
    server = MotoServer()
    server.start()
    try:
        return await bench_artifacts(run_dir, endpoint=server.url, files=args.files)
    finally:
        server.stop()


PARTS = {"workers": _workers, "routing": _routing, "database": _database, "artifacts": _artifacts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", choices=sorted(PARTS), default=sorted(PARTS))
    parser.add_argument("--jobs", type=int, default=24, help="beats per run")
    parser.add_argument(
        "--arch", choices=["tiny", "slow-load", "small"], default="tiny", help="the routing part's two models"
    )
    parser.add_argument("--every", type=float, default=0.5, help="seconds between the routing part's beats")
    parser.add_argument("--rows", type=int, default=10_000, help="jobs in the table for the database's reads")
    parser.add_argument("--files", type=int, default=20, help="artifact writes per storage back end")
    args = parser.parse_args()
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            run_dir = Path(tmp) / part
            run_dir.mkdir()
            lines += asyncio.run(PARTS[part](args, run_dir))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
