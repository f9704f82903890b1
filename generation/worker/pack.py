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

from beatforge.contract import ArtifactKind, JobProgress, JobRequest, PackMeta, PackParams
from generation.errors import AudioParameterError, GenerationCancelled
from generation.loops.export import LoopFiles, cut_loop, safe_stem
from generation.music.engine import GeneratedAudio
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
        [item for beat in beats for item in engine.items_for(beat)],
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
    return True


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


def _write_zip(path: Path, loops: list[tuple[str, LoopFiles]], readme: str) -> None:
    """Audio stored as is (already compressed, or WAV that deflate barely shrinks); text deflated."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.txt", readme, compress_type=zipfile.ZIP_DEFLATED)
        for _, files in loops:
            zf.write(files.audio, files.audio.name, compress_type=zipfile.ZIP_STORED)
            if files.metadata is not None:
                zf.write(files.metadata, files.metadata.name, compress_type=zipfile.ZIP_DEFLATED)
