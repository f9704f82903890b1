"""The worker with ``BEATFORGE_ARTIFACT_BACKEND=s3`` against a real S3-compatible server (moto, on loopback): a
job is recorded done only once every file it made is in the bucket, and a bucket that refuses writes or a
connection cut mid-upload leaves it failed, with no artifact rows; a worker that never saw a beat fetches its take
from the bucket to cut a loop from it.

Each test runs the real arq worker in burst mode (as tests/generation/test_worker.py does) on the tiny models.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import (
    ArtifactKind,
    BeatParams,
    ErrorCode,
    JobParams,
    JobStatus,
    LoopJobParams,
    LoopParams,
    MidiParams,
)
from beatforge.queue import enqueue_job
from bot.messages import public_reason
from generation.audio.io import write_wav
from generation.worker.settings import create_worker
from storage import jobs
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.backends import open_backend
from storage.jobs import JobView
from tests.support.arq_job import run_burst
from tests.support.s3_server import CuttingProxy, MotoServer, deny_writes, raw_client
from tests.support.synth import render_beat

PREFIX = "bf/artifacts"

pytestmark = pytest.mark.usefixtures("aws_test_credentials")


def _on_s3(settings: Settings, bucket: str, endpoint: str) -> Settings:
    return settings.model_copy(
        update={"artifact_backend": "s3", "s3_bucket": bucket, "s3_prefix": "bf", "s3_endpoint_url": endpoint}
    )


async def _beat(settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis) -> JobView:
    """Queue one beat, run a burst worker until the queue is empty, and return the job's row."""
    beat = BeatParams.model_validate({"prompt": "boom bap, 90 bpm", "duration_s": 1.5, "seed": 4})
    async with sessions() as session:
        job = await jobs.create_job(session, params=beat, user_id=1, user_name="u", guild_id=None, channel_id=None)
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=beat)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        return await jobs.get_job(session, job.id)


def _keys(endpoint: str, bucket: str) -> list[str]:
    listed: dict[str, Any] = raw_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


async def test_every_file_is_in_the_bucket_before_the_job_is_done(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    moto: MotoServer,
    bucket: str,
) -> None:
    job = await _beat(_on_s3(settings, bucket, moto.url), sessions, arq_redis)

    assert job.status is JobStatus.DONE, job.error
    assert {a.kind for a in job.artifacts} >= {"audio", "cover"}
    assert _keys(moto.url, bucket) == sorted(f"{PREFIX}/{a.path}" for a in job.artifacts)
    raw = raw_client(moto.url)
    for artifact in job.artifacts:
        obj = raw.get_object(Bucket=bucket, Key=f"{PREFIX}/{artifact.path}")
        body = obj["Body"].read()
        assert len(body) == artifact.bytes and obj["Metadata"] == {"sha256": artifact.sha256}
        assert body == (settings.artifact_dir / artifact.path).read_bytes()  # the worker's working copy, uploaded


async def test_a_bucket_that_refuses_writes_fails_the_job_with_no_files_recorded(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    moto: MotoServer,
    bucket: str,
) -> None:
    deny_writes(moto.url, bucket)
    job = await _beat(_on_s3(settings, bucket, moto.url), sessions, arq_redis)

    assert job.status is JobStatus.FAILED
    assert job.error_code is ErrorCode.INTERNAL
    assert job.error is not None
    user_line, detail = job.error.split("\n", 1)
    assert re.fullmatch(r"its files could not be stored \(0 of \d saved\)", user_line)
    assert public_reason(job.error) == user_line  # what the user is told; the bucket and S3's reason stay in the row
    assert f"s3://{bucket}/{PREFIX}/{job.id}/" in detail and "Forbidden" in detail
    assert job.artifacts == ()
    assert _keys(moto.url, bucket) == []


async def test_a_connection_cut_mid_upload_fails_the_job_with_no_files_recorded(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    moto: MotoServer,
    bucket: str,
) -> None:
    # Metadata-sized requests pass; every upload over 32 KiB (the beat's audio, the cover) is reset mid-body.
    proxy = CuttingProxy(moto.port, cut_after=32 * 1024)
    try:
        job = await _beat(_on_s3(settings, bucket, proxy.url), sessions, arq_redis)
        assert proxy.cuts >= 1
    finally:
        proxy.close()

    assert job.status is JobStatus.FAILED
    assert job.error is not None and "its files could not be stored" in job.error
    assert job.artifacts == ()
    assert not [key for key in _keys(moto.url, bucket) if key.endswith(".wav")]  # no half-uploaded audio either


