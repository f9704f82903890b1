"""The migrations every entrypoint runs at start-up (Alembic, configured in code)."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

from storage.db import sqlite_file


def alembic_config(database_url: str) -> Config:
    """Alembic configured in code, so migrations run the same from a checkout, a wheel or a container."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.set_main_option("sqlalchemy.url", database_url)
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Synchronous: call it before the event loop, or in a thread."""
    sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), revision)


#: Alembic keeps its migration context in module globals: two upgrades in one process's threads at once would
#: share it (and hang), whatever the database, so they take turns here first.
_IN_PROCESS = threading.Lock()


def upgrade_locked(database_url: str) -> None:
    """:func:`upgrade`, serialised across threads and processes: the bot and worker both migrate at start-up.

    Two processes creating the same SQLite tables at once would make one of them fail, so
    they take an exclusive lock on a file beside the database first. PostgreSQL's migrations hold an advisory
    lock for the same purpose (migrations/env.py).
    """
    with _IN_PROCESS:
        database = sqlite_file(database_url)
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
