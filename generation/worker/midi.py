"""MIDI jobs: MIDI files (and stems) from a take of a finished beat or from an uploaded file."""

from __future__ import annotations

import asyncio
from typing import Any

from beatforge.bounds import DISCORD_UPLOAD_LIMIT
from beatforge.contract import ArtifactKind, JobProgress, JobRequest, MidiMeta, MidiParams
from generation.audio.io import read_audio
from generation.errors import GenerationError
from generation.midi.export import export_midi
from generation.worker.run import JobRun, run_job
from storage.backends import ArtifactUnavailable


async def transcribe_midi(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """MIDI files (drums, bass, melody, full) and optionally stems from a beat or an uploaded file."""
    await run_job(ctx, payload, _midi, JobRequest[MidiParams])


async def _midi(run: JobRun[MidiParams]) -> bool:
    context, job_id, midi = run.context, run.job_id, run.params
    tracker = context.pitch_tracker()  # before anything else: without the model there is nothing to do
    if midi.upload is not None:
        source = midi.prompt
        try:  # s3: the bot sent it to the bucket, maybe from another machine
            source_path = await context.artifacts.fetch_path(midi.upload)
        except ArtifactUnavailable as exc:  # first line for the user, the rest (the object and why) for the row
            raise GenerationError(f"the uploaded file could not be fetched from storage\n{exc}") from exc
    else:
        parent, source_path = await run.parent_audio("transcribe", midi.take)
        source = f"beat #{parent.id}"
    if not await run.mark_running("basic-pitch"):
        return False
    await run.progress.publish(JobProgress(stage="transcribing", done=0, total=1))
    # Named as the user knows it (the upload's own name, "beat #N"): the stored file's name is the server's.
    samples, sample_rate = await asyncio.to_thread(
        read_audio, source_path, max_seconds=context.settings.midi_max_input_s, name=source
    )
    files = await asyncio.to_thread(
        export_midi,
        samples,
        sample_rate=sample_rate,
        tracker=tracker,
        separator=context.separator,
        out_dir=context.store.resolve(str(job_id)),
        stem=f"beatforge-{job_id}",
        source=source,
        with_stems=midi.stems,
        preview_limit=DISCORD_UPLOAD_LIMIT,
    )
    meta = MidiMeta.model_validate(files.info)
    store = context.store
    run.artifacts.append(
        store.record(job_id, files.pack.name, kind=ArtifactKind.MIDI, meta=meta.model_dump(mode="json"))
    )
    if files.stems is not None:
        run.artifacts.append(store.record(job_id, files.stems.name, kind=ArtifactKind.STEMS))
    if files.stems_preview is not None:
        run.artifacts.append(store.record(job_id, files.stems_preview.name, kind=ArtifactKind.STEMS_PREVIEW))
    return True
