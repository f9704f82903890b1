"""A real redis-server on a loopback port that tests can stop and start again (never a mock)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis as redis_sync
from redis.sentinel import MasterNotFoundError, Sentinel

from tests.support.tls import TlsFiles


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_ping(client: redis_sync.Redis, proc: subprocess.Popen[bytes], what: str) -> None:
    """Until the server answers (10 s at most; it is killed if it does not), then close the client."""
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return
            except (redis_sync.ConnectionError, redis_sync.exceptions.BusyLoadingError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError(f"{what} did not start") from None
                time.sleep(0.05)
    finally:
        client.close()


class RedisServer:
    """``persistent``: an append-only file, so a restart keeps the queue; otherwise a restart empties it.
    ``tls`` and ``password``: a server as managed redis services run it (TLS only, AUTH required).
    ``replica_of``: a replica of the server on that loopback port (for Sentinel failovers)."""

    def __init__(
        self,
        workdir: Path,
        *,
        persistent: bool = False,
        tls: TlsFiles | None = None,
        password: str | None = None,
        replica_of: int | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `apt-get install redis-server` (.ci/run does this)")
        self.binary, self.workdir, self.persistent = binary, workdir, persistent
        self.tls, self.password, self.replica_of = tls, password, replica_of
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def _listen(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        files = self.tls
        return [
            *("--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(files.cert), "--tls-key-file", str(files.key)),
            *("--tls-ca-cert-file", str(files.ca)),
        ]

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        auth = ["--requirepass", self.password] if self.password else []
        if self.replica_of is not None:
            auth += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.proc = subprocess.Popen(
            [
                self.binary,
                *self._listen(),
                *auth,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *aof,
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        client = redis_sync.Redis(
            port=self.port,
            password=self.password,
            ssl=self.tls is not None,
            ssl_ca_certs=str(self.tls.ca) if self.tls else None,
        )
        _wait_for_ping(client, self.proc, "redis-server")

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it (with an append-only file, nothing written is lost)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, *, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


class RedisSentinel:
    """A real redis-server in Sentinel mode watching ``master_port`` on loopback as "mymaster", with a 1-second
    down-after so that tests see a failover in a few seconds (production keeps redis's 30-s default)."""

    def __init__(self, workdir: Path, *, master_port: int, name: str = "mymaster") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `apt-get install redis-server` (.ci/run does this)")
        self.binary, self.workdir, self.name = binary, workdir, name
        self.port = free_port()
        self.config = workdir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {name} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        _wait_for_ping(redis_sync.Redis(port=self.port), self.proc, "redis-sentinel")

    def master_port(self) -> int | None:
        """The port of the master a client is given now (redis-py's own discovery, which also wants the sentinel
        to see that master up and in the master role); None while there is none, as during a failover."""
        sentinel = Sentinel([("127.0.0.1", self.port)], socket_timeout=1)  # type: ignore[no-untyped-call]
        try:
            _, port = sentinel.discover_master(self.name)  # type: ignore[no-untyped-call]
        except MasterNotFoundError:
            return None
        finally:
            for client in sentinel.sentinels:
                client.close()
        return int(port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
