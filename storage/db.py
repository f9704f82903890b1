"""Engine and session factory: how every process opens the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def sqlite_file(database_url: str) -> Path | None:
    """The database file of an SQLite URL (its folder created), or None for other back ends and ``:memory:``."""
    url = make_url(database_url)
    database = url.database
    if url.get_backend_name() != "sqlite" or database is None or database in ("", ":memory:"):
        return None
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def make_engine(database_url: str) -> AsyncEngine:
    """An engine whose SQLite connections can be shared by the bot and worker processes.

    WAL lets one writer and many readers work at once; ``busy_timeout`` makes a second writer
    wait instead of failing with "database is locked"; SQLite ignores foreign keys unless asked.
    """
    url = make_url(database_url)
    sqlite_file(database_url)
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


@asynccontextmanager
async def open_database(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh engine for a one-shot command, disposed of when the block ends."""
    engine = make_engine(database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()
