"""Every sentence the bot shows about a job, as pure functions (easy to test, one place to reword)."""

from __future__ import annotations

import re
from typing import TypeVar

import discord
from pydantic import BaseModel

from beatforge.bounds import DISCORD_MESSAGE_CHARS
from beatforge.contract import (
    ArtifactKind,
    AudioMeta,
    BeatParams,
    CoverMeta,
    CoverParams,
    ErrorCode,
    JobKind,
    JobProgress,
    LoopMeta,
    MidiMeta,
    MidiParams,
    PackMeta,
    PackParams,
    TrainParams,
)
from beatforge.engines import ENGINES, licence_terms
from beatforge.presets import MOODS, STYLES
from bot.eta import humanize
from storage.jobs import JobView

_FAILURE_LEAD = {
    ErrorCode.INVALID_REQUEST: "The request was not valid",
    ErrorCode.MODEL_UNAVAILABLE: "The music model is not available right now",
    ErrorCode.GENERATION_FAILED: "Generation failed",
    ErrorCode.CANCELLED: "Cancelled",
    ErrorCode.WORKER_LOST: "The worker kept stopping while making it, so it was given up",
    ErrorCode.INTERNAL: "Something broke on our side (it has been logged)",
}


def label(job: JobView) -> str:
    if job.kind is JobKind.COVER:
        return f"New cover #{job.id} for beat #{job.parent_id}"
    if job.kind is JobKind.LOOP:
        return f"Loop #{job.id} of beat #{job.parent_id}"
    if job.kind is JobKind.MIDI:
        source = f"beat #{job.parent_id}" if job.parent_id else quote_prompt(job.params.prompt, 80)
        return f"MIDI #{job.id} of {source}"
    if job.kind is JobKind.PACK:
        return f"Pack #{job.id}"
    if isinstance(job.params, TrainParams):
        return f"Training #{job.id} of `{job.params.name}`"
    return f"Beat #{job.id}"


Meta = TypeVar("Meta", bound=BaseModel)


def _meta(job: JobView, kind: ArtifactKind, model: type[Meta]) -> Meta | None:
    """What the worker recorded about the job's first file of ``kind`` (None: no such file, or nothing recorded)."""
    artifact = next((a for a in job.artifacts if a.kind is kind), None)
    return model.model_validate(artifact.meta) if artifact is not None and artifact.meta is not None else None


def quote_prompt(prompt: str, limit: int = 300) -> str:
    text = prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def queued_text(job: JobView, position: int | None, eta_s: float | None = None) -> str:
    """``eta_s``: seconds until it likely starts (``bot.eta``). Under a minute it is left out: "#N in line"
    already says it is close, and every change of this text costs a Discord edit."""
    if job.attempts:  # a worker took it before and stopped mid-job (killed, out of memory): it is being retried
        place = f" — #{position} in line" if position is not None else ""
        return f"🔁 {label(job)} — the worker restarted, retrying{place}…"
    if position is None:
        return f"⏳ {label(job)} — starting…"
    eta = f" · starts in ~{humanize(eta_s)}" if eta_s is not None and eta_s >= 60 else ""
    return f"⏳ {label(job)} queued — #{position} in line{eta}"


def progress_text(job: JobView, progress: JobProgress | None) -> str:
    if job.attempts > 1 and (progress is None or progress.stage == "loading"):
        return f"🔁 {label(job)} — the worker restarted, retrying…"
    if progress is None or progress.stage == "loading":
        return f"🎛️ {label(job)} — loading the model…"
    if progress.stage == "prompting":
        return f"✨ {label(job)} — writing the prompt{'s' if job.kind is JobKind.PACK else ''}…"
    if progress.stage == "packing":
        eta = f", about {max(1, round(progress.eta_s))} s left" if progress.eta_s is not None else ""
        return f"📦 {label(job)} — cutting loop {progress.done + 1} of {progress.total}{eta}…"
    if progress.stage == "looping":
        return f"➰ {label(job)} — cutting the loop…"
    if progress.stage == "transcribing":
        return f"🎹 {label(job)} — splitting stems and transcribing…"
    if progress.stage == "drawing":
        return f"🎨 {label(job)} — drawing the cover…"
    if progress.stage == "saving":
        return f"💾 {label(job)} — saving…"
    if progress.stage == "training":
        return training_text(job, progress)
    eta = f", about {max(1, round(progress.eta_s))} s left" if progress.eta_s is not None else ""
    retry = " (the worker restarted, retrying)" if job.attempts > 1 else ""
    return f"🎶 {label(job)} — generating… {progress.percent}%{eta}{retry}"


