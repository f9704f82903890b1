"""A real S3-compatible endpoint for tests: ``moto.server`` in its own process on loopback, plus a TCP proxy in
front of it that can cut a connection in the middle of a request (a network failure mid-upload).

Credentials are dummies set through the environment, the way real ones reach boto3 (:func:`use_test_credentials`).
Also a pytest plugin (tests/conftest.py): one moto server for the run, dummy credentials, a bucket per test and
the test's settings on the s3 artifact back end.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from beatforge.config import Settings

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """``python -m moto.server`` on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 20) -> None:
        self._proc = proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError("moto.server did not start (is moto[server] installed?)") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def use_test_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake keys through the environment; never the developer's real ones (no config/profile files either)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def raw_client(endpoint: str) -> Any:
    """A plain client straight to moto (the test's own view of the bucket, not the code under test's)."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


def deny_writes(endpoint: str, bucket: str) -> None:
    """A bucket policy that refuses every PutObject (reads stay allowed), as a locked-down bucket would."""
    statement = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    raw_client(endpoint).put_bucket_policy(Bucket=bucket, Policy=policy)


class CuttingProxy:
    """Forwards loopback TCP to ``upstream_port``, resetting any connection once it has carried more than
    ``cut_after`` bytes towards the server: small requests pass, a big upload dies half-way, every retry too.

    ``cut_after=None`` forwards everything. ``cuts`` counts the connections cut.
    """

    def __init__(self, upstream_port: int, *, cut_after: int | None) -> None:
        self.upstream_port, self.cut_after = upstream_port, cut_after
        self.cuts = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="cutting-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upward: bool) -> None:
        carried = 0
        try:
            while chunk := source.recv(16384):
                carried += len(chunk)
                if upward and self.cut_after is not None and carried > self.cut_after:
                    sink.sendall(chunk[: len(chunk) - (carried - self.cut_after)])  # half the body reaches the server
                    with self._lock:
                        self.cuts += 1
                    for sock in (source, sink):  # RST, not a clean FIN: the client sees "connection reset"
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        sock.close()
                    return
                sink.sendall(chunk)
        except OSError:
            pass  # the other direction closed or reset the pair; nothing left to forward
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


# -- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One ``moto.server`` for the run; tests keep apart by their buckets."""
    server = MotoServer()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def aws_test_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_test_credentials(monkeypatch, tmp_path)


@pytest.fixture
def bucket(moto: MotoServer, request: pytest.FixtureRequest, aws_test_credentials: None) -> str:
    """An empty bucket named after the test."""
    name = "bf-" + request.node.name.replace("_", "-").replace("[", "-").replace("]", "").lower()[:50].strip("-")
    raw_client(moto.url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_settings(settings: Settings, moto: MotoServer, bucket: str) -> Settings:
    """The test's settings with artifacts kept in ``bucket`` (keys under ``bf/artifacts/``)."""
    return settings.model_copy(
        update={"artifact_backend": "s3", "s3_bucket": bucket, "s3_prefix": "bf", "s3_endpoint_url": moto.url}
    )
