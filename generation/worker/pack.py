"""Pack jobs (/pack): ``count`` loops for a use case, each from its own written prompt, in one zip.

This is ``beatforge auto`` in Discord. The prompts come from the LLM or the templates (``plan_prompts``),
every one at the pack's tempo; the loops are generated together (one batched call: on a GPU eight loops
cost little more than one) and cut one by one, each with its JSON sidecar. A loop that cannot be cut (no
steady beat in what the model made) is left out and named in the zip's README; only a pack with no loop
at all fails.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from beatforge.bounds import DISCORD_UPLOAD_LIMIT
from beatforge.contract import ArtifactKind, JobProgress, JobRequest, PackMeta, PackParams
from generation.audio.formats import AudioTooLarge, encode_compact
from generation.errors import AudioParameterError, GenerationCancelled
from generation.loops.export import LoopFiles, cut_loop, safe_stem
from generation.music.engine import GeneratedAudio, items_for
from generation.prompts.auto import PromptPlan, plan_prompts
from generation.worker.run import JobRun, run_job


async def make_pack(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Write prompts for a use case, generate a loop from each, and zip them with their metadata."""
    await run_job(ctx, payload, _pack, JobRequest[PackParams])


async def _pack(run: JobRun[PackParams]) -> bool:
    p, models = run.params, run.context.models
    engine = await asyncio.to_thread(models.get, p.model)
    if not await run.mark_running(engine.name):
        return False
    await run.progress.publish(JobProgress(stage="prompting", done=0, total=1))
    plan = await asyncio.to_thread(
        plan_prompts, use_case=p.prompt, count=p.count, client=run.context.llm, seed=p.seed, bpm=p.bpm, key=p.key
    )
    beats = [p.beat(i, prompt) for i, prompt in enumerate(plan.prompts)]
    takes = await run.context.batcher.generate(
        engine,
        [item for beat in beats for item in items_for(beat)],
        sampling=beats[0].sampling,
        on_progress=run.progress.on_step,
        should_stop=run.stop.is_set,
    )
    licence = models.registry.get(engine.name).licence
    with tempfile.TemporaryDirectory(prefix=f"beatforge-pack-{run.job_id}-") as scratch:
        loops, failed = await _cut_all(run, takes, plan, engine.name, Path(scratch))
        if not loops:
            raise AudioParameterError(f"none of the {p.count} loops could be cut; {failed[0]}")
        name = f"pack-{run.job_id}-{safe_stem(p.prompt, limit=32)}-{p.bpm}bpm.zip"
        readme = _readme(p, plan, loops, failed, model=engine.name, licence=licence)
        with run.context.store.writing(run.job_id, name) as tmp:
            await asyncio.to_thread(_write_zip, tmp, loops, readme)
        preview = await _mp3_copy(run, name, loops, readme)
    meta = PackMeta(
        loops=len(loops),
        asked=p.count,
        bpm=p.bpm,
        key=p.key,
        prompt_source=plan.source,
        prompt_note=plan.note,
        licence=licence,
        failed=failed,
    )
    run.artifacts.append(
        run.context.store.record(run.job_id, name, kind=ArtifactKind.PACK, meta=meta.model_dump(mode="json"))
    )
    if preview is not None:
        run.artifacts.append(run.context.store.record(run.job_id, preview, kind=ArtifactKind.PACK_PREVIEW))
    return True


async def _mp3_copy(run: JobRun[PackParams], name: str, loops: list[tuple[str, LoopFiles]], readme: str) -> str | None:
    """The pack with MP3 loops, each at the best bitrate that lets the zip fit Discord's default upload limit,
    when the zip itself is over it: the bot attaches this and links the full zip when links are on. None when
    the zip fits, or when not even the lowest bitrate would (the link alone carries it then)."""
    store, job_id = run.context.store, run.job_id
    if store.resolve(f"{job_id}/{name}").stat().st_size <= DISCORD_UPLOAD_LIMIT:
        return None
    copy = name.removesuffix(".zip") + "-mp3.zip"
    try:
        with store.writing(job_id, copy) as tmp:
            await asyncio.to_thread(_write_mp3_zip, tmp, loops, readme)
    except AudioTooLarge:
        return None
    return copy


