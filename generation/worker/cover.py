"""Cover jobs (a new cover for a finished beat), and the cover every beat gets when its audio is done."""

from __future__ import annotations

import asyncio
from typing import Any

from beatforge.contract import ArtifactKind, BeatParams, CoverMeta, CoverParams, JobProgress, JobRequest
from generation.worker.run import JobRun, run_job


async def draw_cover(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Draw a new cover for an existing beat (the payload carries its description, style, mood and a new seed)."""
    await run_job(ctx, payload, _cover, JobRequest[CoverParams])


async def _cover(run: JobRun[CoverParams]) -> bool:
    settings = run.context.settings
    label = settings.cover_model if settings.cover_mode == "diffusion" else "procedural"
    if not await run.mark_running(label):
        return False
    await add_cover(run, run.params)
    return True


async def add_cover(run: JobRun[Any], p: BeatParams | CoverParams) -> None:
    """The cover of a beat, or a new one for it: drawn from its words, presets, title and seed."""
    covers = run.context.covers
    if not covers.enabled:
        return
    await run.progress.publish(JobProgress(stage="drawing", done=0, total=1))
    async with run.context.cover_lock:
        cover = await asyncio.to_thread(
            covers.make,
            description=p.prompt,
            seed=p.seed,
            style=p.style,
            mood=p.mood,
            title=p.title,
            should_stop=run.stop.is_set,
        )
    store, job_id = run.context.store, run.job_id
    filename = f"cover-{job_id}-seed{p.seed}.png"
    with store.writing(job_id, filename) as tmp:
        await asyncio.to_thread(cover.image.save, tmp, format="PNG", optimize=True)
    meta = CoverMeta(
        source=cover.source,
        model=cover.model,
        note=cover.note,
        prompt=cover.prompt,
        prompt_source=cover.prompt_source,
    )
    run.artifacts.append(store.record(job_id, filename, kind=ArtifactKind.COVER, meta=meta.model_dump(mode="json")))
