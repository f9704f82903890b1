"""A replicated redis behind Sentinel: arq (the bot's pool and the worker) and ``beatforge status`` find the master
by asking the sentinels, so jobs keep flowing after the master dies and a replica is promoted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from beatforge.config import Settings
from beatforge.queue import plain_redis, redis_settings
from tests.support.arq_job import run_one_job
from tests.support.redis_server import RedisSentinel, RedisServer


def _wait_for(what: str, check: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _linked(replica: RedisServer) -> bool:
    with redis_sync.Redis(port=replica.port) as client:
        return bool(client.info("replication").get("master_link_status") == "up")


async def test_jobs_reach_whichever_master_the_sentinels_name_across_a_failover(tmp_path: Path) -> None:
    for name in ("master", "replica", "sentinel"):
        (tmp_path / name).mkdir()
    master = RedisServer(tmp_path / "master")
    master.start()
    replica = RedisServer(tmp_path / "replica", replica_of=master.port)
    replica.start()
    sentinel = RedisSentinel(tmp_path / "sentinel", master_port=master.port)
    sentinel.start()
    try:
        _wait_for("the replica to sync", lambda: _linked(replica))
        settings = Settings(
            _env_file=None,
            redis_url="redis://unused.invalid:1/0",  # with sentinels, only its database (and password, TLS) count
            redis_sentinels=f"127.0.0.1:{sentinel.port}",
            queue_name="beatforge:sentinel-test",
        )
        assert await run_one_job(settings, 21) == 42

        master.stop()
        _wait_for("the sentinel to promote the replica", lambda: sentinel.master_port() == replica.port)
        assert await run_one_job(settings, 50) == 100  # the same settings: arq asked the sentinel again
        status = plain_redis(settings, timeout_s=2)
        try:
            assert (await status.info("replication"))["role"] == "master"
        finally:
            await status.aclose()
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()


def test_sentinel_addresses_must_be_host_and_port() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.5' is not host:port"):
        Settings(_env_file=None, redis_sentinels="10.0.0.5:26379, 10.0.0.5")
    settings = Settings(_env_file=None, redis_sentinels="10.0.0.5:26379, s2.example:26380")
    conf = redis_settings(settings)
    assert conf.sentinel and conf.host == [("10.0.0.5", 26379), ("s2.example", 26380)]
    assert conf.sentinel_master == "mymaster"
