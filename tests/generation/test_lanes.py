"""Workers by kind: with a CPU queue split off, GPU workers run beats and CPU workers run MIDI and loops, each on
its own arq queue, against real redis and SQLite (in-process workers, burst mode)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import soundfile as sf
from arq.connections import ArqRedis
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, JobKind, JobParams, JobStatus, MidiParams
from beatforge.queue import connect, enqueue_job, queue_for, queue_names, served_kinds, served_queue
from generation.worker.context import CONTEXT_KEY, WorkerContext
from generation.worker.settings import create_worker, worker_settings
from storage import jobs
from storage.artifacts import ArtifactStore
from tests.support.synth import render_beat

CPU_QUEUE = "beatforge:cpu"


GENERATION_KINDS = [kind for kind in JobKind if kind is not JobKind.TRAIN]


def test_without_a_cpu_queue_every_generation_kind_is_on_the_one_queue_every_worker_serves(settings: Settings) -> None:
    assert {queue_for(settings, kind) for kind in GENERATION_KINDS} == {settings.queue_name}
    assert served_kinds(settings) == GENERATION_KINDS
    assert queue_names(settings) == [settings.queue_name, settings.train_queue_name]


def test_training_runs_have_their_own_queue_which_only_train_workers_serve(settings: Settings) -> None:
    trainer = settings.model_copy(update={"worker_roles": "train"})
    assert queue_for(settings, JobKind.TRAIN) == settings.train_queue_name != settings.queue_name
    assert served_queue(settings) == settings.queue_name and JobKind.TRAIN not in served_kinds(settings)
    assert served_queue(trainer) == settings.train_queue_name and served_kinds(trainer) == [JobKind.TRAIN]
    assert {f.name for f in worker_settings(settings)["functions"]} == {k.function for k in GENERATION_KINDS}
    assert {f.name for f in worker_settings(trainer)["functions"]} == {"train_model"}
    assert (worker_settings(trainer)["max_jobs"], worker_settings(trainer)["job_timeout"]) == (1, 6 * 3600)
    assert worker_settings(settings)["job_timeout"] == settings.job_timeout_s
    with pytest.raises(ValidationError, match="BEATFORGE_TRAIN_QUEUE_NAME"):
        Settings(_env_file=None, train_queue_name="beatforge:gpu")  # type: ignore[call-arg]


def test_a_cpu_queue_takes_midi_and_loops_and_each_lane_registers_only_its_kinds(settings: Settings) -> None:
    split = settings.model_copy(update={"cpu_queue_name": CPU_QUEUE})
    cpu = split.model_copy(update={"worker_lane": "cpu"})
    assert {kind for kind in JobKind if queue_for(split, kind) == CPU_QUEUE} == {JobKind.LOOP, JobKind.MIDI}
    assert queue_names(split) == [settings.queue_name, CPU_QUEUE, settings.train_queue_name]
    assert (served_queue(split), served_queue(cpu)) == (settings.queue_name, CPU_QUEUE)
    gpu_functions = {f.name for f in worker_settings(split)["functions"]}
    cpu_functions = {f.name for f in worker_settings(cpu)["functions"]}
    assert gpu_functions == {"generate_beat", "draw_cover", "make_pack"}
    assert cpu_functions == {"cut_loop", "transcribe_midi"}


def test_a_cpu_worker_without_a_cpu_queue_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValidationError, match="BEATFORGE_CPU_QUEUE_NAME"):
        Settings(_env_file=None, worker_lane="cpu")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="must differ"):
        Settings(_env_file=None, cpu_queue_name="beatforge:gpu")  # type: ignore[call-arg]


async def _queue(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, settings: Settings, params: JobParams
) -> int:
    async with sessions() as session:
        job = await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=None, channel_id=None)
    queue = queue_for(settings, params.kind)
    await enqueue_job(redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params, queue_name=queue, user_id=1)
    return job.id


async def _run_lane(settings: Settings, redis: ArqRedis) -> dict[str, Any]:
    worker = create_worker(settings, burst=True, poll_delay=0, handle_signals=False, redis_pool=redis)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker.ctx


async def _status(sessions: async_sessionmaker[AsyncSession], job_id: int) -> JobStatus:
    async with sessions() as session:
        return (await jobs.get_job(session, job_id)).status


async def test_gpu_and_cpu_workers_each_run_only_their_queue_and_the_cpu_one_loads_no_musicgen(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], rng: np.random.Generator
) -> None:
    gpu = settings.model_copy(update={"cpu_queue_name": CPU_QUEUE, "cover_mode": "procedural"})
    cpu = gpu.model_copy(update={"worker_lane": "cpu"})
    store = ArtifactStore(settings.artifact_dir)
    with store.writing("uploads", "a1-track.flac") as tmp:
        sf.write(tmp, render_beat(bpm=100, bars=2, rng=rng).samples.T, 32_000, format="FLAC")
    redis = await connect(gpu)
    try:
        beat = await _queue(sessions, redis, gpu, BeatParams(prompt="boom bap", duration_s=1.0, seed=2))
        midi = await _queue(sessions, redis, gpu, MidiParams(prompt="track.flac", upload="uploads/a1-track.flac"))
        assert await redis.zcard(gpu.queue_name) == 1 and await redis.zcard(CPU_QUEUE) == 1

        gpu_ctx = await _run_lane(gpu, redis)
        assert (await _status(sessions, beat), await _status(sessions, midi)) == (JobStatus.DONE, JobStatus.QUEUED)

        cpu_ctx = await _run_lane(cpu, redis)
        assert await _status(sessions, midi) is JobStatus.DONE
    finally:
        await redis.aclose()
    gpu_context, cpu_context = gpu_ctx[CONTEXT_KEY], cpu_ctx[CONTEXT_KEY]
    assert isinstance(gpu_context, WorkerContext) and isinstance(cpu_context, WorkerContext)
    assert gpu_context.models.resident() == [settings.default_model]
    assert cpu_context.models.resident() == []  # a CPU worker never loads MusicGen