def training_text(job: JobView, progress: JobProgress) -> str:
    """A training run's status: "🧠 Training #3 of `lofi` — step 40/200 · loss 3.21 · ~2 min left"."""
    parts = [f"step {progress.done}/{progress.total}"]
    parts += [f"loss {progress.loss:.2f}"] if progress.loss is not None else []
    if progress.eta_s is not None and progress.done < progress.total:
        parts.append("under a minute left" if progress.eta_s < 60 else f"~{humanize(progress.eta_s)} left")
    return f"🧠 {label(job)} — {' · '.join(parts)}"


def train_line(job: JobView) -> str | None:
    """A finished training run: the model's name and how to switch to it."""
    p = job.params
    if not isinstance(p, TrainParams):
        return None
    return (
        f"🧠 Model `{p.name}` is trained ({p.steps} steps on `{p.base}`) and registered. "
        f"Switch this server to it with `/admin model use {p.name}`."
    )


def stalled_text(job: JobView) -> str:
    """A running job whose worker went silent (killed, out of memory): said at once, not a frozen percentage."""
    return f"🔁 {label(job)} — the worker stopped; retrying as soon as one is back…"


def details_line(job: JobView) -> str:
    p = job.params
    parts = []
    if p.style:
        parts.append(STYLES[p.style].label)
    if p.mood:
        parts.append(MOODS[p.mood].label)
    if isinstance(p, CoverParams):
        parts.append(f"cover seed `{p.seed}`")
    elif isinstance(p, BeatParams):
        takes = _takes(job)
        seeds = [take.seed for take in takes if take.seed is not None]
        seed = f"seeds {', '.join(f'`{s}`' for s in seeds)}" if len(seeds) > 1 else f"seed `{p.seed}`"
        length = f"{p.duration_s:g} s" + (" more" if p.continue_from else "")
        parts += [f"model `{job.model_name or 'default'}`", seed, length]
        audio = takes[0] if takes else AudioMeta()
        parts += [f"{audio.bpm:.0f} bpm"] if audio.bpm else []
        parts += [audio.key] if audio.key else []
    if job.seconds_taken is not None:
        parts.append(f"made in {job.seconds_taken:.1f} s")
    return " · ".join(parts)


def cover_note(job: JobView) -> str | None:
    cover = _meta(job, ArtifactKind.COVER, CoverMeta)
    return f"ℹ️ Cover: {cover.note}." if cover is not None and cover.note else None


def loop_line(job: JobView) -> str | None:
    loop = _meta(job, ArtifactKind.LOOP, LoopMeta)
    if loop is not None:
        stretched = " (stretched)" if loop.stretched else ""
        line = (
            f"➰ Loop: {loop.bars} bars · {loop.bpm:.1f} bpm{stretched} · {loop.key.label} · "
            f"seam score {loop.seam_score:.2f} (1.0 = as smooth as the music)"
        )
        if loop.tempo_note:
            line += f"\n⚠️ Tempo: {loop.tempo_note}"
        if loop.downbeat_uncertain:
            line += f"\n⚠️ Downbeat uncertain (confidence {loop.downbeat_confidence:.2f}): check the first beat"
        return line + (f"\n⚠️ Not uploaded to S3: {loop.s3_error}" if loop.s3_error else "")
    takes = _takes(job)
    error = takes[0].loop_error if takes else None
    return f"➰ No loop: {error}." if error else None


