"""Beat jobs: one generate call for every take (batched with other jobs' beats), a WAV per take, its MP3 copy
when the WAV is too big to post, the loop the beat asks for, then the cover."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beatforge.bounds import DISCORD_UPLOAD_LIMIT
from beatforge.contract import ArtifactKind, AudioMeta, BeatParams, CompactMeta, JobProgress, JobRequest
from beatforge.engines import refusal
from generation.audio.formats import encode_compact
from generation.audio.io import read_audio, write_wav
from generation.audio.signal import Samples, resample
from generation.errors import AudioParameterError, GenerationError
from generation.loops.export import analyse
from generation.music.engine import Preview, items_for
from generation.prompts.enhance import EnhancedPrompt, enhance_prompt
from generation.worker.cover import add_cover
from generation.worker.loop import add_loop
from generation.worker.run import JobRun, run_job
from generation.worker.text_match import ScoredTake, refuse_best_of, scored_takes
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.backends import ArtifactUnavailable

log = logging.getLogger(__name__)


async def generate_beat(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Generate one beat and its cover."""
    await run_job(ctx, payload, _beat, JobRequest[BeatParams])


async def _beat(run: JobRun[BeatParams]) -> bool:
    models = run.context.models
    engine = await asyncio.to_thread(models.get, run.params.model)
    spec = models.registry.get(engine.name)
    # the bot refused these before queueing when it knew the model; a job queued before a model switch gets here
    reason = refusal(
        spec.engine, model=engine.name, duration_s=run.params.duration_s, remix=run.params.remix_from is not None
    )
    if reason is not None:
        raise GenerationError(reason)
    refuse_best_of(run.params.best_of, run.context.text_match)  # the bot refused it first, with its own settings
    prompt = await _input_audio(run, run.params.continue_from, engine.sample_rate)
    melody = await _input_audio(run, run.params.melody, engine.sample_rate)
    remix = await _input_audio(run, run.params.remix_from, engine.sample_rate)
    if not await run.mark_running(engine.name):
        return False
    enhanced = None
    if run.params.enhance:
        await run.progress.publish(JobProgress(stage="prompting", done=0, total=1))
        enhanced = await asyncio.to_thread(enhance_prompt, run.params, client=run.context.llm)
    # Best of N: no preview, which would show the start of takes that may not be kept.
    preview_s = run.context.settings.preview_s if run.params.best_of is None else 0
    made = await run.context.batcher.generate(
        engine,
        items_for(run.params, prompt=prompt, melody=melody, remix=remix, text=enhanced.text if enhanced else None),
        sampling=run.params.sampling,
        on_progress=run.progress.on_step,
        should_stop=run.stop.is_set,
        preview=Preview(preview_s, run.progress.on_preview) if preview_s else None,
    )
    takes = await scored_takes(
        run.context.text_match, run.params.music_text, made, keep=run.params.takes, best_of=run.params.best_of
    )
    take = _Take(
        model=engine.name,
        licence=spec.licence,  # the provenance line on the result
        continued_s=round(prompt.shape[-1] / engine.sample_rate, 2) if prompt is not None else None,
        of=len(takes),
        enhanced=enhanced,
        best_of=run.params.best_of,
    )
    records: list[ArtifactRecord] = []
    for number, scored in enumerate(takes, start=1):
        records += await _save_take(run, take, scored, number=number)
    run.artifacts[:0] = records  # the takes first, before the loop the first take made
    await add_cover(run, run.params)
    return True


async def _input_audio(run: JobRun[BeatParams], source: str | None, sample_rate: int) -> Samples | None:
    """Audio a job uses (a take to continue or remix, an upload to continue or follow), at the model's sample rate.

    With s3 the file may have been sent to the bot or made on another worker: it is fetched (checked against what
    the bucket stored) into this worker's folder first; with local storage it is simply there.
    """
    if source is None:
        return None
    try:
        path = await run.context.artifacts.fetch_path(source)
    except ArtifactUnavailable as exc:  # first line for the user, the rest (the object and why) for the row
        raise GenerationError(f"the audio to start from could not be fetched from storage\n{exc}") from exc
    samples, rate = await asyncio.to_thread(read_audio, path, max_seconds=run.context.settings.continue_max_input_s)
    if rate != sample_rate:
        samples = await asyncio.to_thread(resample, samples, rate, sample_rate)
    return samples


@dataclass(frozen=True)
class _Take:
    """What every take of one beat shares."""

    model: str
    licence: str
    #: Seconds of audio the beat continues (each take starts with them), or None.
    continued_s: float | None
    #: How many takes the beat has.
    of: int
    #: The ✨ prompt every take was made from, or None (the user's own words).
    enhanced: EnhancedPrompt | None
    #: Best of N: how many takes were made, of which these are the best (None: every take made is delivered).
    best_of: int | None = None


async def _save_take(run: JobRun[BeatParams], take: _Take, scored: ScoredTake, *, number: int) -> list[ArtifactRecord]:
    """Write take ``number`` (and its compact copy); the first take also gets the loop the beat asks for."""
    audio = scored.audio
    params, store, job_id = run.params, run.context.store, run.job_id
    bpm_hint = float(params.bpm) if params.bpm else None
    analysis = await asyncio.to_thread(analyse, audio.samples, sample_rate=audio.sample_rate, bpm_hint=bpm_hint)
    tag = f"-{analysis.tag()}" if analysis.tag() else ""
    numbered = f"-take{number}" if take.of > 1 else ""
    filename = f"beatforge-{job_id}{numbered}{tag}-seed{audio.seed}.wav"
    with store.writing(job_id, filename) as tmp:
        await asyncio.to_thread(write_wav, tmp, audio.samples, sample_rate=audio.sample_rate)
    loop_error = None
    if number == 1 and params.loop is not None:
        try:
            await add_loop(run, audio.samples, audio.sample_rate, beat=params, loop=params.loop, model=take.model)
        except AudioParameterError as exc:  # the beat itself is fine: deliver it and say why there is no loop
            loop_error = str(exc)
    compact, compact_error = await compact_take(
        store, job_id, filename, audio.samples, audio.sample_rate, take=number, seed=audio.seed
    )
    meta = AudioMeta(
        take=number,
        seed=audio.seed,
        licence=take.licence,
        sample_rate=audio.sample_rate,
        channels=int(audio.samples.shape[0]),
        continued_s=take.continued_s,
        loop_error=loop_error,
        compact_error=compact_error,
        prompt_used=take.enhanced.text if take.enhanced else None,
        prompt_source=take.enhanced.source if take.enhanced else None,
        prompt_note=take.enhanced.note if take.enhanced else None,
        text_match=scored.text_match,
        best_of=take.best_of,
        **analysis.to_metadata(),
    )
    record = store.record(job_id, filename, kind=ArtifactKind.AUDIO, meta=meta.model_dump(mode="json"))
    return [record] if compact is None else [record, compact]


async def compact_take(
    store: ArtifactStore, job_id: int, wav_name: str, samples: Samples, sample_rate: int, *, take: int, seed: int
) -> tuple[ArtifactRecord | None, str | None]:
    """An MP3 copy of a take whose WAV is over Discord's default upload limit (a 120 s stereo WAV is ~15 MiB),
    so the bot can attach something playable and link the full WAV; (None, None) when the WAV fits.

    A failed encode never fails the beat: the WAV is delivered as a link or a "too large" note, and the
    second value says why there is no copy (the take's ``compact_error``).
    """
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
