"""Shared fixtures: a real redis-server, real migrated SQLite files, the tiny MusicGen, and worker processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis as redis_sync
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.queue import connect
from bot.app import Beatforge
from migrations.runner import upgrade_locked
from storage.db import make_engine, make_sessionmaker
from tests.support.discord_harness import FakeDiscord, connected
from tests.support.postgres_server import PostgresServer
from tests.support.processes import settings_env
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.support.chat_server", "tests.support.s3_server"]


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it will not go: a wedged child must not hang the test run."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the whole run (never a mock)."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    client = redis_sync.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster on a free loopback port for the whole run (never a mock, never the system's)."""
    try:
        server = PostgresServer()
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database of its own per test (``postgresql+asyncpg://``): tests cannot see each other's rows."""
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random MusicGen saved in the Hugging Face layout, loaded by the real from_pretrained path."""
    from generation.music.tiny import save_tiny_musicgen

    return save_tiny_musicgen(tmp_path_factory.mktemp("tiny-musicgen"))


#: Suites (folders of tests/) that run on both databases beatforge supports: each of their tests that uses the
#: test's ``settings`` (or ``sessions``) once on SQLite and once on a fresh PostgreSQL database.
BOTH_DATABASES = frozenset({"e2e", "storage"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames and metafunc.definition.path.parent.name in BOTH_DATABASES:
        metafunc.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test's database: a SQLite file, or (``BOTH_DATABASES``) a database of the throwaway PostgreSQL cluster."""
    if getattr(request, "param", "sqlite") == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'beatforge.db'}"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, tiny_model_dir: Path, database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        discord_token=None,
        redis_url=redis_url,
        database_url=database_url,
        artifact_dir=tmp_path / "artifacts",
        default_model=str(tiny_model_dir),
        device="cpu",
        default_duration_s=2.0,
        cover_mode="diffusion",
        cover_model="debug",  # the tiny random diffusers pipeline
        cover_safety_model="debug",
        cover_size=64,
        watch_interval_s=0.1,
        status_edit_every_s=0.0,  # the tiny model's jobs last a second: show each stage (tests/bot/test_edit_budget.py)
        worker_poll_delay_s=0.05,
        log_json=True,
    )


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory over a file database built by the real Alembic migrations (never create_all)."""
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def arq_redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = await connect(settings)
    yield pool
    await pool.aclose()


@pytest.fixture
async def discord_bot(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> AsyncIterator[tuple[Beatforge, FakeDiscord]]:
    """The real bot, connected to the fake Discord (tests/discord_harness), over real redis and SQLite."""
    bot = Beatforge(settings=settings, redis=arq_redis, sessions=sessions)
    async with FakeDiscord() as fake, connected(bot, fake):
        yield bot, fake


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``beatforge worker`` as a separate process, as in production; stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings, **overrides: str) -> subprocess.Popen[bytes]:
        env = settings_env(settings) | {f"BEATFORGE_{k.upper()}": v for k, v in overrides.items()}
        log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(440)