def enhanced_line(job: JobView) -> str | None:
    """The ✨ prompt an enhanced beat was made from, and who wrote it (the LLM, or the presets and why)."""
    takes = _takes(job)
    take = takes[0] if takes else None
    if take is None or take.prompt_used is None:
        return None
    if take.prompt_source == "llm":
        who = "written by the LLM"
    else:
        why = f" ({take.prompt_note})" if take.prompt_note else ""
        who = f"written from the style and mood presets{why}"
    return f"✨ Prompt {who}: “{quote_prompt(take.prompt_used, 600)}”"


def midi_line(job: JobView) -> str | None:
    info = _meta(job, ArtifactKind.MIDI, MidiMeta)
    if info is None:
        return None
    tempo = f"{info.bpm:.1f} bpm" if info.bpm else "no steady beat (files at 120 bpm)"
    return (
        f"🎹 {tempo} · {info.key or 'key unclear'} · drums {info.drum_hits} hits · "
        f"bass {info.bass_notes} notes · melody {info.melody_notes} notes\n"
        f"Stems split by {info.separation}. The zip has drums.mid, bass.mid, melody.mid and full.mid."
    )


def pack_line(job: JobView) -> str | None:
    """How many loops the pack holds, at what tempo, who wrote their prompts, and any that were left out."""
    pack = _meta(job, ArtifactKind.PACK, PackMeta)
    if pack is None:
        return None
    key = f" · {pack.key}" if pack.key else ""
    who = "the LLM" if pack.prompt_source == "llm" else f"built-in templates ({pack.prompt_note})"
    lines = [f"📦 {pack.loops} loops at {pack.bpm} bpm{key} · prompts by {who}. Each loop has its .json beside it."]
    if pack.failed:
        lines.append(f"⚠️ {len(pack.failed)} of {pack.asked} left out: no loop could be cut from what the model made.")
    return "\n".join(lines)


_HEADS = {JobKind.COVER: "🖼️", JobKind.LOOP: "➰", JobKind.MIDI: "🎹", JobKind.PACK: "📦", JobKind.TRAIN: "🧠"}


def result_headline(job: JobView) -> str:
    """The first line of a result: what it is and whose (the mention never pings: allowed_mentions is off)."""
    head = _HEADS.get(job.kind, "🎵")
    title = f" — *{quote_prompt(job.params.title, 80)}*" if job.params.title else ""
    return f"{head} **{label(job)}**{title} for <@{job.user_id}>"


def result_text(job: JobView) -> str:
    """The message text of a result: the headline and the kind's summary; the details are in the embed."""
    lines = [result_headline(job)]
    extras = (enhanced_line(job), loop_line(job), midi_line(job), pack_line(job), cover_note(job), train_line(job))
    lines += [extra for extra in extras if extra]
    return "\n".join(lines)


def _takes(job: JobView) -> list[AudioMeta]:
    """What the worker recorded about each take of a beat, in take order."""
    takes = (AudioMeta.model_validate(a.meta or {}) for a in job.artifacts if a.kind is ArtifactKind.AUDIO)
    return sorted(takes, key=lambda take: take.take)


def seeds_text(job: JobView) -> str:
    """The seed, or each take's seed (``--seed`` with a take's seed reproduces that take alone)."""
    seeds = [take.seed for take in _takes(job) if take.seed is not None]
    if len(seeds) > 1:
        return "\n".join(f"take {number}: `{seed}`" for number, seed in enumerate(seeds, start=1))
    return f"`{seeds[0] if seeds else job.params.seed}`"


def text_match_text(job: JobView) -> str | None:
    """Each take's CLAP text-match score (higher: closer to the words), and "best K of N" for a best-of-N beat;
    None when no take has a score (no CLAP model, or a result from before scores existed)."""
    takes = _takes(job)
    if not any(take.text_match is not None for take in takes):
        return None

    def score(take: AudioMeta) -> str:
        return f"{take.text_match:.2f}" if take.text_match is not None else "not scored"

    if len(takes) == 1:
        lines = [f"text match {score(takes[0])}"]
    else:
        lines = [f"take {number}: text match {score(take)}" for number, take in enumerate(takes, start=1)]
    best_of = takes[0].best_of
    if best_of is not None:
        lines.append(f"best {len(takes)} of {best_of}" + (", best first" if len(takes) > 1 else ""))
    return "\n".join(lines)


