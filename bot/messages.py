"""Every sentence the bot shows about a job, as pure functions (easy to test, one place to reword)."""

from __future__ import annotations

import discord

from beatforge.contract import ErrorCode, JobProgress
from storage.jobs import JobView

_FAILURE_LEAD = {
    ErrorCode.INVALID_REQUEST: "The request was not valid",
    ErrorCode.MODEL_UNAVAILABLE: "The music model is not available right now",
    ErrorCode.GENERATION_FAILED: "Generation failed",
    ErrorCode.CANCELLED: "Cancelled",
    ErrorCode.INTERNAL: "Something broke on our side (it has been logged)",
}


def quote_prompt(prompt: str, limit: int = 300) -> str:
    text = prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def queued_text(job_id: int, position: int | None) -> str:
    if position is None:
        return f"⏳ Beat #{job_id} — starting…"
    return f"⏳ Beat #{job_id} queued — #{position} in line"


def progress_text(job_id: int, progress: JobProgress | None) -> str:
    if progress is None or progress.stage == "loading":
        return f"🎛️ Beat #{job_id} — loading the model…"
    if progress.stage == "saving":
        return f"💾 Beat #{job_id} — saving…"
    eta = f", about {max(1, round(progress.eta_s))} s left" if progress.eta_s is not None else ""
    return f"🎶 Beat #{job_id} — generating… {progress.percent}%{eta}"


def details_line(job: JobView) -> str:
    parts = [
        f"model `{job.resolved_model or job.params.model or 'default'}`",
        f"seed `{job.params.seed}`",
        f"{job.params.duration_s:g} s",
    ]
    if job.seconds_taken is not None:
        parts.append(f"made in {job.seconds_taken:.1f} s")
    return " · ".join(parts)


def result_text(job: JobView) -> str:
    return f"🎵 **Beat #{job.id}** for <@{job.user_id}>\n> {quote_prompt(job.params.prompt)}\n{details_line(job)}"


def done_status_text(job: JobView) -> str:
    return f"✅ Beat #{job.id} is ready — {details_line(job)}"


def failure_text(job: JobView) -> str:
    lead = _FAILURE_LEAD.get(job.error_code or ErrorCode.INTERNAL, "Generation failed")
    reason = f": {job.error}" if job.error and job.error_code is not ErrorCode.CANCELLED else "."
    return f"❌ Beat #{job.id} — {lead}{reason}"


def too_large_text(job: JobView, size: int, limit: int) -> str:
    return (
        f"{result_text(job)}\n⚠️ The audio file is {size / 2**20:.1f} MiB, over this server's "
        f"{limit / 2**20:.0f} MiB upload limit, so it could not be attached."
    )
