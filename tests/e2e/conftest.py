"""The end-to-end suite runs on both databases beatforge supports: each test once on SQLite and once on a fresh
database of the throwaway PostgreSQL cluster (tests/support/postgres_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'beatforge.db'}"