async def test_a_loop_on_another_worker_fetches_its_beat_from_the_bucket(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    moto: MotoServer,
    bucket: str,
    rng: np.random.Generator,
    tmp_path: Path,
) -> None:
    s3_settings = _on_s3(settings, bucket, moto.url)
    beat = BeatParams(prompt="boom bap drums", duration_s=10, seed=3)
    async with sessions() as session:
        parent = await jobs.create_job(session, params=beat, user_id=1, user_name="u", guild_id=None, channel_id=None)
    first = ArtifactStore(tmp_path / "first-worker")  # the worker that made the beat, on another machine
    with first.writing(parent.id, "beat.wav") as tmp:
        write_wav(tmp, render_beat(bpm=120, bars=6, jitter_ms=3, rng=rng).samples, sample_rate=32_000)
    take = first.record(parent.id, "beat.wav", kind=ArtifactKind.AUDIO)
    await open_backend(s3_settings, first).publish([take])
    async with sessions() as session:
        await jobs.mark_running(session, parent.id, resolved_model="tiny")
        await jobs.mark_done(session, parent.id, artifacts=[take])
        loop = await jobs.create_job(
            session,
            params=LoopJobParams(prompt="boom bap drums", seed=3, loop=LoopParams(bars=4)),
            user_id=1,
            user_name="u",
            guild_id=None,
            channel_id=None,
            parent_id=parent.id,
        )
    await enqueue_job(arq_redis, job_id=loop.id, queue_job_id=loop.queue_job_id, params=loop.params)
    assert not (settings.artifact_dir / str(parent.id)).exists()  # this worker has never seen the beat

    worker = create_worker(s3_settings, burst=True, poll_delay=0, handle_signals=False, redis_pool=arq_redis)
    try:
        await worker.main()
    finally:
        await worker.close()

    async with sessions() as session:
        done = await jobs.get_job(session, loop.id)
    assert done.status is JobStatus.DONE, done.error
    assert (settings.artifact_dir / take.path).read_bytes() == first.resolve(take.path).read_bytes()  # fetched
    assert {f"{PREFIX}/{a.path}" for a in done.artifacts} <= set(_keys(moto.url, bucket))


async def _queue(
    sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, params: JobParams, *, parent_id: int | None = None
) -> int:
    async with sessions() as session:
        job = await jobs.create_job(
            session, params=params, user_id=1, user_name="u", guild_id=None, channel_id=None, parent_id=parent_id
        )
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params)
    return job.id


async def test_an_extend_on_another_worker_fetches_its_take_from_the_bucket(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    moto: MotoServer,
    bucket: str,
    tmp_path: Path,
) -> None:
    s3_settings = _on_s3(settings, bucket, moto.url)
    async with sessions() as session:
        parent = await jobs.create_job(
            session,
            params=BeatParams(prompt="boom bap", duration_s=1, seed=3),
            user_id=1,
            user_name="u",
            guild_id=None,
            channel_id=None,
        )
    first = ArtifactStore(tmp_path / "first-worker")  # the worker that made the take, on another machine
    with first.writing(parent.id, "take.wav") as tmp:
        write_wav(tmp, np.zeros((1, 16_000), np.float32) + 0.1, sample_rate=32_000)  # 0.5 s
    take = first.record(parent.id, "take.wav", kind=ArtifactKind.AUDIO)
    await open_backend(s3_settings, first).publish([take])
    async with sessions() as session:
        await jobs.mark_running(session, parent.id, resolved_model="tiny")
        await jobs.mark_done(session, parent.id, artifacts=[take])
    extend = BeatParams(prompt="boom bap", duration_s=1, seed=5, continue_from=take.path)
    job_id = await _queue(sessions, arq_redis, extend, parent_id=parent.id)
    assert not (settings.artifact_dir / str(parent.id)).exists()  # this worker has never seen the take

    await run_burst(s3_settings, arq_redis)

    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.DONE, job.error
    assert job.artifacts[0].meta is not None and job.artifacts[0].meta["continued_s"] == 0.5
    assert (settings.artifact_dir / take.path).read_bytes() == first.resolve(take.path).read_bytes()  # fetched


async def test_a_midi_upload_the_bot_stored_is_fetched_and_a_missing_one_fails_clearly(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    moto: MotoServer,
    bucket: str,
    rng: np.random.Generator,
    tmp_path: Path,
) -> None:
    s3_settings = _on_s3(settings, bucket, moto.url)
    bot = ArtifactStore(tmp_path / "bot")  # where the bot saved the upload, on another machine
    with bot.writing("uploads", "a1-my-track.wav") as tmp:
        write_wav(tmp, render_beat(bpm=90, bars=2, rng=rng).samples, sample_rate=32_000)
    data = bot.resolve("uploads/a1-my-track.wav").read_bytes()
    sent = ArtifactRecord(ArtifactKind.AUDIO, "uploads/a1-my-track.wav", len(data), hashlib.sha256(data).hexdigest())
    await open_backend(s3_settings, bot).publish([sent])
    good = await _queue(sessions, arq_redis, MidiParams(prompt="my track.wav", upload="uploads/a1-my-track.wav"))
    lost = await _queue(sessions, arq_redis, MidiParams(prompt="gone.wav", upload="uploads/b2-gone.wav"))

    await run_burst(s3_settings, arq_redis)

    async with sessions() as session:
        done, failed = await jobs.get_job(session, good), await jobs.get_job(session, lost)
    assert done.status is JobStatus.DONE, done.error
    assert done.artifacts[0].meta is not None and done.artifacts[0].meta["source"] == "my track.wav"
    assert (settings.artifact_dir / "uploads/a1-my-track.wav").read_bytes() == data
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert public_reason(failed.error) == "the uploaded file could not be fetched from storage"
    assert f"s3://{bucket}/{PREFIX}/uploads/b2-gone.wav is not in the bucket" in failed.error