def licence_text(licence: str | None) -> str:
    """What the model's weights licence lets the user do with the beat, in one plain line (one reading of
    licences for the bot, the worker and the CLI: ``beatforge.engines.licence_terms``)."""
    return licence_terms(licence or "").line


def engine_limits_text() -> str:
    """Each engine's longest beat ("MusicGen up to 120 s, ACE-Step 1.5 up to 240 s"), from the engines' table."""
    return ", ".join(f"{caps.label} up to {caps.max_duration_s:g} s" for caps in ENGINES.values())


def provenance_text(job: JobView) -> str:
    """Where a result came from: model, its licence, seed and prompt (shown on every result)."""
    prompt = f"prompt “{quote_prompt(job.params.prompt, 200)}”"
    if job.kind is JobKind.BEAT:
        takes = _takes(job)
        licence = takes[0].licence if takes else None
        seeds = [str(take.seed) for take in takes if take.seed is not None] or [str(job.params.seed)]
        seed = f"seeds {', '.join(seeds)}" if len(seeds) > 1 else f"seed {seeds[0]}"
        made = f"Made by `{job.model_name or 'default'}` ({licence_text(licence)}) · {seed} · {prompt}"
        if isinstance(job.params, BeatParams) and job.params.remix_from is not None:
            # The audio it re-imagines came from another model (MusicGen cannot remix), under that model's licence.
            source = f"beat #{job.parent_id}" if job.parent_id is not None else "another beat"
            made += f" · remixed from {source}: that beat's licence applies too"
        return made
    if job.kind is JobKind.COVER:
        cover = _meta(job, ArtifactKind.COVER, CoverMeta)
        if cover is None or cover.source == "procedural" or not cover.model:
            return f"Cover drawn in code (no model, nothing to license) · seed {job.params.seed} · {prompt}"
        return (
            f"Cover drawn by `{cover.model}` (licence not recorded: check the model's terms before commercial "
            f"use) · seed {job.params.seed} · {prompt}"
        )
    if isinstance(job.params, PackParams):
        pack = _meta(job, ArtifactKind.PACK, PackMeta)
        first, last = job.params.seed, job.params.seed + job.params.count - 1
        terms = licence_text(pack.licence if pack else None)
        model = job.model_name or "default"
        return f"Made by `{model}` ({terms}) · seeds {first}-{last}, one per loop · use case {prompt}"
    if isinstance(job.params, TrainParams):
        return f"Trained from `{job.params.base}` on your clips: its licence applies to the new model too."
    if job.parent_id is not None:
        return f"Made from beat #{job.parent_id}: its model's licence applies (see that beat's result) · {prompt}"
    return "Made from your upload: the MIDI carries the same rights as that audio."


def result_embed(job: JobView) -> discord.Embed:
    """The details of a result as an embed; the caller sets the cover image (an ``attachment://`` URL)."""
    p = job.params
    upload = isinstance(p, MidiParams) and p.upload is not None
    description = "" if upload else f"> {quote_prompt(p.prompt)}"  # an upload's prompt is its name
    embed = discord.Embed(title=label(job), description=description or None, colour=discord.Colour.dark_purple())
    if p.style:
        embed.add_field(name="Style", value=STYLES[p.style].label)
    if p.mood:
        embed.add_field(name="Mood", value=MOODS[p.mood].label)
    if isinstance(p, BeatParams):
        takes = _takes(job)
        embed.add_field(name="Model", value=f"`{job.model_name or 'default'}`")
        embed.add_field(name="Seeds" if len(takes) > 1 else "Seed", value=seeds_text(job))
        audio = takes[0] if takes else AudioMeta()
        if audio.bpm:
            embed.add_field(name="Tempo", value=f"{audio.bpm:.0f} bpm")
        if audio.key:
            embed.add_field(name="Key", value=audio.key)
        embed.add_field(name="Duration", value=f"{p.duration_s:g} s" + (" more" if p.continue_from else ""))
        if (scores := text_match_text(job)) is not None:
            embed.add_field(name="Text match (CLAP)", value=scores)
    elif isinstance(p, CoverParams):
        embed.add_field(name="Cover seed", value=f"`{p.seed}`")
    elif isinstance(p, PackParams):
        embed.add_field(name="Model", value=f"`{job.model_name or 'default'}`")
        bars = f"{p.loop.bars} bars" if p.loop.bars else "the longest whole bars that fit"
        embed.add_field(name="Loops", value=f"{p.count} × {bars}")
        embed.add_field(name="Tempo", value=f"{p.bpm} bpm" + (f" · {p.key}" if p.key else ""))
    if job.seconds_taken is not None:
        embed.add_field(name="Time taken", value=f"{job.seconds_taken:.1f} s")
    embed.add_field(name="Provenance", value=provenance_text(job), inline=False)
    return embed