async def _cut_all(
    run: JobRun[PackParams], takes: list[GeneratedAudio], plan: PromptPlan, model: str, out_dir: Path
) -> tuple[list[tuple[str, LoopFiles]], list[str]]:
    """Each loop cut from its take, with the time left from the loops cut so far; (prompt, files) and failures."""
    p, loops, failed = run.params, list[tuple[str, LoopFiles]](), list[str]()
    started = time.monotonic()
    for i, (prompt, audio) in enumerate(zip(plan.prompts, takes, strict=True)):
        if run.stop.is_set():
            raise GenerationCancelled(f"the pack was cancelled after {i} of {p.count} loops were cut")
        eta = (time.monotonic() - started) / i * (p.count - i) if i else None
        await run.progress.publish(JobProgress(stage="packing", done=i, total=p.count, eta_s=eta))
        beat = p.beat(i, prompt)
        assert beat.loop is not None  # PackParams.beat always sets it
        try:
            files = await asyncio.to_thread(
                cut_loop,
                audio.samples,
                sample_rate=audio.sample_rate,
                params=beat,
                loop=beat.loop,
                model=model,
                out_dir=out_dir,
                stem=f"{i + 1:02d}-{safe_stem(prompt, limit=32)}",
            )
        except AudioParameterError as exc:
            failed.append(f"loop {i + 1}: {exc}")
            continue
        loops.append((prompt, files))
    return loops, failed


def _readme(
    p: PackParams,
    plan: PromptPlan,
    loops: list[tuple[str, LoopFiles]],
    failed: list[str],
    *,
    model: str,
    licence: str,
) -> str:
    """What a producer opening the zip needs: what it is for, tempo, who wrote the prompts, the licence."""
    key = f", {p.key}" if p.key else ""
    lines = [
        f"beatforge pack: {len(loops)} loops for “{p.prompt}” at {p.bpm} bpm{key}",
        f"Model: {model} (weights licence: {licence}). Seeds {p.seed}-{p.seed + p.count - 1}, one per loop in order.",
        "Prompts written by " + ("the LLM." if plan.source == "llm" else f"built-in templates: {plan.note}."),
        "Each loop's .json beside it has its bars, tempo, key, seam score and prompt.",
        "",
    ]
    lines += [f"{files.audio.name}: {prompt}" for prompt, files in loops]
    if failed:
        lines += ["", "Left out (no loop could be cut from what the model made):", *failed]
    return "\n".join(lines) + "\n"


def _write_mp3_zip(path: Path, loops: list[tuple[str, LoopFiles]], readme: str) -> None:
    """The pack's loops as MP3s sharing the upload limit (with room for the sidecars and the zip's headers),
    beside the same sidecars and README.

    Raises:
        AudioTooLarge: a loop does not fit its share even at the lowest bitrate.
    """
    share = int(DISCORD_UPLOAD_LIMIT * 0.9) // len(loops)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.txt", readme, compress_type=zipfile.ZIP_DEFLATED)
        for _, files in loops:
            samples = np.atleast_2d(files.result.samples)
            data, _, _ = encode_compact(samples, sample_rate=files.result.sample_rate, limit_bytes=share)
            zf.writestr(files.audio.with_suffix(".mp3").name, data)
            if files.metadata is not None:
                zf.write(files.metadata, files.metadata.name, compress_type=zipfile.ZIP_DEFLATED)


def _write_zip(path: Path, loops: list[tuple[str, LoopFiles]], readme: str) -> None:
    """Audio stored as is (already compressed, or WAV that deflate barely shrinks); text deflated."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.txt", readme, compress_type=zipfile.ZIP_DEFLATED)
        for _, files in loops:
            zf.write(files.audio, files.audio.name, compress_type=zipfile.ZIP_STORED)
            if files.metadata is not None:
                zf.write(files.metadata, files.metadata.name, compress_type=zipfile.ZIP_DEFLATED)
