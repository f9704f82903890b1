"""Fair ordering across users: a real redis-server and a real arq Worker popping the queue one job at a time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from arq.worker import Worker, func

from beatforge.config import Settings
from beatforge.contract import BeatParams, JobKind
from beatforge.queue import (
    JOB_EXPIRES,
    MAX_ROUNDS,
    ROUND_MS,
    SERIALIZERS,
    USER_JOBS_KEY,
    connect,
    enqueue_job,
    fair_score,
)

PARAMS = BeatParams(prompt="boom bap, 90 bpm", duration_s=2, seed=1)
ALICE, BOB, CAROL = 101, 202, 303


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[ArqRedis]:
    # Its own Settings: these tests need redis only, not the tiny model the shared `settings` fixture builds.
    pool = await connect(Settings(_env_file=None, redis_url=redis_url))  # type: ignore[call-arg]
    yield pool
    await pool.aclose()


async def _enqueue(queue: ArqRedis, job_id: int, user_id: int | None) -> str:
    queue_job_id = f"{job_id}-u{user_id}"
    await enqueue_job(queue, job_id=job_id, queue_job_id=queue_job_id, params=PARAMS, user_id=user_id)
    return queue_job_id


async def _run_in_order(queue: ArqRedis) -> list[int]:
    """Run everything queued with one job at a time, as a single worker would; the job ids in run order."""
    ran: list[int] = []

    async def record(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        ran.append(payload["job_id"])

    worker = Worker(
        functions=[func(record, name=JobKind.BEAT.function)],
        redis_pool=queue,
        queue_name=queue.default_queue_name,  # arq's Worker does not take it from the pool
        burst=True,
        max_jobs=1,
        poll_delay=0,
        handle_signals=False,
        keep_result=0,
        **SERIALIZERS,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    return ran


@pytest.mark.timeout(30)
async def test_one_users_twenty_jobs_do_not_starve_another(queue: ArqRedis) -> None:
    alice_jobs = list(range(1, 21))
    for job_id in alice_jobs:
        await _enqueue(queue, job_id, ALICE)
    await _enqueue(queue, 99, BOB)

    ran = await _run_in_order(queue)

    assert ran[:2] == [1, 99]  # Bob's single job runs right after Alice's first, not after all twenty
    assert [j for j in ran if j != 99] == alice_jobs  # Alice's own jobs stay first in, first out
    assert len(ran) == 21


@pytest.mark.timeout(30)
async def test_jobs_without_a_user_stay_first_in_first_out(queue: ArqRedis) -> None:
    for job_id in (1, 2, 3):
        await _enqueue(queue, job_id, None)
    assert await _run_in_order(queue) == [1, 2, 3]


@pytest.mark.timeout(30)
async def test_a_users_new_job_waits_behind_their_older_ones_after_some_finished(queue: ArqRedis) -> None:
    """Rounds count the jobs active *now*; a job queued after some of Alice's finished must not overtake her
    older waiting ones, while a newcomer still goes ahead of Alice's backlog."""
    ids = [await _enqueue(queue, job_id, ALICE) for job_id in (1, 2, 3)]
    await queue.zrem(queue.default_queue_name, ids[0])  # job 1 finished: Alice has 2 active, in rounds 1 and 2
    await _enqueue(queue, 4, ALICE)
    await _enqueue(queue, 5, CAROL)
    assert await _run_in_order(queue) == [5, 2, 3, 4]


@pytest.mark.timeout(30)
async def test_scores_are_never_in_the_future_and_jobs_keep_a_positive_ttl(queue: ArqRedis) -> None:
    """A future score would make an idle worker wait (arq only pops scores <= now); arq would also derive a
    negative key TTL from the shifted score if `_expires` were not passed."""
    before_ms = int(time.time() * 1000)
    ids = [await _enqueue(queue, job_id, ALICE) for job_id in range(1, MAX_ROUNDS + 6)]  # past the round clamp
    after_ms = int(time.time() * 1000)
    scores = [await queue.zscore(queue.default_queue_name, i) for i in ids]
    # about a round in the past; jobs queued within the same millisecond are kept in order 1 ms apart
    assert all(s is not None and s <= after_ms - ROUND_MS + len(ids) for s in scores)
    assert scores == sorted(scores) and len(set(scores)) == len(scores)  # strictly FIFO for one user
    assert scores[0] <= before_ms - (MAX_ROUNDS + 1) * ROUND_MS + (after_ms - before_ms)
    for queue_job_id in (ids[0], ids[-1]):
        status = await Job(queue_job_id, queue, _queue_name=queue.default_queue_name).status()
        assert status is JobStatus.queued  # not "deferred"
        ttl_ms = await queue.pttl(f"arq:job:{queue_job_id}")
        assert 0 < ttl_ms <= JOB_EXPIRES.total_seconds() * 1000
    assert await queue.zcard(USER_JOBS_KEY.format(queue=queue.default_queue_name, user_id=ALICE)) == len(ids)


@pytest.mark.parametrize(
    ("active", "latest", "expected"),
    [
        (0, None, 1_000_000_000 - (MAX_ROUNDS + 1) * ROUND_MS),
        (3, None, 1_000_000_000 + 3 * ROUND_MS - (MAX_ROUNDS + 1) * ROUND_MS),
        (500, None, 1_000_000_000 - ROUND_MS),  # clamped at MAX_ROUNDS
        (0, 1_000_000_000 - 2 * ROUND_MS, 1_000_000_000 - 2 * ROUND_MS + 1),  # behind the user's latest job
    ],
)
def test_fair_score(active: int, latest: int | None, expected: int) -> None:
    assert fair_score(1_000_000_000, active=active, latest_ms=latest) == expected


def test_fair_score_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="active must be >= 0"):
        fair_score(1_000, active=-1, latest_ms=None)
