"""A finished job's result message: which of its files fit Discord's limits, a line (with a download link when
links are on) for each that does not, the details embed and the buttons.

Composing is kept apart from posting (``bot/delivery.py``) so the same message is built for the first delivery,
for each retry after a 413, for a DM, and when a result is posted again (/show, /history's Re-post).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import discord

from beatforge.bounds import DISCORD_MESSAGE_CHARS
from beatforge.contract import ArtifactKind, AudioMeta, CompactMeta, JobKind
from bot.buttons import result_view
from bot.messages import compact_note, left_out_text, result_embed, result_text, too_large_text
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.backends import ArtifactBackend, LocalArtifacts
from storage.jobs import JobView

log = logging.getLogger(__name__)

#: What a result message carries, in this order (Discord allows 10 attachments; takes are up to 4 audio files).
ATTACHED_KINDS = (
    ArtifactKind.AUDIO,
    ArtifactKind.LOOP,
    ArtifactKind.METADATA,
    ArtifactKind.MIDI,
    ArtifactKind.STEMS,
    ArtifactKind.PACK,
    ArtifactKind.COVER,
)
#: A smaller copy the worker made of a file that may be over the limit: posted only when the full one is not.
SUBSTITUTE_FOR = {
    ArtifactKind.AUDIO_COMPACT: ArtifactKind.AUDIO,
    ArtifactKind.PREVIEW: ArtifactKind.LOOP,
    ArtifactKind.STEMS_PREVIEW: ArtifactKind.STEMS,
    ArtifactKind.PACK_PREVIEW: ArtifactKind.PACK,
}
#: Discord takes at most this many files in one message.
MAX_ATTACHMENTS = 10
#: Discord refuses a message request over 25 MB whatever the per-file limit.
MAX_REQUEST_BYTES = 25_000_000
#: Kept free of files in a request: the JSON part (content, embed, components) and the multipart framing.
REQUEST_HEADROOM_BYTES = 256 * 1024
#: Discord's limit on an embed field's text.
MAX_FIELD_CHARS = 1024


@dataclass(frozen=True, slots=True)
class ResultMessage:
    content: str
    attachments: tuple[Path, ...] = ()
    embed: discord.Embed | None = None
    view: discord.ui.View | None = None

    def send_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``send``; the files are opened anew on each call (discord.py closes them once
        sent, so each attempt needs its own)."""
        kwargs: dict[str, Any] = {"files": [discord.File(path, filename=path.name) for path in self.attachments]}
        if self.embed is not None:
            kwargs["embed"] = self.embed
        if self.view is not None:
            kwargs["view"] = self.view
        return kwargs


class Links(Protocol):
    """Where download links come from (``bot.file_server.Downloads``: its own signed links, or presigned S3 URLs)."""

    def link(self, relative_path: str) -> tuple[str, int] | None: ...


