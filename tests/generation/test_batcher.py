"""Batching across jobs: requests waiting together share one generate call, and each gets its own rows."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, JobStatus, SamplingParams
from beatforge.queue import enqueue_job
from generation.errors import GenerationError
from generation.music.batcher import Batcher
from generation.music.engine import GeneratedAudio, GenerationItem
from generation.music.musicgen import MusicGenEngine
from generation.worker.settings import create_worker
from storage import jobs


class CountingEngine(MusicGenEngine):
    """The real engine, recording the rows of every generate call."""

    calls: list[list[GenerationItem]]

    def generate_batch(self, items: Any, **kwargs: Any) -> list[GeneratedAudio]:
        self.calls.append(list(items))
        return super().generate_batch(items, **kwargs)


@pytest.fixture
def engine(tiny_model_dir: Path) -> CountingEngine:
    base = MusicGenEngine.load(str(tiny_model_dir))
    counting = CountingEngine(base.model, base.processor, name=base.name, device="cpu")
    counting.calls = []
    return counting


SAMPLING = SamplingParams()


async def test_requests_waiting_together_share_one_generate_call(engine: CountingEngine) -> None:
    batcher = Batcher(wait_s=0.05, fade_out_s=0.0)
    first = [GenerationItem("lofi piano", 1, 1.0), GenerationItem("lofi piano", 2, 1.0)]
    second = [GenerationItem("dark trap", 3, 0.5)]
    seen: list[tuple[int, int]] = []
    a, b = await asyncio.gather(
        batcher.generate(engine, first, sampling=SAMPLING, on_progress=lambda d, t: seen.append((d, t))),
        batcher.generate(engine, second, sampling=SAMPLING),
    )
    assert [len(c) for c in engine.calls] == [3]
    assert [x.seed for x in a] == [1, 2] and [x.seed for x in b] == [3]
    assert b[0].samples.shape == (1, 16_000) and a[0].samples.shape == (1, 32_000)
    assert seen and seen[-1][0] == seen[-1][1]
    (alone,) = engine.generate_batch([second[0]], sampling=SAMPLING, fade_out_s=0.0)
    np.testing.assert_allclose(alone.samples, b[0].samples, atol=1e-5)


async def test_incompatible_requests_run_separately(engine: CountingEngine) -> None:
    batcher = Batcher(wait_s=0.05, max_rows=2, fade_out_s=0.0)
    clip = np.zeros((1, 16_000), np.float32)
    await asyncio.gather(
        batcher.generate(engine, [GenerationItem("a", 1, 0.5)], sampling=SAMPLING),
        batcher.generate(engine, [GenerationItem("b", 2, 0.5)], sampling=SamplingParams(temperature=0.7)),
        batcher.generate(engine, [GenerationItem("c", 3, 0.5, prompt=clip)], sampling=SAMPLING),
        batcher.generate(engine, [GenerationItem("d", 4, 0.5)], sampling=SAMPLING),
        batcher.generate(engine, [GenerationItem("e", 5, 0.5)], sampling=SAMPLING),  # over max_rows: next batch
    )
    assert sorted(tuple(i.text for i in call) for call in engine.calls) == [("a", "d"), ("b",), ("c",), ("e",)]


async def test_a_failed_batch_fails_every_job_in_it(engine: CountingEngine) -> None:
    batcher = Batcher(wait_s=0.05)
    clip = np.zeros((1, 16_000), np.float32)
    bad = [GenerationItem("x", 1, 0.5, prompt=clip), GenerationItem("y", 2, 0.5, prompt=clip[:, :8000])]
    with pytest.raises(GenerationError, match="same length"):
        await batcher.generate(engine, bad, sampling=SAMPLING)


async def test_the_worker_batches_beats_queued_together(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = []
    for n in range(3):
        params = BeatParams(prompt=f"beat {n}", duration_s=1.0, seed=n)
        async with sessions() as session:
            job = await jobs.create_job(
                session, params=params, user_id=1, user_name="u", guild_id=None, channel_id=None
            )
        await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params)
        ids.append(job.id)
    worker = create_worker(
        settings.model_copy(update={"batch_wait_s": 0.5}),
        burst=True, poll_delay=0, handle_signals=False, redis_pool=arq_redis,
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="generation.music.batcher"):
        try:
            await worker.main()
        finally:
            await worker.close()
    batched = [r for r in caplog.records if r.getMessage() == "batched generation"]
    assert batched and batched[0].jobs == 3  # type: ignore[attr-defined]
    async with sessions() as session:
        done = [await jobs.get_job(session, i) for i in ids]
    assert all(j.status is JobStatus.DONE for j in done), [j.error for j in done]
    assert [j.artifacts[0].meta["seed"] for j in done] == [0, 1, 2]  # type: ignore[index]
