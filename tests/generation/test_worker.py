"""The arq job against real redis and SQLite, in-process (burst mode) for speed; test_e2e runs it as a process."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.jobs import JobStatus as ArqStatus
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import (
    PREVIEW_KEY,
    PROGRESS_KEY,
    BeatParams,
    CoverParams,
    ErrorCode,
    JobKind,
    JobParams,
    JobProgress,
    JobRequest,
    JobStatus,
    LoopJobParams,
    LoopMeta,
    LoopParams,
    MidiParams,
    Relation,
)
from beatforge.queue import enqueue_job
from generation.audio.io import write_wav
from generation.errors import ModelUnavailable
from storage import jobs
from storage.artifacts import ArtifactStore
from tests.support.arq_job import run_burst
from tests.support.synth import render_beat


async def _queue(sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, **params: Any) -> int:
    beat = BeatParams.model_validate({"prompt": "boom bap, 90 bpm", "duration_s": 1.5, "seed": 4, **params})
    async with sessions() as session:
        job = await jobs.create_job(session, params=beat, user_id=1, user_name="u", guild_id=None, channel_id=None)
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=beat)
    return job.id


async def test_job_writes_audio_records_it_and_reports_progress(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    job_id = await _queue(sessions, arq_redis)
    await run_burst(settings, arq_redis)

    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.DONE, job.error
    assert job.resolved_model == settings.default_model and job.started_at and job.finished_at
    artifact, cover = job.artifacts
    assert (artifact.kind, cover.kind) == ("audio", "cover")
    assert cover.meta is not None
    assert (cover.meta["source"], cover.meta["model"], cover.meta["prompt_source"]) == (
        "diffusion",
        "debug",
        "template",
    )
    assert cover.meta["prompt"].startswith("square album cover art") and cover.meta["note"] is None
    with Image.open(ArtifactStore(settings.artifact_dir).resolve(cover.path)) as image:
        assert image.size == (64, 64)
    path = ArtifactStore(settings.artifact_dir).resolve(artifact.path)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (32_000, 1, 48_000)
    assert artifact.bytes == path.stat().st_size and "seed4" in path.name

    progress = JobProgress.model_validate_json(await arq_redis.get(PROGRESS_KEY.format(job_id=job_id)))
    assert progress.stage == "saving"
    # The row is the job's outcome: the job returns nothing, and arq keeps no result for anyone to read.
    assert await Job(job.queue_job_id, arq_redis).status() is ArqStatus.not_found


async def test_unloadable_model_fails_the_job_with_a_reason(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    job_id = await _queue(sessions, arq_redis, model="/models/not-here")
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.FAILED and job.error_code is ErrorCode.MODEL_UNAVAILABLE
    assert "/models/not-here" in (job.error or "") and job.artifacts == ()


@pytest.mark.parametrize(
    ("mutate", "phrase"),
    [
        (lambda p: p["params"].update(duration_s=500), "duration must be at most 240"),
        (lambda p: p.update(schema_version=1), "schema_version"),
        (lambda p: p["params"].update(take=2), "parameters.take"),  # another kind's field
        (lambda p: p["params"].update(prompt=""), "prompt is empty"),
    ],
)
async def test_invalid_payload_fails_the_job_without_running_it(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, mutate: Any, phrase: str
) -> None:
    beat = BeatParams(prompt="x", duration_s=1, seed=1)
    async with sessions() as session:
        job = await jobs.create_job(session, params=beat, user_id=1, user_name="u", guild_id=None, channel_id=None)
    payload = JobRequest[BeatParams](job_id=job.id, params=beat).model_dump(mode="json")
    mutate(payload)
    await arq_redis.enqueue_job(JobKind.BEAT.function, payload, _job_id=job.queue_job_id)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job.id)
    assert job.status is JobStatus.FAILED and job.error_code is ErrorCode.INVALID_REQUEST
    assert phrase in (job.error or "")


async def test_cover_job_draws_a_new_cover_for_a_beat(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    beat = BeatParams(prompt="lofi rain", duration_s=1, seed=5, style="lofi", title="Rainy Day")
    async with sessions() as session:
        parent = await jobs.create_job(session, params=beat, user_id=1, user_name="u", guild_id=None, channel_id=None)
        job = await jobs.create_job(
            session,
            params=CoverParams(prompt="lofi rain", style="lofi", title="Rainy Day", seed=77),
            user_id=1,
            user_name="u",
            guild_id=None,
            channel_id=None,
            parent_id=parent.id,
            relation=Relation.COVER,
        )
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=job.params)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        done = await jobs.get_job(session, job.id)
    assert done.status is JobStatus.DONE and (done.kind, done.parent_id) == (JobKind.COVER, parent.id)
    (cover,) = done.artifacts
    assert cover.kind == "cover" and cover.path.endswith("seed77.png")


async def _finished_beat(settings: Settings, sessions: async_sessionmaker[AsyncSession], samples: Any) -> int:
    """A finished beat whose audio is a synthetic drum render (a known tempo), as if the worker had made it."""
    beat = BeatParams(prompt="boom bap drums", duration_s=10, seed=3)
    async with sessions() as session:
        job = await jobs.create_job(session, params=beat, user_id=1, user_name="u", guild_id=None, channel_id=None)
    store = ArtifactStore(settings.artifact_dir)
    with store.writing(job.id, "beat.wav") as tmp:
        write_wav(tmp, samples, sample_rate=32_000)
    async with sessions() as session:
        await jobs.mark_running(session, job.id, resolved_model="tiny")
        await jobs.mark_done(session, job.id, artifacts=[store.record(job.id, "beat.wav", kind="audio")])
    return job.id


async def _queue_child(
    sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, params: JobParams, *, parent_id: int | None
) -> int:
    """A loop or MIDI job as the bot queues it (``parent_id``: the beat it works on)."""
    async with sessions() as session:
        job = await jobs.create_job(
            session, params=params, user_id=1, user_name="u", guild_id=None, channel_id=None, parent_id=parent_id
        )
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params)
    return job.id


async def _queue_loop(
    sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, parent_id: int, loop: LoopParams
) -> int:
    params = LoopJobParams(prompt="boom bap drums", seed=3, loop=loop)
    return await _queue_child(sessions, arq_redis, params, parent_id=parent_id)


async def test_loop_job_cuts_whole_bars_with_metadata(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, rng: np.random.Generator
) -> None:
    render = render_beat(bpm=120, bars=6, jitter_ms=3, rng=rng)
    parent = await _finished_beat(settings, sessions, render.samples)
    job_id = await _queue_loop(sessions, arq_redis, parent, LoopParams(bars=4, format="flac"))
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.DONE, job.error
    loop, metadata = job.artifacts
    assert (loop.kind, metadata.kind) == ("loop", "metadata")
    store = ArtifactStore(settings.artifact_dir)
    info = sf.info(store.resolve(loop.path))
    assert info.format == "FLAC" and abs(info.frames / 32_000 - 4 * 4 * 60 / 120) < 0.02
    assert "4bars-120bpm" in loop.path
    written = json.loads(store.resolve(metadata.path).read_text())
    assert loop.meta == {**written, "s3_keys": None, "s3_error": None}  # the sidecar, and no bucket configured
    assert LoopMeta.model_validate(loop.meta).bars == 4
    assert written["bars"] == 4 and abs(written["bpm_detected"] - 120) < 1.2 and written["seed"] == 3
    assert written["seam_score"] < 2 and written["end_sample"] > written["start_sample"]


async def test_loop_of_audio_without_a_beat_fails_clearly(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    parent = await _finished_beat(settings, sessions, np.zeros((1, 32_000 * 5), np.float32))
    job_id = await _queue_loop(sessions, arq_redis, parent, LoopParams())
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.FAILED and job.error_code is ErrorCode.INVALID_REQUEST
    assert "silent" in (job.error or "").lower() and job.artifacts == ()


async def test_a_beat_without_a_steady_pulse_is_delivered_with_the_reason_it_has_no_loop(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    """The tiny model makes noise: the loop cannot be cut, but the user still gets the beat, and why."""
    job_id = await _queue(sessions, arq_redis, bpm=120, loop=LoopParams(bars=1).model_dump())
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.DONE
    audio = job.artifacts[0]
    assert audio.kind == "audio" and "loop" not in [a.kind for a in job.artifacts]
    assert audio.meta is not None and audio.meta["loop_error"] and audio.meta["bpm"] is None


def test_a_loop_over_the_upload_limit_gets_a_smaller_preview(tmp_path: Path, rng: np.random.Generator) -> None:
    from generation.loops.export import cut_loop

    render = render_beat(bpm=120, bars=5, rng=rng)
    params = BeatParams(prompt="drums", duration_s=10, seed=1)
    args = {"sample_rate": 32_000, "params": params, "loop": LoopParams(bars=4), "model": None, "out_dir": tmp_path}
    roomy = cut_loop(render.samples, **args, stem="a", preview_limit=10 * 2**20)
    tight = cut_loop(render.samples, **args, stem="b", preview_limit=200_000)
    assert roomy.preview is None and roomy.audio.stat().st_size > 200_000
    assert tight.preview is not None and tight.preview.stat().st_size <= 200_000
    assert tight.preview.suffix in {".flac", ".mp3"}


async def _queue_midi(
    sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, midi: MidiParams, parent_id: int | None = None
) -> int:
    return await _queue_child(sessions, arq_redis, midi, parent_id=parent_id)


async def test_midi_job_transcribes_a_finished_beat(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, rng: np.random.Generator
) -> None:
    parent = await _finished_beat(settings, sessions, render_beat(bpm=100, bars=4, chords=True, rng=rng).samples)
    job_id = await _queue_midi(sessions, arq_redis, MidiParams(prompt="boom bap drums", seed=3), parent_id=parent)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.DONE, job.error
    (pack,) = job.artifacts
    assert pack.kind == "midi" and pack.meta is not None
    assert pack.meta["source"] == f"beat #{parent}" and abs(pack.meta["bpm"] - 100) < 1.5
    assert pack.meta["drum_hits"] > 20 and pack.meta["bass_notes"] > 0
    with zipfile.ZipFile(ArtifactStore(settings.artifact_dir).resolve(pack.path)) as zf:
        assert {"drums.mid", "bass.mid", "melody.mid", "full.mid", "README.txt"} == set(zf.namelist())


async def test_midi_job_on_an_upload_with_stems(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, rng: np.random.Generator
) -> None:
    store = ArtifactStore(settings.artifact_dir)
    with store.writing("uploads", "a1-my-track.flac") as tmp:
        sf.write(tmp, render_beat(bpm=90, bars=2, stereo=True, rng=rng).samples.T, 32_000, format="FLAC")
    upload = MidiParams(prompt="my track.wav", stems=True, upload="uploads/a1-my-track.flac")
    job_id = await _queue_midi(sessions, arq_redis, upload)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.DONE, job.error
    assert [a.kind for a in job.artifacts] == ["midi", "stems"]
    assert job.artifacts[0].meta is not None and job.artifacts[0].meta["source"] == "my track.wav"
    with zipfile.ZipFile(store.resolve(job.artifacts[1].path)) as zf:
        data, sr = sf.read(io.BytesIO(zf.read("drums.flac")))
    assert sr == 32_000 and data.shape[1] == 2  # stems keep the upload's rate and channels


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "is empty (0 bytes)"),
        (b"%PDF-1.7 not audio at all", "not a readable audio file"),
        (b"my lyrics, saved as .wav by mistake\n", "upload.wav is not a readable audio file"),
        ("long", "upload.wav is 0:20 long; the limit is 0:10"),
        ("silence", "silent"),
    ],
)
async def test_midi_job_on_a_bad_upload_fails_with_the_reason(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    content: bytes | str,
    phrase: str,
) -> None:
    settings = settings.model_copy(update={"midi_max_input_s": 10.0})
    store = ArtifactStore(settings.artifact_dir)
    with store.writing("uploads", "b2-upload.wav") as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            write_wav(tmp, np.zeros((1, 8000 * (20 if content == "long" else 3)), np.float32), sample_rate=8000)
    job_id = await _queue_midi(sessions, arq_redis, MidiParams(prompt="upload.wav", upload="uploads/b2-upload.wav"))
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.FAILED and job.error_code is ErrorCode.INVALID_REQUEST
    assert phrase in (job.error or "") and job.artifacts == ()
    # The user sees this sentence: it names their file, never where or under what name the server keeps it.
    for internal in (str(settings.artifact_dir), settings.artifact_dir.name, "uploads", "b2-", "Error opening"):
        assert internal not in (job.error or ""), (internal, job.error)


async def test_takes_are_separate_files_with_their_own_seeds(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    job_id = await _queue(sessions, arq_redis, takes=2, duration_s=1.0)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.DONE, job.error
    first, second, cover = job.artifacts
    assert (first.kind, second.kind, cover.kind) == ("audio", "audio", "cover")
    assert first.meta is not None and second.meta is not None
    assert (first.meta["take"], first.meta["seed"]) == (1, 4) and second.meta["take"] == 2
    assert second.meta["seed"] != 4 and "take2" in second.path and f"seed{second.meta['seed']}" in second.path


async def test_a_beat_can_continue_a_finished_take(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    parent = await _finished_beat(settings, sessions, np.zeros((1, 16_000), np.float32) + 0.1)  # 0.5 s at 32 kHz
    async with sessions() as session:
        audio_path = (await jobs.get_job(session, parent)).artifacts[0].path
    job_id = await _queue(sessions, arq_redis, continue_from=audio_path, duration_s=1.0)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.DONE, job.error
    audio = job.artifacts[0]
    assert audio.meta is not None and audio.meta["continued_s"] == 0.5
    assert sf.info(ArtifactStore(settings.artifact_dir).resolve(audio.path)).frames == 48_000  # 0.5 s + 1 s


async def test_continuing_a_bad_file_fails_with_the_reason(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    store = ArtifactStore(settings.artifact_dir)
    with store.writing("uploads", "c3-clip.wav") as tmp:
        tmp.write_bytes(b"not audio")
    job_id = await _queue(sessions, arq_redis, continue_from="uploads/c3-clip.wav")
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    assert job.status is JobStatus.FAILED and "c3-clip.wav is not a readable audio file" in (job.error or "")


async def test_without_the_midi_model_midi_jobs_fail_with_the_reason_and_beats_still_run(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_basic_pitch(**_: Any) -> None:
        raise ModelUnavailable("MIDI transcription needs basic-pitch")

    monkeypatch.setattr("generation.worker.context.PitchTracker", no_basic_pitch)
    store = ArtifactStore(settings.artifact_dir)
    with store.writing("uploads", "d4-clip.wav") as tmp:
        write_wav(tmp, np.zeros((1, 8000), np.float32) + 0.1, sample_rate=8000)
    midi_id = await _queue_midi(sessions, arq_redis, MidiParams(prompt="clip.wav", upload="uploads/d4-clip.wav"))
    beat_id = await _queue(sessions, arq_redis)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        midi, beat = await jobs.get_job(session, midi_id), await jobs.get_job(session, beat_id)
    assert midi.status is JobStatus.FAILED and midi.error_code is ErrorCode.MODEL_UNAVAILABLE
    assert midi.error == "MIDI transcription needs basic-pitch" and midi.artifacts == ()
    assert beat.status is JobStatus.DONE, beat.error


async def test_a_remix_on_ace_step_keeps_the_takes_length_and_says_it_may_be_sold(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    parent = await _finished_beat(settings, sessions, np.zeros((1, 48_000), np.float32) + 0.1)  # 1.5 s at 32 kHz
    async with sessions() as session:
        audio_path = (await jobs.get_job(session, parent)).artifacts[0].path
    remix = {"remix_from": audio_path, "remix_strength": 0.6, "duration_s": 1.5, "key": "C minor", "bpm": 90}
    job_id = await _queue(sessions, arq_redis, model="debug-acestep", **remix)
    too_long = await _queue(sessions, arq_redis, duration_s=200)  # MusicGen, queued as if the bot had not checked
    cannot = await _queue(sessions, arq_redis, remix_from=audio_path, remix_strength=0.5)  # MusicGen cannot remix
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        job, long_job, musicgen_remix = [await jobs.get_job(session, i) for i in (job_id, too_long, cannot)]
    assert job.status is JobStatus.DONE, job.error
    assert job.resolved_model == "debug-acestep"
    audio = job.artifacts[0]
    assert audio.meta is not None and audio.meta["licence"] == "none needed (random weights built in code)"
    info = sf.info(ArtifactStore(settings.artifact_dir).resolve(audio.path))
    assert (info.samplerate, info.channels, info.frames) == (48_000, 2, 72_000)
    assert long_job.status is JobStatus.FAILED and "makes beats of up to 120 s" in (long_job.error or "")
    assert musicgen_remix.status is JobStatus.FAILED and "cannot remix audio" in (musicgen_remix.error or "")


async def test_a_beat_publishes_its_first_seconds_while_it_is_made(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    settings = settings.model_copy(update={"preview_s": 1.0})
    job_id = await _queue(sessions, arq_redis, duration_s=3.0)
    short = await _queue(sessions, arq_redis, duration_s=1.0)  # no longer than the preview: none
    await run_burst(settings, arq_redis)
    data = await arq_redis.get(PREVIEW_KEY.format(job_id=job_id))
    assert data is not None
    audio, rate = sf.read(io.BytesIO(data))
    assert rate == 32_000 and len(audio) == 32_000 and sf.info(io.BytesIO(data)).format == "OGG"
    progress = JobProgress.model_validate_json(await arq_redis.get(PROGRESS_KEY.format(job_id=job_id)))
    assert progress.preview and progress.done == progress.total
    assert await arq_redis.get(PREVIEW_KEY.format(job_id=short)) is None
    async with sessions() as session:
        assert (await jobs.get_job(session, job_id)).status is JobStatus.DONE
