"""Every sentence the bot shows about a job, as pure functions (easy to test, one place to reword)."""

from __future__ import annotations

from typing import Any

import discord

from beatforge.contract import ErrorCode, JobProgress
from beatforge.presets import MOODS, STYLES
from storage.jobs import JobView

_FAILURE_LEAD = {
    ErrorCode.INVALID_REQUEST: "The request was not valid",
    ErrorCode.MODEL_UNAVAILABLE: "The music model is not available right now",
    ErrorCode.GENERATION_FAILED: "Generation failed",
    ErrorCode.CANCELLED: "Cancelled",
    ErrorCode.INTERNAL: "Something broke on our side (it has been logged)",
}


def label(job: JobView) -> str:
    if job.kind == "cover":
        return f"New cover #{job.id} for beat #{job.parent_id}"
    if job.kind == "loop":
        return f"Loop #{job.id} of beat #{job.parent_id}"
    if job.kind == "midi":
        source = f"beat #{job.parent_id}" if job.parent_id else quote_prompt(job.params.prompt, 80)
        return f"MIDI #{job.id} of {source}"
    return f"Beat #{job.id}"


def _meta(job: JobView, kind: str) -> dict[str, Any]:
    artifact = next((a for a in job.artifacts if a.kind == kind), None)
    return dict(artifact.meta or {}) if artifact is not None else {}


def quote_prompt(prompt: str, limit: int = 300) -> str:
    text = prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def queued_text(job: JobView, position: int | None) -> str:
    if position is None:
        return f"⏳ {label(job)} — starting…"
    return f"⏳ {label(job)} queued — #{position} in line"


def progress_text(job: JobView, progress: JobProgress | None) -> str:
    if progress is None or progress.stage == "loading":
        return f"🎛️ {label(job)} — loading the model…"
    if progress.stage == "looping":
        return f"➰ {label(job)} — cutting the loop…"
    if progress.stage == "transcribing":
        return f"🎹 {label(job)} — splitting stems and transcribing…"
    if progress.stage == "drawing":
        return f"🎨 {label(job)} — drawing the cover…"
    if progress.stage == "saving":
        return f"💾 {label(job)} — saving…"
    eta = f", about {max(1, round(progress.eta_s))} s left" if progress.eta_s is not None else ""
    return f"🎶 {label(job)} — generating… {progress.percent}%{eta}"


def details_line(job: JobView) -> str:
    p = job.params
    parts = []
    if p.style:
        parts.append(STYLES[p.style].label)
    if p.mood:
        parts.append(MOODS[p.mood].label)
    if job.kind == "cover":
        parts.append(f"cover seed `{p.seed}`")
    elif job.kind == "beat":
        seeds = [a.meta["seed"] for a in job.artifacts if a.kind == "audio" and a.meta and "seed" in a.meta]
        seed = f"seeds {', '.join(f'`{s}`' for s in seeds)}" if len(seeds) > 1 else f"seed `{p.seed}`"
        length = f"{p.duration_s:g} s" + (" more" if p.continue_from else "")
        parts += [f"model `{job.resolved_model or p.model or 'default'}`", seed, length]
        audio = _meta(job, "audio")
        parts += [f"{audio['bpm']:.0f} bpm"] if audio.get("bpm") else []
        parts += [str(audio["key"])] if audio.get("key") else []
    if job.seconds_taken is not None:
        parts.append(f"made in {job.seconds_taken:.1f} s")
    return " · ".join(parts)


def cover_note(job: JobView) -> str | None:
    note = _meta(job, "cover").get("note")
    return f"ℹ️ Cover: {note}." if note else None


def loop_line(job: JobView) -> str | None:
    loop = _meta(job, "loop")
    if loop:
        stretched = " (stretched)" if loop.get("stretched") else ""
        line = (
            f"➰ Loop: {loop['bars']} bars · {loop['bpm']:.1f} bpm{stretched} · {loop['key']['label']} · "
            f"seam score {loop['seam_score']:.2f} (1.0 = as smooth as the music)"
        )
        return line + (f"\n⚠️ Not uploaded to S3: {loop['s3_error']}" if loop.get("s3_error") else "")
    error = _meta(job, "audio").get("loop_error")
    return f"➰ No loop: {error}." if error else None


def midi_line(job: JobView) -> str | None:
    info = _meta(job, "midi")
    if not info:
        return None
    tempo = f"{info['bpm']:.1f} bpm" if info.get("bpm") else "no steady beat (files at 120 bpm)"
    return (
        f"🎹 {tempo} · {info.get('key') or 'key unclear'} · drums {info['drum_hits']} hits · "
        f"bass {info['bass_notes']} notes · melody/chords {info['melody_notes']} notes\n"
        f"Stems split by {info['separation']}. The zip has drums.mid, bass.mid, melody.mid and full.mid."
    )


def result_text(job: JobView) -> str:
    head = {"cover": "🖼️", "loop": "➰", "midi": "🎹"}.get(job.kind, "🎵")
    title = f" — *{quote_prompt(job.params.title, 80)}*" if job.params.title else ""
    lines = [f"{head} **{label(job)}**{title} for <@{job.user_id}>"]
    if not (job.params.midi and job.params.midi.upload):  # an upload's "prompt" is its file name, already shown
        lines.append(f"> {quote_prompt(job.params.prompt)}")
    lines.append(details_line(job))
    lines += [extra for extra in (loop_line(job), midi_line(job), cover_note(job)) if extra]
    return "\n".join(line for line in lines if line)


def done_status_text(job: JobView) -> str:
    return f"✅ {label(job)} is ready — {details_line(job)}"


def failure_text(job: JobView) -> str:
    lead = _FAILURE_LEAD.get(job.error_code or ErrorCode.INTERNAL, "Generation failed")
    reason = f": {job.error}" if job.error and job.error_code is not ErrorCode.CANCELLED else "."
    return f"❌ {label(job)} — {lead}{reason}"


def too_large_text(name: str, size: int, limit: int, url: str | None = None, expires: int | None = None) -> str:
    """A file over the upload limit: its download link (expiring at unix second ``expires``) when links are on."""
    head = f"⚠️ {name} is {size / 2**20:.1f} MiB, over this server's {limit / 2**20:.0f} MiB upload limit"
    if url is None:
        return (
            f"{head}, so it could not be attached. (An admin can turn on download links for big files: "
            "set BEATFORGE_PUBLIC_URL and BEATFORGE_LINK_SECRET.)"
        )
    until = f" (link expires <t:{expires}:R>)" if expires is not None else ""
    return f"{head} — download it here{until}: <{url}>"