class ResultComposer:
    def __init__(self, store: ArtifactStore, links: Links, artifacts: ArtifactBackend | None = None) -> None:
        #: ``store``: where attached files are read from (with s3, the bot's download cache).
        self.store, self.links = store, links
        #: Brings a file into ``store`` before it is attached (a no-op for the local back end).
        self.artifacts: ArtifactBackend = artifacts if artifacts is not None else LocalArtifacts(store)

    async def prepare(self, job: JobView, limit: int) -> None:
        """Fetch, off the event loop, every file of ``job`` that :meth:`compose` could attach under ``limit``, so
        that composing (synchronous, and repeated on each 413) finds them local. Without it, composing fetches
        them itself and blocks the loop while it does; files over the limit go out as links and are never
        fetched. A file that cannot be fetched is left for :meth:`compose` to report."""
        for artifact in job.artifacts:
            if _group(artifact) in ATTACHED_KINDS and artifact.bytes <= limit:
                try:
                    await self.artifacts.fetch(artifact)
                except OSError as exc:
                    log.warning("could not fetch an artifact", extra={"path": artifact.path, "error": str(exc)})

    def compose(
        self, job: JobView, limit: int, refused: frozenset[Path] = frozenset(), lead: str | None = None
    ) -> ResultMessage:
        """A finished job's result message: text, the files that fit under ``limit``, details embed and buttons.

        ``refused``: files left out because Discord answered 413 with them; ``lead``: a first line (e.g. why
        this came by DM).

        Raises:
            LookupError: a finished beat without audio (nothing to post).
            OSError: a file to attach cannot be had (``ArtifactUnavailable`` with s3: gone from the bucket, or the
                bucket unreachable).
        """
        if job.kind is JobKind.BEAT and not any(a.kind is ArtifactKind.AUDIO for a in job.artifacts):
            raise LookupError(f"job #{job.id} is done but has no audio artifact")
        notes: list[str] = []
        chosen: list[tuple[ArtifactRecord, Path]] = []
        originals = {(a.kind, _take(a)): a for a in job.artifacts if a.kind in ATTACHED_KINDS}

        def sendable(artifact: ArtifactRecord) -> bool:
            return artifact.bytes <= limit and self.store.resolve(artifact.path) not in refused

        for artifact in sorted((a for a in job.artifacts if _group(a) in ATTACHED_KINDS), key=_order):
            substitute_for = SUBSTITUTE_FOR.get(artifact.kind)
            original = originals.get((substitute_for, _take(artifact))) if substitute_for is not None else None
            if original is not None and sendable(original):
                continue  # the full file goes out; its smaller copy is not needed
            path = self.store.resolve(artifact.path)
            url, expires = self.links.link(artifact.path) or (None, None)
            if path in refused:
                reason = "Discord refused it as too large for this message"
                notes.append(left_out_text(path.name, artifact.bytes, reason, url, expires))
            elif artifact.bytes > limit:
                notes.append(too_large_text(path.name, artifact.bytes, limit, url, expires))
            else:
                chosen.append((artifact, path))
                if original is not None:
                    notes.append(compact_note(path.name, *_copy_format(artifact, path)))
        notes += self._fit_request(chosen, limit)
        for artifact, _ in chosen:  # only what goes out is fetched (already there after prepare, or local)
            self.artifacts.local_copy(artifact)
        embed = result_embed(job)
        cover = next((path for artifact, path in chosen if artifact.kind is ArtifactKind.COVER), None)
        if cover is not None:
            embed.set_image(url=f"attachment://{cover.name}")
        content = _fit_content([lead, result_text(job), *notes], embed)
        return ResultMessage(content, tuple(path for _, path in chosen), embed, result_view(job))

    def _fit_request(self, chosen: list[tuple[ArtifactRecord, Path]], limit: int) -> list[str]:
        """Drop the largest files, in favour of links, until the rest fit in one message (count and total size)."""
        notes: list[str] = []
        budget = max(limit, MAX_REQUEST_BYTES - REQUEST_HEADROOM_BYTES)
        while len(chosen) > MAX_ATTACHMENTS or sum(a.bytes for a, _ in chosen) > budget:
            reason = (
                f"Discord takes at most {MAX_ATTACHMENTS} files in one message"
                if len(chosen) > MAX_ATTACHMENTS
                else f"the files together are over the {MAX_REQUEST_BYTES // 10**6} MB Discord takes in one message"
            )
            artifact, path = max(chosen, key=lambda item: item[0].bytes)
            chosen.remove((artifact, path))
            url, expires = self.links.link(artifact.path) or (None, None)
            notes.append(left_out_text(path.name, artifact.bytes, reason, url, expires))
        return notes


def _take(artifact: ArtifactRecord) -> int:
    """The take a file is (or is a copy of); 1 for files that are not takes."""
    if artifact.meta is None:
        return 1
    if artifact.kind is ArtifactKind.AUDIO:
        return AudioMeta.model_validate(artifact.meta).take
    if artifact.kind is ArtifactKind.AUDIO_COMPACT:
        return CompactMeta.model_validate(artifact.meta).take
    return 1


def _copy_format(artifact: ArtifactRecord, path: Path) -> tuple[str, int | None]:
    """A smaller copy's format and bitrate, as the worker recorded them for a take's (else from its name)."""
    if artifact.kind is ArtifactKind.AUDIO_COMPACT and artifact.meta is not None:
        compact = CompactMeta.model_validate(artifact.meta)
        return compact.format, compact.bitrate_kbps
    return path.suffix[1:], None


def _group(artifact: ArtifactRecord) -> ArtifactKind:
    """The kind a file stands for: a compact copy or preview counts as what it is a copy of."""
    return SUBSTITUTE_FOR.get(artifact.kind, artifact.kind)


def _order(artifact: ArtifactRecord) -> tuple[int, int, bool]:
    """Kinds in ``ATTACHED_KINDS`` order, takes in order, a copy right after its original."""
    return ATTACHED_KINDS.index(_group(artifact)), _take(artifact), artifact.kind in SUBSTITUTE_FOR


def _fit_content(lines: list[str | None], embed: discord.Embed) -> str:
    """The message text, at most Discord's 2000 characters; lines past that go into the embed, never dropped."""
    content, overflow = "", list[str]()
    for line in (line for line in lines if line):
        candidate = f"{content}\n{line}" if content else line
        if not overflow and len(candidate) <= DISCORD_MESSAGE_CHARS:
            content = candidate
        else:
            overflow.append(line)
    for line in overflow:
        embed.add_field(name="More", value=line[:MAX_FIELD_CHARS], inline=False)
    return content
