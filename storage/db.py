"""Engine and session factory, and the migrations that every entrypoint runs at start-up."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

import migrations


def _sqlite_file(database_url: str) -> Path | None:
    """The database file of an SQLite URL (its folder created), or None for other back ends and ``:memory:``."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def make_engine(database_url: str) -> AsyncEngine:
    """An engine whose SQLite connections can be shared by the bot and worker processes.

    WAL lets one writer and many readers work at once; ``busy_timeout`` makes a second writer
    wait instead of failing with "database is locked"; SQLite ignores foreign keys unless asked.
    """
    url = make_url(database_url)
    _sqlite_file(database_url)
    engine = create_async_engine(url)
    if url.get_backend_name() == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(database_url: str) -> Config:
    """Alembic configured in code, so migrations run the same from a checkout, a wheel or a container."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", database_url)
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Synchronous: call it before the event loop, or in a thread."""
    _sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), revision)


def upgrade_locked(database_url: str) -> None:
    """:func:`upgrade`, serialised across processes: the bot and worker both migrate at start-up.

    Two processes creating the same SQLite tables at once would make one of them fail, so
    they take an exclusive lock on a file beside the database first.
    """
    database = _sqlite_file(database_url)
    if database is None:
        upgrade(database_url)
        return
    lock_path = database.with_suffix(".migrate.lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            upgrade(database_url)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