def compact_note(name: str, fmt: str, kbps: int | None) -> str:
    """The attached file is a smaller copy of one over the limit (the line before says where the full one is)."""
    if fmt == "zip":  # a pack's or the stems' smaller zip: the same files, the audio compressed
        return f"🗜️ Attached instead: {name}, the same files with smaller (MP3) audio."
    rate = f" at {kbps} kbps" if kbps else ""
    return f"🎧 Attached instead: {name}, a {fmt.upper()} copy{rate} that plays right here."


def left_out_text(name: str, size: int, reason: str, url: str | None = None, expires: int | None = None) -> str:
    """A file that fits the per-file limit but not in this message (``reason`` says why), with its link if any."""
    head = f"⚠️ {name} ({size / 2**20:.1f} MiB) is not attached: {reason}"
    if url is None:
        return f"{head}. (An admin can turn on download links: set BEATFORGE_PUBLIC_URL and BEATFORGE_LINK_SECRET.)"
    until = f" (link expires <t:{expires}:R>)" if expires is not None else ""
    return f"{head} — download it here{until}: <{url}>"


def dm_fallback_text(job: JobView) -> str:
    """Lead line of a result sent by DM because the bot may not post in the job's channel."""
    where = f"<#{job.channel_id}>" if job.channel_id else "the channel you asked in"
    return f"📬 I may not post in {where} (missing permissions: an admin can fix that), so here is {label(job)} by DM."


def done_status_text(job: JobView) -> str:
    return f"✅ {label(job)} is ready — {details_line(job)}"


def failure_text(job: JobView) -> str:
    lead = _FAILURE_LEAD.get(job.error_code or ErrorCode.INTERNAL, "Generation failed")
    reason = public_reason(job.error) if job.error and job.error_code is not ErrorCode.CANCELLED else None
    return f"❌ {label(job)} — {lead}" + (f": {reason}" if reason else ".")


#: A file path on the server (``/srv/beatforge/...``, ``C:\\...``, ``~/...``): two or more parts after the root.
_SERVER_PATH = re.compile(r"(?:[A-Za-z]:\\|~?/)[^\s/\\:'\"]+(?:[/\\][^\s/\\:'\"]*)+")
#: Longest reason shown: a worker's error longer than this is internals, not an explanation.
_REASON_CHARS = 300


def public_reason(error: str) -> str | None:
    """A worker's error as users may see it: its first line, no server paths, bounded.

    A safety net only: the worker is meant to write user-facing reasons, but one stray exception text must not
    show a user our file layout or a traceback.
    """
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines or lines[0].startswith("Traceback"):
        return None
    text = _SERVER_PATH.sub("(a file on the server)", lines[0])
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def undeliverable_text(job: JobView) -> str:
    """The last word on a result Discord kept refusing: short, so it gets through where the result did not."""
    return f"⚠️ I couldn't deliver {label(job)} here: Discord kept refusing it. Find it in /history."


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


def fit(lines: list[str], limit: int = DISCORD_MESSAGE_CHARS) -> str:
    """Join lines, dropping whole lines from the end (and saying how many) rather than cutting one in half."""
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        remaining = len(lines) - index
        tail = f"\n…and {remaining} more line(s)."
        if size + len(line) + 1 + (len(tail) if remaining > 1 else 0) > limit:
            kept.append(tail.strip())
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)
