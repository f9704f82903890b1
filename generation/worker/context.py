"""What a worker loads once at start-up and every job uses: one typed object instead of string keys in arq's ``ctx``.

arq hands each job a plain dict. The worker keeps a single :class:`WorkerContext` in it, under
:data:`CONTEXT_KEY`, and jobs reach it through :func:`worker_context`, so a missing or misspelt resource is a type
error, not a ``KeyError`` in the middle of a job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import JobKind
from beatforge.fleet import ModelInfo, publish_models
from beatforge.queue import served_kinds
from generation.cover.maker import CoverMaker
from generation.device import resolve_device
from generation.errors import ModelUnavailable
from generation.loops.export import warm_up as warm_up_analysis
from generation.midi.stems import DemucsSeparator, make_separator
from generation.midi.transcribe import PitchTracker
from generation.music.batcher import Batcher
from generation.music.model_cache import ModelCache
from generation.music.registry import load_registry
from generation.prompts.llm import ChatClient
from generation.worker.liveness import Liveness
from generation.worker.text_match import TextMatch
from migrations.runner import upgrade_locked
from storage.artifacts import ArtifactStore
from storage.backends import ArtifactBackend, open_backend
from storage.db import make_engine, make_sessionmaker
from storage.objects import S3Target, s3_target

log = logging.getLogger(__name__)

#: The one key of arq's ``ctx`` dict that is ours.
CONTEXT_KEY = "beatforge"


@dataclass(frozen=True)
class Unavailable:
    """A model that failed to load at start-up. The worker stays up and the jobs that need it fail with
    ``reason``: a crash-looping worker would leave every user's job hanging, beats included."""

    reason: str


@dataclass
class WorkerContext:
    """Everything a job may use, loaded before the first job runs (never on a job's hot path)."""

    settings: Settings
    redis: ArqRedis
    #: The database engine, kept to be disposed of at shutdown; jobs use ``sessions``.
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: The worker's own folder: every job writes its files here first (the working area).
    store: ArtifactStore
    #: Where finished files live for good (``BEATFORGE_ARTIFACT_BACKEND``): the folder itself, or a bucket that
    #: every job's files reach before it is recorded done (``generation/worker/run.py``).
    artifacts: ArtifactBackend
    models: ModelCache
    #: Puts beat jobs that arrive together into one generate call (one GPU, one generate at a time).
    batcher: Batcher
    covers: CoverMaker
    #: The optional LLM (✨ prompts, packs' prompts), the very client the covers use; None when not configured.
    llm: ChatClient | None
    #: The neural stem separator, or None for the offline split (not configured, or failed to load).
    separator: DemucsSeparator | None
    #: basic-pitch for MIDI jobs; :meth:`pitch_tracker` turns the unavailable case into the job's error.
    pitch: PitchTracker | Unavailable
    #: Where loops are uploaded, or None when S3 uploads are off.
    s3: S3Target | None
    #: Heartbeats for the jobs this worker runs, and the reconciler's regular pass.
    liveness: Liveness
    #: CLAP: each take's text-match score and best of N (loaded the first time a beat needs it; maybe none).
    text_match: TextMatch
    #: Jobs run side by side; the diffusion pipeline is not reentrant.
    cover_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def pitch_tracker(self) -> PitchTracker:
        """The MIDI model, or the reason it could not load as the job's error."""
        if isinstance(self.pitch, Unavailable):
            raise ModelUnavailable(self.pitch.reason)
        return self.pitch

    async def close(self) -> None:
        await self.liveness.stop()
        await self.db.dispose()


async def open_context(settings: Settings, redis: ArqRedis) -> WorkerContext:
    """Upgrade the schema, load every model the settings name and tell the bot which models this worker runs."""
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    db = make_engine(settings.database_url)
    try:
        return await _load(settings, redis, db)
    except BaseException:
        await db.dispose()
        raise


async def _load(settings: Settings, redis: ArqRedis, db: AsyncEngine) -> WorkerContext:
    store = ArtifactStore(settings.artifact_dir)
    artifacts = open_backend(settings, store)  # before the models: a bad bucket setting stops the worker at once
    sessions = make_sessionmaker(db)
    device = resolve_device(settings.device)
    registry = await load_registry(settings.model_registry_file, sessions)  # built-ins + file + database
    models = ModelCache.from_settings(settings, registry=registry)
    covers = CoverMaker(settings, device=device)
    await publish_models(
        redis,
        [
            ModelInfo(s.name, s.kind, s.licence, s.description, s.melody, s.stereo, s.base, s.engine)
            for s in registry.list()
        ],
        default=settings.default_model,
    )
    kinds = set(served_kinds(settings))  # a CPU worker loads no MusicGen and no cover model
    if kinds & {JobKind.BEAT, JobKind.PACK}:
        try:
            await asyncio.to_thread(models.get, None)
        except ModelUnavailable as exc:
            # Stay up and fail each job with the reason: a crash-looping worker leaves users' jobs hanging.
            log.error("default model unavailable", extra={"model": settings.default_model, "error": str(exc)})
    if kinds & {JobKind.BEAT, JobKind.COVER}:
        await asyncio.to_thread(covers.warm_up)
    if kinds & {JobKind.BEAT, JobKind.PACK, JobKind.LOOP}:
        await asyncio.to_thread(warm_up_analysis, learned_downbeats=settings.learned_downbeats)
    midi = JobKind.MIDI in kinds
    separator = await asyncio.to_thread(make_separator, settings.stems_model, device=device) if midi else None
    return WorkerContext(
        settings=settings,
        redis=redis,
        db=db,
        sessions=sessions,
        store=store,
        artifacts=artifacts,
        models=models,
        batcher=Batcher(wait_s=settings.batch_wait_s, max_rows=settings.max_batch_rows, fade_out_s=settings.fade_out_s),
        covers=covers,
        llm=covers.llm,
        separator=separator,
        pitch=await _load_pitch_tracker(settings) if midi else Unavailable("MIDI jobs run on the CPU workers"),
        s3=s3_target(settings),
        liveness=Liveness(settings, sessions, redis),
        text_match=TextMatch(settings.clap_model, device=device),
    )


async def _load_pitch_tracker(settings: Settings) -> PitchTracker | Unavailable:
    try:
        return await asyncio.to_thread(
            PitchTracker,
            onset_threshold=settings.midi_onset_threshold,
            frame_threshold=settings.midi_frame_threshold,
            min_note_ms=settings.midi_min_note_ms,
        )
    except ModelUnavailable as exc:  # MIDI jobs fail with this reason; beats keep working
        log.error("MIDI transcription unavailable", extra={"error": str(exc)})
        return Unavailable(str(exc))


def worker_context(ctx: Mapping[str, Any]) -> WorkerContext:
    """The context :func:`open_context` made at start-up, from the ``ctx`` arq passes to a job."""
    context = ctx.get(CONTEXT_KEY)
    if not isinstance(context, WorkerContext):
        raise RuntimeError("the worker's start-up has not run: no context in arq's ctx")
    return context
