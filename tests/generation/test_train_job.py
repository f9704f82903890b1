"""Training jobs on a worker with the ``train`` role (in process, real redis and SQLite): a run trains the tiny
MusicGen on an uploaded zip, publishes its steps and loss, registers the model in the database and republishes the
model list; a bad zip or a taken name fails the job with the reasons; ❌ stops a run at its next step."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile

import numpy as np
import soundfile as sf
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import PROGRESS_KEY, ErrorCode, JobProgress, JobStatus, TrainParams
from beatforge.fleet import read_models
from beatforge.queue import connect, enqueue_job, queue_for
from generation.worker.settings import create_worker
from generation.worker.train import models_dir
from storage import jobs
from storage.artifacts import ArtifactStore
from storage.jobs import JobView
from storage.model_registry import list_models
from tests.support.arq_job import run_burst, stop_worker


def clips_zip(extra: dict[str, bytes] | None = None) -> bytes:
    rate, t = 32_000, np.arange(64_000) / 32_000
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(4):
            wav = io.BytesIO()
            sf.write(wav, (0.3 * np.sin(2 * np.pi * 110 * 2 ** (i / 4) * t)).astype(np.float32), rate, format="WAV")
            zf.writestr(f"tone{i}.wav", wav.getvalue())
            zf.writestr(f"tone{i}.txt", f"tone {i}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


def trainer(settings: Settings) -> Settings:
    return settings.model_copy(update={"worker_roles": "train", "train_window_s": 0.5})


async def queue_run(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, data: bytes, **changes: object
) -> int:
    fields = {"prompt": "model house", "name": "house", "base": "debug", "steps": 6} | changes
    params = TrainParams.model_validate(fields | {"upload": f"uploads/ab-{fields['name']}.zip"})
    with ArtifactStore(settings.artifact_dir).writing("uploads", params.upload.removeprefix("uploads/")) as tmp:
        tmp.write_bytes(data)
    async with sessions() as session:
        job = await jobs.create_job(session, params=params, user_id=9, user_name="u", guild_id=5, channel_id=None)
    queue = queue_for(settings, params.kind)
    await enqueue_job(redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params, queue_name=queue, user_id=9)
    return job.id


async def job_of(sessions: async_sessionmaker[AsyncSession], job_id: int) -> JobView:
    async with sessions() as session:
        return await jobs.get_job(session, job_id)


async def test_a_run_trains_registers_and_republishes_the_model(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = trainer(settings)
    redis = await connect(settings)
    try:
        job_id = await queue_run(settings, sessions, redis, clips_zip())
        await run_burst(settings, redis)
        job = await job_of(sessions, job_id)
        assert job.status is JobStatus.DONE, job.error
        raw = await redis.get(PROGRESS_KEY.format(job_id=job_id))
        models = await read_models(redis)
    finally:
        await redis.aclose()
    async with sessions() as session:
        (row,) = await list_models(session)
    out = models_dir(settings) / "house"
    assert (row.name, row.kind, row.base, row.source, row.added_by, row.guild_id) == (
        "house",
        "lora",
        "debug",
        str(out),
        9,
        5,  # the server's own model
    )
    assert (out / "card.json").is_file() and (out / "adapter_config.json").is_file()
    assert models is not None and "house" in {m.name for m in models[0]}
    last = JobProgress.model_validate_json(raw) if raw else None
    assert last is not None and last.stage in ("training", "saving") and last.total in (1, 6)


async def test_a_bad_zip_or_a_taken_name_fails_the_run_with_its_reasons(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = trainer(settings)
    redis = await connect(settings)
    try:
        bad = await queue_run(settings, sessions, redis, clips_zip({"../../escape.txt": b"x"}), name="bad")
        taken = await queue_run(settings, sessions, redis, clips_zip(), name="debug")
        await run_burst(settings, redis)
    finally:
        await redis.aclose()
    failed = await job_of(sessions, bad)
    assert failed.status is JobStatus.FAILED
    assert "../../escape.txt: a path outside the zip's folder is not allowed" in (failed.error or "")
    assert not (settings.artifact_dir.parent / "escape.txt").exists() and not (models_dir(settings) / "bad").exists()
    refused = await job_of(sessions, taken)
    assert refused.status is JobStatus.FAILED and "a model named 'debug' exists already" in (refused.error or "")


async def test_cancel_stops_a_run_at_its_next_step_and_leaves_a_checkpoint(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = trainer(settings)
    redis = await connect(settings)
    worker = create_worker(settings, poll_delay=0.05, handle_signals=False, redis_pool=redis)
    polling = asyncio.create_task(worker.main())
    try:
        job_id = await queue_run(settings, sessions, redis, clips_zip(), steps=5000)
        deadline = time.monotonic() + 60
        while True:  # wait until it trains
            raw = await redis.get(PROGRESS_KEY.format(job_id=job_id))
            if raw and JobProgress.model_validate_json(raw).done >= 1:
                break
            assert time.monotonic() < deadline, "the run never reported a step"
            await asyncio.sleep(0.05)
        job = await job_of(sessions, job_id)
        async with sessions() as session:  # what ❌ does: the row first, then arq's abort
            assert await jobs.cancel(session, job_id, by="test")
        await redis.zadd(abort_jobs_ss, {job.queue_job_id: timestamp_ms()})
        checkpoints = models_dir(settings) / "house.partial" / "checkpoints"
        while not (checkpoints.is_dir() and any(checkpoints.iterdir())):
            assert time.monotonic() < deadline, "the run never stopped with a checkpoint"
            await asyncio.sleep(0.05)
    finally:
        await stop_worker(worker, polling)
        await redis.aclose()
    job = await job_of(sessions, job_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, ErrorCode.CANCELLED)
    assert not (models_dir(settings) / "house").exists()
    async with sessions() as session:
        assert await list_models(session) == []
