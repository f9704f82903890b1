"""The arq worker: one generation at a time per GPU, models loaded at start-up, never on a job's hot path.

More GPUs means more worker processes on the same redis queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from arq import Worker, func
from arq.typing import WorkerCoroutine
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.bounds import DISCORD_UPLOAD_LIMIT
from beatforge.config import Settings
from beatforge.contract import (
    PROGRESS_KEY,
    PROGRESS_TTL_S,
    ArtifactKind,
    AudioMeta,
    BeatParams,
    CompactMeta,
    CoverMeta,
    CoverParams,
    ErrorCode,
    JobKind,
    JobParams,
    JobProgress,
    JobRequest,
    LoopJobParams,
    LoopMeta,
    LoopParams,
    MidiMeta,
    MidiParams,
    explain,
)
from beatforge.fleet import ModelInfo, publish_models, record_speed, speed_key
from beatforge.queue import SERIALIZERS, redis_settings
from generation.audio.formats import encode_compact
from generation.audio.io import read_audio, write_wav
from generation.audio.signal import Samples, resample
from generation.cover.maker import Cover, CoverMaker
from generation.device import resolve_device
from generation.errors import AudioParameterError, GenerationError, ModelUnavailable
from generation.loops.export import analyse, cut_loop, safe_stem
from generation.loops.export import warm_up as warm_up_analysis
from generation.midi.export import export_midi
from generation.midi.stems import make_separator
from generation.midi.transcribe import PitchTracker
from generation.music.batcher import Batcher
from generation.music.model_cache import ModelCache
from generation.music.registry import load_registry
from generation.worker.s3 import s3_target, upload_files
from migrations.runner import upgrade_locked
from storage import jobs
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.db import make_engine, make_sessionmaker
from storage.errors import StorageError
from storage.jobs import JobView

log = logging.getLogger(__name__)

#: Discord's default per-file upload cap: loops over it also get a smaller preview copy to post.
#: Seconds between progress writes to redis; the bot edits Discord messages at most this often anyway.
PROGRESS_EVERY_S = 0.5


class ProgressPublisher:
    """Bridges the generation thread's per-step callback to redis on the event loop, throttled."""

    def __init__(self, ctx: dict[str, Any], job_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self.redis, self.key, self.loop = ctx["redis"], PROGRESS_KEY.format(job_id=job_id), loop
        self.started = time.monotonic()
        self.last_sent = 0.0

    async def publish(self, progress: JobProgress) -> None:
        await self.redis.set(self.key, progress.model_dump_json(), ex=PROGRESS_TTL_S)

    def on_step(self, done: int, total: int) -> None:
        """Runs in the generation thread once per decoding step: must stay cheap."""
        now = time.monotonic()
        if now - self.last_sent < PROGRESS_EVERY_S and done < total:
            return
        self.last_sent = now
        elapsed = now - self.started
        eta = elapsed / done * (total - done) if done else None
        progress = JobProgress(stage="generating", done=done, total=total, eta_s=eta)
        asyncio.run_coroutine_threadsafe(self.publish(progress), self.loop)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    ctx["engine"] = make_engine(settings.database_url)
    ctx["sessions"] = make_sessionmaker(ctx["engine"])
    ctx["store"] = ArtifactStore(settings.artifact_dir)
    device = resolve_device(settings.device)
    registry = await load_registry(settings.model_registry_file, ctx["sessions"])  # built-ins + file + database
    ctx["models"] = cache = ModelCache.from_settings(settings, registry=registry)
    ctx["covers"] = covers = CoverMaker(settings, device=device)
    ctx["cover_lock"] = asyncio.Lock()  # jobs run side by side; the diffusion pipeline is not reentrant
    ctx["batcher"] = Batcher(
        wait_s=settings.batch_wait_s, max_rows=settings.max_batch_rows, fade_out_s=settings.fade_out_s
    )
    await publish_models(
        ctx["redis"],
        [ModelInfo(s.name, s.kind, s.licence, s.description, s.melody, s.stereo, s.base) for s in registry.list()],
        default=settings.default_model,
    )
    try:
        await asyncio.to_thread(cache.get, None)
    except ModelUnavailable as exc:
        # Stay up and fail each job with the reason: a crash-looping worker leaves users' jobs hanging.
        log.error("default model unavailable", extra={"model": settings.default_model, "error": str(exc)})
    await asyncio.to_thread(covers.warm_up)
    await asyncio.to_thread(warm_up_analysis)
    ctx["separator"] = await asyncio.to_thread(make_separator, settings.stems_model, device=device)
    try:
        ctx["pitch"] = await asyncio.to_thread(
            PitchTracker,
            onset_threshold=settings.midi_onset_threshold,
            frame_threshold=settings.midi_frame_threshold,
            min_note_ms=settings.midi_min_note_ms,
        )
    except ModelUnavailable as exc:  # MIDI jobs fail with this reason; beats keep working
        ctx["pitch"] = exc
        log.error("MIDI transcription unavailable", extra={"error": str(exc)})


async def shutdown(ctx: dict[str, Any]) -> None:
    if "engine" in ctx:
        await ctx["engine"].dispose()


async def _fail(sessions: async_sessionmaker[AsyncSession], job_id: int, code: ErrorCode, message: str) -> None:
    async with sessions() as session:
        await jobs.mark_failed(session, job_id, code=code, message=message)
    log.warning("job failed", extra={"job_id": job_id, "code": code.value, "reason": message})


#: The parameters of the kind a job body handles.
P = TypeVar("P", bound=JobParams)


@dataclass
class JobRun(Generic[P]):
    """What a job body gets: its request, a progress channel, a stop flag, and where to put files."""

    ctx: dict[str, Any]
    request: JobRequest[P]
    progress: ProgressPublisher
    stop: threading.Event
    artifacts: list[ArtifactRecord]
    #: What :meth:`mark_running` recorded as making the result (a beat's model: its speed is measured per model).
    resolved_model: str | None = None

    @property
    def params(self) -> P:
        return self.request.params

    async def parent_audio(self, purpose: str, take: int) -> tuple[JobView, Path]:
        """The beat this job works on and the audio file of the take asked for, or why there is none."""
        async with self.ctx["sessions"]() as session:
            job = await jobs.get_job(session, self.request.job_id)
            parent = await jobs.get_job(session, job.parent_id) if job.parent_id else None
        takes = [a for a in parent.artifacts if a.kind is ArtifactKind.AUDIO] if parent else []
        if parent is None or not takes:
            raise AudioParameterError(f"job #{self.request.job_id} has no finished beat to {purpose}")
        if take > len(takes):
            raise AudioParameterError(f"beat #{parent.id} has {len(takes)} take(s), not a take {take}")
        return parent, self.ctx["store"].resolve(takes[take - 1].path)

    async def mark_running(self, resolved_model: str) -> bool:
        self.resolved_model = resolved_model
        async with self.ctx["sessions"]() as session:
            return await jobs.mark_running(session, self.request.job_id, resolved_model=resolved_model)

    async def save_cover(self, cover: Cover, *, seed: int) -> None:
        store: ArtifactStore = self.ctx["store"]
        filename = f"cover-{self.request.job_id}-seed{seed}.png"
        with store.writing(self.request.job_id, filename) as tmp:
            await asyncio.to_thread(cover.image.save, tmp, format="PNG", optimize=True)
        meta = CoverMeta(
            source=cover.source,
            model=cover.model,
            note=cover.note,
            prompt=cover.prompt,
            prompt_source=cover.prompt_source,
        )
        record = store.record(self.request.job_id, filename, kind=ArtifactKind.COVER, meta=meta.model_dump(mode="json"))
        self.artifacts.append(record)

    async def draw_cover(self, p: BeatParams | CoverParams) -> None:
        """The cover of a beat, or a new one for it: drawn from its words, presets, title and seed."""
        covers: CoverMaker = self.ctx["covers"]
        if not covers.enabled:
            return
        await self.progress.publish(JobProgress(stage="drawing", done=0, total=1))
        async with self.ctx["cover_lock"]:
            cover = await asyncio.to_thread(
                covers.make,
                description=p.prompt,
                seed=p.seed,
                style=p.style,
                mood=p.mood,
                title=p.title,
                should_stop=self.stop.is_set,
            )
        await self.save_cover(cover, seed=p.seed)

    async def cut_loop(
        self, samples: Samples, sample_rate: int, *, beat: BeatParams, loop: LoopParams, model: str | None
    ) -> None:
        """Cut ``loop`` from a take of ``beat`` (the words, seed and model the loop's sidecar names)."""
        await self.progress.publish(JobProgress(stage="looping", done=0, total=1))
        store: ArtifactStore = self.ctx["store"]
        job_id = self.request.job_id
        files = await asyncio.to_thread(
            cut_loop,
            samples,
            sample_rate=sample_rate,
            params=beat,
            loop=loop,
            model=model,
            out_dir=store.resolve(str(job_id)),
            stem=f"loop-{job_id}-{safe_stem(beat.prompt, limit=24)}",
            preview_limit=DISCORD_UPLOAD_LIMIT,
        )
        paths = [files.audio] + ([files.metadata] if files.metadata else [])
        meta = LoopMeta.model_validate(files.info)
        target = s3_target(self.ctx["settings"])
        if target is not None:
            try:
                keys = await asyncio.to_thread(upload_files, target, paths, key_prefix=f"loops/{job_id}")
                meta = meta.model_copy(update={"s3_keys": keys})
            except StorageError as exc:  # the loop exists locally; say why it is not in the bucket
                meta = meta.model_copy(update={"s3_error": str(exc)})
        loop_record = store.record(job_id, files.audio.name, kind=ArtifactKind.LOOP, meta=meta.model_dump(mode="json"))
        self.artifacts.append(loop_record)
        if files.metadata is not None:
            self.artifacts.append(store.record(job_id, files.metadata.name, kind=ArtifactKind.METADATA))
        if files.preview is not None:
            self.artifacts.append(store.record(job_id, files.preview.name, kind=ArtifactKind.PREVIEW))


async def _run(
    ctx: dict[str, Any],
    payload: Any,
    body: Callable[[JobRun[P]], Awaitable[bool]],
    request_type: type[JobRequest[P]],
) -> None:
    """Validate the payload as ``request_type``, run ``body``, record the outcome on the job's row.

    Every failure lands on the row as data, never raised. Nothing is returned: the row is the outcome,
    and arq keeps no copy of it (``keep_result=0``).
    """
    sessions: async_sessionmaker[AsyncSession] = ctx["sessions"]
    try:
        request = request_type.model_validate(payload)
    except ValidationError as exc:
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        reason = explain(exc)
        if isinstance(job_id, int) and job_id > 0:
            await _fail(sessions, job_id, ErrorCode.INVALID_REQUEST, f"invalid job parameters ({reason})")
        else:
            log.error("unroutable job payload", extra={"reason": reason})
        return

    job_id = request.job_id
    run = JobRun(ctx, request, ProgressPublisher(ctx, job_id, asyncio.get_running_loop()), threading.Event(), [])
    started = time.monotonic()
    try:
        await run.progress.publish(JobProgress(stage="loading", done=0, total=1))
        if not await body(run):
            log.info("job already finished, skipping re-run", extra={"job_id": job_id})
            return
        await run.progress.publish(JobProgress(stage="saving", done=1, total=1))
        async with sessions() as session:
            recorded = await jobs.mark_done(session, job_id, artifacts=run.artifacts)
        if not recorded:
            log.info("job was cancelled while it ran; result dropped", extra={"job_id": job_id})
            return
    except asyncio.CancelledError:
        # Cancelled (❌, /admin cancel: the row is already failed and stays so) or a shutdown (deploy,
        # scale-down: arq re-queues the job, so the row goes back in line too; requeue only moves running rows).
        run.stop.set()  # the thread cannot be killed; it checks this flag between steps and frees the GPU
        async with sessions() as session:
            await asyncio.shield(jobs.requeue(session, job_id))
        raise
    except GenerationError as exc:
        await _fail(sessions, job_id, exc.code, str(exc))
        return
    except Exception as exc:  # the job row must never stay "running" forever, whatever broke
        log.exception("job crashed", extra={"job_id": job_id})
        await _fail(sessions, job_id, ErrorCode.INTERNAL, f"internal error ({type(exc).__name__})")
        return
    log.info("job done", extra={"job_id": job_id, "artifacts": [a.path for a in run.artifacts]})
    await _record_speed(ctx, run, seconds=time.monotonic() - started)


async def _record_speed(ctx: dict[str, Any], run: JobRun[P], *, seconds: float) -> None:
    """Tell the bot how fast this worker is (``/queue`` estimates waits from it): audio seconds per second for
    a beat, per model; jobs per second for the other kinds."""
    takes = sum(1 for a in run.artifacts if a.kind is ArtifactKind.AUDIO)
    if isinstance(run.params, BeatParams) and takes:
        key, work = speed_key(JobKind.BEAT, run.resolved_model), run.params.duration_s * takes
    else:
        key, work = speed_key(run.params.kind, None), 1.0
    try:
        await record_speed(ctx["redis"], key, work=work, seconds=max(seconds, 1e-3))
    except (RedisError, OSError) as exc:  # the job is done; only the estimate misses a sample
        log.warning("could not record speed", extra={"job_id": run.request.job_id, "error": repr(exc)})


async def _input_audio(run: JobRun[BeatParams], source: str | None, sample_rate: int) -> Samples | None:
    """Audio a job uses (a take to continue, an upload to continue or follow), at the model's sample rate."""
    if source is None:
        return None
    settings: Settings = run.ctx["settings"]
    path = run.ctx["store"].resolve(source)
    samples, rate = await asyncio.to_thread(read_audio, path, max_seconds=settings.continue_max_input_s)
    if rate != sample_rate:
        samples = await asyncio.to_thread(resample, samples, rate, sample_rate)
    return samples


async def _beat(run: JobRun[BeatParams]) -> bool:
    engine = await asyncio.to_thread(run.ctx["models"].get, run.params.model)
    prompt = await _input_audio(run, run.params.continue_from, engine.sample_rate)
    melody = await _input_audio(run, run.params.melody, engine.sample_rate)
    if not await run.mark_running(engine.name):
        return False
    batcher: Batcher = run.ctx["batcher"]
    takes = await batcher.generate(
        engine,
        engine.items_for(run.params, prompt=prompt, melody=melody),
        sampling=run.params.sampling,
        on_progress=run.progress.on_step,
        should_stop=run.stop.is_set,
    )
    bpm_hint = float(run.params.bpm) if run.params.bpm else None
    store: ArtifactStore = run.ctx["store"]
    job_id = run.request.job_id
    records: list[ArtifactRecord] = []
    licence = run.ctx["models"].registry.get(engine.name).licence  # the provenance line on the result
    for number, audio in enumerate(takes, start=1):
        analysis = await asyncio.to_thread(analyse, audio.samples, sample_rate=audio.sample_rate, bpm_hint=bpm_hint)
        tag = f"-{analysis.tag()}" if analysis.tag() else ""
        take = f"-take{number}" if len(takes) > 1 else ""
        filename = f"beatforge-{job_id}{take}{tag}-seed{audio.seed}.wav"
        with store.writing(job_id, filename) as tmp:
            await asyncio.to_thread(write_wav, tmp, audio.samples, sample_rate=audio.sample_rate)
        loop_error = None
        if number == 1 and run.params.loop is not None:
            try:
                await run.cut_loop(
                    audio.samples, audio.sample_rate, beat=run.params, loop=run.params.loop, model=engine.name
                )
            except AudioParameterError as exc:  # the beat itself is fine: deliver it and say why there is no loop
                loop_error = str(exc)
        compact, compact_error = await _compact_take(
            run, filename, audio.samples, audio.sample_rate, take=number, seed=audio.seed
        )
        meta = AudioMeta(
            take=number,
            seed=audio.seed,
            licence=licence,
            sample_rate=audio.sample_rate,
            channels=int(audio.samples.shape[0]),
            continued_s=round(prompt.shape[-1] / engine.sample_rate, 2) if prompt is not None else None,
            loop_error=loop_error,
            compact_error=compact_error,
            **analysis.to_metadata(),
        )
        records.append(store.record(job_id, filename, kind=ArtifactKind.AUDIO, meta=meta.model_dump(mode="json")))
        if compact is not None:
            records.append(compact)
    run.artifacts[:0] = records
    await run.draw_cover(run.params)
    return True


async def _compact_take(
    run: JobRun[BeatParams], wav_name: str, samples: Samples, sample_rate: int, *, take: int, seed: int
) -> tuple[ArtifactRecord | None, str | None]:
    """An MP3 copy of a take whose WAV is over Discord's default upload limit (a 120 s stereo WAV is ~15 MiB),
    so the bot can attach something playable and link the full WAV; (None, None) when the WAV fits.

    A failed encode never fails the beat: the WAV is delivered as a link or a "too large" note, and the
    second value says why there is no copy (the take's ``compact_error``).
    """
    store: ArtifactStore = run.ctx["store"]
    job_id = run.request.job_id
    if store.resolve(f"{job_id}/{wav_name}").stat().st_size <= DISCORD_UPLOAD_LIMIT:
        return None, None
    try:
        data, fmt, kbps = await asyncio.to_thread(
            encode_compact, samples, sample_rate=sample_rate, limit_bytes=DISCORD_UPLOAD_LIMIT
        )
    except GenerationError as exc:
        log.warning("no compact copy of a large take", extra={"job_id": job_id, "take": take, "error": str(exc)})
        return None, str(exc)
    name = f"{Path(wav_name).stem}.{fmt}"
    with store.writing(job_id, name) as tmp:
        await asyncio.to_thread(tmp.write_bytes, data)
    meta = CompactMeta(take=take, format=fmt, bitrate_kbps=kbps, of=wav_name, seed=seed)
    return store.record(job_id, name, kind=ArtifactKind.AUDIO_COMPACT, meta=meta.model_dump(mode="json")), None


async def _loop(run: JobRun[LoopJobParams]) -> bool:
    """Cut a loop from a take of the job's parent beat (the Loop button)."""
    parent, audio_path = await run.parent_audio("loop", run.params.take)
    if not isinstance(parent.params, BeatParams):
        raise AudioParameterError(f"job #{run.request.job_id} has no finished beat to loop")
    if not await run.mark_running(parent.model_name or "loop"):
        return False
    samples, sample_rate = await asyncio.to_thread(read_audio, audio_path)
    await run.cut_loop(samples, sample_rate, beat=parent.params, loop=run.params.loop, model=parent.model_name)
    return True


async def _midi(run: JobRun[MidiParams]) -> bool:
    """MIDI files (and stems) from a take of the parent beat or from an uploaded file."""
    settings: Settings = run.ctx["settings"]
    store: ArtifactStore = run.ctx["store"]
    job_id = run.request.job_id
    midi = run.params
    pitch = run.ctx["pitch"]
    if isinstance(pitch, ModelUnavailable):
        raise pitch
    if midi.upload is not None:
        source_path, source = store.resolve(midi.upload), midi.prompt
    else:
        parent, source_path = await run.parent_audio("transcribe", midi.take)
        source = f"beat #{parent.id}"
    if not await run.mark_running("basic-pitch"):
        return False
    await run.progress.publish(JobProgress(stage="transcribing", done=0, total=1))
    samples, sample_rate = await asyncio.to_thread(read_audio, source_path, max_seconds=settings.midi_max_input_s)
    files = await asyncio.to_thread(
        export_midi,
        samples,
        sample_rate=sample_rate,
        tracker=pitch,
        separator=run.ctx["separator"],
        out_dir=store.resolve(str(job_id)),
        stem=f"beatforge-{job_id}",
        source=source,
        with_stems=midi.stems,
        preview_limit=DISCORD_UPLOAD_LIMIT,
    )
    meta = MidiMeta.model_validate(files.info)
    run.artifacts.append(
        store.record(job_id, files.pack.name, kind=ArtifactKind.MIDI, meta=meta.model_dump(mode="json"))
    )
    if files.stems is not None:
        run.artifacts.append(store.record(job_id, files.stems.name, kind=ArtifactKind.STEMS))
    if files.stems_preview is not None:
        run.artifacts.append(store.record(job_id, files.stems_preview.name, kind=ArtifactKind.STEMS_PREVIEW))
    return True


async def _cover(run: JobRun[CoverParams]) -> bool:
    settings: Settings = run.ctx["settings"]
    label = settings.cover_model if settings.cover_mode == "diffusion" else "procedural"
    if not await run.mark_running(label):
        return False
    await run.draw_cover(run.params)
    return True


async def generate_beat(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Generate one beat and its cover."""
    await _run(ctx, payload, _beat, JobRequest[BeatParams])


async def cut_loop_job(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Cut a seamless loop from an existing beat."""
    await _run(ctx, payload, _loop, JobRequest[LoopJobParams])


async def transcribe_midi(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """MIDI files (drums, bass, melody, full) and optionally stems from a beat or an uploaded file."""
    await _run(ctx, payload, _midi, JobRequest[MidiParams])


async def draw_cover(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Draw a new cover for an existing beat (the payload carries its description, style, mood and a new seed)."""
    await _run(ctx, payload, _cover, JobRequest[CoverParams])


#: The function that runs each kind, registered under the contract's name for it (``JobKind.function``).
JOBS: dict[JobKind, WorkerCoroutine] = {
    JobKind.BEAT: generate_beat,
    JobKind.COVER: draw_cover,
    JobKind.LOOP: cut_loop_job,
    JobKind.MIDI: transcribe_midi,
}


def worker_settings(settings: Settings) -> dict[str, Any]:
    """arq settings sized for one GPU: one job at a time, few retries, frequent health checks."""
    return {
        # the bot enqueues by these names
        "functions": [func(job, name=kind.function) for kind, job in JOBS.items()],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        # several beat jobs at once, so the batcher can put them in one generate call (one GPU, one generate
        # at a time: the batcher's lock); covers, loops and MIDI run beside them
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.job_timeout_s,
        "max_tries": 2,
        "job_completion_wait": 90,  # on SIGTERM, let the running beat finish (compose: stop_grace_period)
        "poll_delay": settings.worker_poll_delay_s,
        "allow_abort_jobs": True,
        "health_check_interval": 30,
        "keep_result": 0,  # jobs return nothing: a job's outcome is its row, which the bot reads
        **SERIALIZERS,
    }


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    return Worker(**{**worker_settings(settings), **overrides})
