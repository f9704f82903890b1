"""Model affinity: which ready jobs a GPU worker starts, from the rule alone and from real redis (payloads as
the bot queues them, peers as their presence reports say)."""

from __future__ import annotations

import asyncio
import time

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, CoverParams, JobParams, JobStatus
from beatforge.fleet import WorkerInfo, publish_worker
from beatforge.queue import enqueue_job
from generation.worker.affinity import Affinity, Ready, pick
from generation.worker.settings import create_worker
from storage import jobs
from tests.support.arq_job import stop_worker


def _ready(name: str, model: str | None, waited_s: float = 0.0) -> Ready:
    return Ready(name.encode(), model, waited_s)


def test_a_worker_takes_its_models_jobs_and_model_free_ones_and_leaves_the_rest_to_their_models_worker() -> None:
    ready = [_ready("b1", "b"), _ready("a1", "a"), _ready("cover", None), _ready("c1", "c"), _ready("a2", "a")]
    chosen = pick(ready, resident={"a"}, elsewhere={"b"}, load_s={}, max_wait_s=30)
    # b1 waits for the worker that has b; c is resident nowhere, so this free worker loads it.
    assert chosen == [b"a1", b"cover", b"c1", b"a2"]


def test_a_job_waits_for_its_models_worker_no_longer_than_loading_the_model_takes() -> None:
    ready = [_ready("b-old", "b", waited_s=4), _ready("b-new", "b", waited_s=2), _ready("d", "d", waited_s=20)]
    # Loading b takes 3 s: past that, switching costs less than waiting on. d's load time is unknown: the cap.
    chosen = pick(ready, resident={"a"}, elsewhere={"b", "d"}, load_s={"b": 3.0}, max_wait_s=30)
    assert chosen == [b"b-old"]
    # Never longer than the cap, however slow the model loads.
    slow = pick(ready, resident={"a"}, elsewhere={"b", "d"}, load_s={"b": 300.0, "d": 300.0}, max_wait_s=19)
    assert slow == [b"d"]


class _Resident:
    def __init__(self, *names: str, load_s: float | None = None) -> None:
        self.names, self.load_s = list(names), load_s

    def resident(self) -> list[str]:
        return self.names

    def load_times(self) -> dict[str, float]:
        return dict.fromkeys(self.names, self.load_s) if self.load_s is not None else {}


def _peer(worker_id: str, queue: str, *models: str) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(worker_id, "host", 1, now, now, queue, "cuda", 1, 8, 0, 0, None, models)


async def _queue(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, params: JobParams) -> tuple[int, str]:
    async with sessions() as session:
        job = await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=None, channel_id=None)
    await enqueue_job(redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params)
    return job.id, job.queue_job_id


async def _status(sessions: async_sessionmaker[AsyncSession], job_id: int) -> JobStatus:
    async with sessions() as session:
        return (await jobs.get_job(session, job_id)).status


async def test_choose_reads_models_from_the_queued_payloads_and_peers_from_presence(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    _, other = await _queue(sessions, arq_redis, BeatParams(prompt="x", duration_s=1, seed=1, model="other"))
    _, default = await _queue(sessions, arq_redis, BeatParams(prompt="x", duration_s=1, seed=2))  # the default model
    _, cover = await _queue(sessions, arq_redis, CoverParams(prompt="x", seed=3))
    ids = [other.encode(), default.encode(), cover.encode()]
    affinity = Affinity(arq_redis, settings, _Resident(settings.default_model), worker_id="me")

    assert await affinity.choose(ids) == ids  # nobody else has "other": this worker loads it
    await publish_worker(arq_redis, _peer("elsewhere", "another:queue", "other"), ttl_s=30)
    affinity._fleet = (float("-inf"), frozenset(), {})  # read the fleet again now, not a second later
    assert await affinity.choose(ids) == ids  # a worker on another queue cannot take this queue's jobs
    await publish_worker(arq_redis, _peer("peer", settings.queue_name, "other"), ttl_s=30)
    affinity._fleet = (float("-inf"), frozenset(), {})
    assert await affinity.choose(ids) == ids[1:]

    capped = Affinity(arq_redis, settings.model_copy(update={"affinity_wait_s": 0.01}), _Resident(), worker_id="me")
    await asyncio.sleep(0.02)
    assert await capped.choose(ids) == ids  # they all waited longer than any worker leaves a job waiting

    # The peer measured "other" loading in 10 ms and shared it: past that, switching beats waiting.
    peer = Affinity(arq_redis, settings, _Resident("other", load_s=0.01), worker_id="peer")
    assert await peer.choose(ids) == ids  # its own model, and the rest nobody else has
    affinity._fleet = (float("-inf"), frozenset(), {})
    assert await affinity.choose(ids) == ids


async def test_a_real_worker_leaves_a_beat_for_a_peers_model_and_runs_its_own(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    settings = settings.model_copy(update={"cover_mode": "off"})
    await publish_worker(arq_redis, _peer("peer", settings.queue_name, "/models/on-the-peer"), ttl_s=60)
    peers = BeatParams(prompt="x", duration_s=1, seed=1, model="/models/on-the-peer")
    theirs, theirs_queued = await _queue(sessions, arq_redis, peers)
    mine, _ = await _queue(sessions, arq_redis, BeatParams(prompt="x", duration_s=1, seed=2))
    worker = create_worker(settings, poll_delay=0.01, handle_signals=False, redis_pool=arq_redis)
    task = asyncio.create_task(worker.main())
    try:
        deadline = time.monotonic() + 120
        while await _status(sessions, mine) is not JobStatus.DONE:
            assert time.monotonic() < deadline, "the worker never ran its own model's beat"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # polls enough to have taken the peer's job, were it going to
        assert await _status(sessions, theirs) is JobStatus.QUEUED
        assert await arq_redis.zscore(settings.queue_name, theirs_queued) is not None
    finally:
        await stop_worker(worker, task)
