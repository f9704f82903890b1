"""A real throwaway PostgreSQL cluster on a loopback port: initdb, start, a database per test, removed at the end.

Never a mock, and never the machine's own cluster: its data and unix socket live in a temporary folder that is
deleted when the server stops.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from tests.support.redis_server import free_port

#: The server's superuser; with trust authentication on loopback it needs no password.
SUPERUSER = "postgres"


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``postgres`` and ``createdb``.

    Debian keeps them off PATH, under /usr/lib/postgresql/<major>/bin; ``pg_config`` may come from libpq-dev alone,
    so its answer counts only if ``initdb`` is really there.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    candidates += [Path(p) for p in debian]
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise RuntimeError("the PostgreSQL server is not installed: `apt-get install postgresql` (scripts/test does this)")


class PostgresServer:
    """A cluster made for this test run. As root (how the tests run in CI), the server binaries run as the
    ``postgres`` system user, because initdb and postgres refuse to run as root."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._as_user: str | None = None
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise RuntimeError("running as root needs a `postgres` system user to run the server") from None
            self._as_user = SUPERUSER
        # Not pytest's tmp_path: its parent folder is private to root, and the server user must reach its data.
        self.workdir = Path(tempfile.mkdtemp(prefix="beatforge-pg-"))
        if self._as_user is not None:
            shutil.chown(self.workdir, user=self._as_user, group=self._as_user)
        self.datadir = self.workdir / "data"

    def _server_cmd(self, args: list[str], stdout: IO[bytes] | int) -> subprocess.Popen[bytes]:
        """One of the server binaries, as the server user when we are root."""
        return subprocess.Popen(
            args,
            cwd=self.workdir,
            user=self._as_user,
            group=self._as_user,
            extra_groups=[] if self._as_user else None,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """initdb (no fsync: the data is thrown away), then the server, waiting until it accepts connections."""
        init = self._server_cmd(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.datadir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            subprocess.PIPE,
        )
        output, _ = init.communicate(timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{output.decode(errors='replace')}")
        with (self.workdir / "server.log").open("wb") as log:
            self.proc = self._server_cmd(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.workdir),  # the unix socket stays in our folder, away from the system cluster's
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                log,
            )
        deadline = time.monotonic() + 30
        while not self._accepting():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not start:\n{self.log()}")
            time.sleep(0.05)

    def _accepting(self) -> bool:
        """The server says it accepts connections (not merely that its port is open: it may still be recovering)."""
        ready = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
        )
        return ready.returncode == 0

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def create_database(self) -> str:
        """A new empty database (from template1, so a few milliseconds) and its SQLAlchemy URL."""
        name = f"beatforge_{next(self._names)}"
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name],
            check=True,
            capture_output=True,
        )
        return self.url(name)

    def stop(self) -> None:
        """SIGINT is PostgreSQL's fast shutdown (it does not wait for clients); then the folder is removed."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)
