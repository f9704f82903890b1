"""Loop jobs (the Loop button: a loop cut from a take of a finished beat), and the loop a beat asks for."""

from __future__ import annotations

import asyncio
from typing import Any

from beatforge.bounds import DISCORD_UPLOAD_LIMIT
from beatforge.contract import (
    ArtifactKind,
    BeatParams,
    JobProgress,
    JobRequest,
    LoopJobParams,
    LoopMeta,
    LoopParams,
)
from generation.audio.io import read_audio
from generation.audio.signal import Samples
from generation.errors import AudioParameterError
from generation.loops.export import cut_loop, safe_stem
from generation.worker.run import JobRun, run_job
from storage.errors import StorageError
from storage.objects import upload_files


async def cut_loop_job(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Cut a seamless loop from an existing beat."""
    await run_job(ctx, payload, _loop, JobRequest[LoopJobParams])


async def _loop(run: JobRun[LoopJobParams]) -> bool:
    parent, audio_path = await run.parent_audio("loop", run.params.take)
    if not isinstance(parent.params, BeatParams):
        raise AudioParameterError(f"job #{run.job_id} has no finished beat to loop")
    if not await run.mark_running(parent.model_name or "loop"):
        return False
    samples, sample_rate = await asyncio.to_thread(read_audio, audio_path, name=f"beat #{parent.id}")
    await add_loop(run, samples, sample_rate, beat=parent.params, loop=run.params.loop, model=parent.model_name)
    return True


async def add_loop(
    run: JobRun[Any], samples: Samples, sample_rate: int, *, beat: BeatParams, loop: LoopParams, model: str | None
) -> None:
    """Cut ``loop`` from a take of ``beat`` (the words, seed and model the loop's sidecar names), upload it
    when a bucket is configured, and add its files to the run."""
    await run.progress.publish(JobProgress(stage="looping", done=0, total=1))
    store, job_id = run.context.store, run.job_id
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
    target = run.context.s3
    if target is not None:
        try:
            keys = await asyncio.to_thread(upload_files, target, paths, key_prefix=f"loops/{job_id}")
            meta = meta.model_copy(update={"s3_keys": keys})
        except StorageError as exc:  # the loop exists locally; say why it is not in the bucket
            meta = meta.model_copy(update={"s3_error": str(exc)})
    run.artifacts.append(
        store.record(job_id, files.audio.name, kind=ArtifactKind.LOOP, meta=meta.model_dump(mode="json"))
    )
    if files.metadata is not None:
        run.artifacts.append(store.record(job_id, files.metadata.name, kind=ArtifactKind.METADATA))
    if files.preview is not None:
        run.artifacts.append(store.record(job_id, files.preview.name, kind=ArtifactKind.PREVIEW))
