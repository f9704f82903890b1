"""A managed redis as operators run one: TLS only (rediss://), a password, a certificate from a private CA.

Both sides reach redis through ``beatforge.queue.redis_settings`` (arq's pool: the bot's enqueue, the worker) and
``redis_tls_options`` (plain clients: ``beatforge status``), so a real arq worker runs a job through a real TLS
server here, and the ways an operator gets it wrong fail with redis's own errors rather than hanging.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from arq import create_pool
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from beatforge.config import Settings
from beatforge.queue import plain_redis, redis_settings
from tests.support.arq_job import run_one_job
from tests.support.redis_server import RedisServer
from tests.support.tls import TlsFiles, make_tls_files

PASSWORD = "s3cret-Pa55"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=tls_files, password=PASSWORD)
    server.start()
    yield server
    server.stop()


def _settings(url: str, ca: Path | None) -> Settings:
    return Settings(_env_file=None, redis_url=url, redis_ca_file=ca, queue_name="beatforge:tls-test")


async def test_a_job_goes_through_a_tls_redis_with_a_password(tls_redis: RedisServer, tls_files: TlsFiles) -> None:
    assert tls_redis.url.startswith("rediss://:")
    settings = _settings(tls_redis.url, tls_files.ca)
    assert await run_one_job(settings, 21) == 42
    status_client = plain_redis(settings, timeout_s=2)  # what `beatforge status` opens
    try:
        assert await status_client.ping()
    finally:
        await status_client.aclose()


async def test_a_server_certificate_from_an_unknown_ca_is_refused(tls_redis: RedisServer) -> None:
    conf = redis_settings(_settings(tls_redis.url, None))  # no CA bundle: the system's CAs do not know ours
    conf.conn_retries = 0
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await create_pool(conf)


async def test_a_wrong_password_is_refused(tls_redis: RedisServer, tls_files: TlsFiles) -> None:
    conf = redis_settings(_settings(tls_redis.url.replace(PASSWORD, "wrong"), tls_files.ca))
    conf.conn_retries = 0
    with pytest.raises(AuthenticationError):
        await create_pool(conf)


def test_plain_redis_urls_take_no_ca_bundle(tls_files: TlsFiles) -> None:
    assert redis_settings(_settings("redis://127.0.0.1:6379/0", tls_files.ca)).ssl_ca_certs is None
    conf = redis_settings(_settings("rediss://:pw@cache.example:6380/2", tls_files.ca))
    assert (conf.ssl, conf.password, conf.port, conf.database) == (True, "pw", 6380, 2)
    assert conf.ssl_ca_certs == str(tls_files.ca)
