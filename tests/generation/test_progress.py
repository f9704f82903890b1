"""The worker's progress records (generation/worker/progress.py): what the status line's "about N s left" says."""

from __future__ import annotations

import asyncio
import time

import pytest
from arq.connections import ArqRedis

from beatforge.contract import PROGRESS_KEY, JobProgress
from generation.worker import progress as progress_module
from generation.worker.progress import ETA_MIN_TIMED_STEPS, ProgressPublisher

LOADING_S = 1.0  # the model loading (or the wait for a batch) before the first decoding step
STEP_S = 0.02
TOTAL = 40


def _decode(publisher: ProgressPublisher, steps: range) -> None:
    """The generation thread: one callback per decoding step, as transformers' stopping criteria call it."""
    for done in steps:
        time.sleep(STEP_S)
        publisher.on_step(done, TOTAL)


@pytest.fixture
def every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish at every step instead of twice a second, so each estimate the worker makes is seen."""
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY_S", 0.0)


async def _published(arq_redis: ArqRedis, publisher: ProgressPublisher, steps: range) -> list[JobProgress]:
    sent: list[JobProgress] = []
    publish = publisher.publish

    async def recording(progress: JobProgress) -> None:
        sent.append(progress)
        await publish(progress)

    publisher.publish = recording  # type: ignore[method-assign]
    await asyncio.to_thread(_decode, publisher, steps)
    await asyncio.sleep(0.1)  # the last writes were scheduled from the thread onto this loop
    return sent


@pytest.mark.usefixtures("every_step")
async def test_time_left_counts_decoding_steps_only_not_the_loading_before_them(arq_redis: ArqRedis) -> None:
    publisher = ProgressPublisher(arq_redis, job_id=7, loop=asyncio.get_running_loop())
    await asyncio.sleep(LOADING_S)  # the job started, then the model loaded: no step has run yet
    sent = await _published(arq_redis, publisher, range(1, TOTAL + 1))

    assert [p.done for p in sent] == list(range(1, TOTAL + 1))
    # Nothing is announced until a few steps were timed: one step says little (and the first carries warm-up).
    assert all(p.eta_s is None for p in sent[:ETA_MIN_TIMED_STEPS])
    estimates = [(p.done, p.eta_s) for p in sent if p.eta_s is not None]
    assert estimates[0][0] == ETA_MIN_TIMED_STEPS + 1 and len(estimates) == TOTAL - ETA_MIN_TIMED_STEPS
    for done, eta in estimates:
        truth = (TOTAL - done) * STEP_S
        # Timed from the job's start, step 4 said (1.0 + 0.08) / 4 * 36 ≈ 9.7 s for 0.72 s of work. Sleeps
        # on a busy machine only run long, so allow slow steps, never the loading time spread over them.
        assert truth * 0.8 <= eta <= truth * 6 + 0.1, (done, eta, truth)
    assert sent[-1].eta_s == 0.0
    stored = JobProgress.model_validate_json(await arq_redis.get(PROGRESS_KEY.format(job_id=7)))
    assert (stored.done, stored.eta_s) == (TOTAL, 0.0)


@pytest.mark.usefixtures("every_step")
async def test_a_count_that_starts_over_is_timed_afresh(arq_redis: ArqRedis) -> None:
    """A second pass (its step count back at 1) after a pause: that pause is no more a decoding step than the
    model load was."""
    publisher = ProgressPublisher(arq_redis, job_id=8, loop=asyncio.get_running_loop())
    await _published(arq_redis, publisher, range(1, 11))
    await asyncio.sleep(LOADING_S)
    sent = await _published(arq_redis, publisher, range(1, TOTAL + 1))
    assert all(p.eta_s is None for p in sent[:ETA_MIN_TIMED_STEPS])
    assert all(p.eta_s is not None and p.eta_s <= (TOTAL - p.done) * STEP_S * 6 + 0.1 for p in sent[3:])
