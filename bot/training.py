"""/admin train: check an uploaded zip of captioned clips and queue a training run on the training queue.

Checked before downloading (the attachment's name and size against ``train_max_upload_mb``), then by content
(``beatforge.training_zip``: a zip, clips that are audio by their first bytes, a caption for each, within
``train_max_unpacked_mb``); every problem is listed in one refusal. One run per server at a time. The run is an
ordinary job from then on: its status line (steps, loss, time left, ❌ Cancel) and its result come from the watcher.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import tempfile
from pathlib import Path, PurePath

import discord
from redis.exceptions import RedisError

from beatforge.contract import ArtifactKind, JobKind, TrainParams
from beatforge.fleet import ModelInfo, read_models
from beatforge.training_zip import check_zip
from bot.errors import UserFacingError
from bot.jobs import JobService
from bot.messages import label
from bot.params import validated
from storage import jobs
from storage.artifacts import ArtifactRecord
from storage.backends import ArtifactsNotStored

log = logging.getLogger(__name__)

#: The engine the training library fine-tunes.
TRAINABLE_ENGINE = "musicgen"


def check_attachment(file: discord.Attachment, limit_mb: float) -> str:
    """Refuse what cannot be a training zip before downloading it; where it will be stored."""
    if PurePath(file.filename).suffix.lower() != ".zip":
        raise UserFacingError(f"{file.filename} is not a .zip: send your clips and their captions in one zip file.")
    if file.size == 0:
        raise UserFacingError(f"{file.filename} is empty (0 bytes).")
    if file.size > limit_mb * 2**20:
        raise UserFacingError(f"{file.filename} is {file.size / 2**20:.1f} MiB; the limit is {limit_mb:g} MiB.")
    stem = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in PurePath(file.filename).stem)
    return f"uploads/{secrets.token_hex(6)}-{stem[:40] or 'clips'}.zip"


def check_models(name: str, base: str, reported: tuple[list[ModelInfo], str] | None) -> None:
    """Refuse a name that is taken, or a base that is unknown or cannot be trained (as far as workers said)."""
    if reported is None:
        return  # no worker has reported its models yet: the training worker checks again
    models = {m.name: m for m in reported[0]}
    if name in models:
        raise UserFacingError(f"A model named `{name}` exists already; choose another name.")
    info = models.get(base)
    if info is None:
        raise UserFacingError(f"There is no model `{base}` to start from (see `/admin model list`).")
    if info.engine != TRAINABLE_ENGINE or info.kind == "lora":
        raise UserFacingError(f"`{base}` can't be trained here: start from a MusicGen model that is not a LoRA.")


class TrainingRequests:
    """What /admin train does, from the job service it queues through."""

    def __init__(self, service: JobService) -> None:
        self.jobs = service
        # Servers whose run is between its check and its job row (the zip downloading): a second /admin train
        # in that moment would pass the database check. A server's interactions all reach one process (its
        # shard's), so a set here closes the gap.
        self._starting: set[int] = set()

    async def start(
        self, interaction: discord.Interaction, *, name: str, data: discord.Attachment, steps: int | None, base: str
    ) -> int:
        """Check, download, check the zip, store it and queue the run; the job's id."""
        assert interaction.guild_id is not None  # /admin is guild-only
        if interaction.guild_id in self._starting:
            raise UserFacingError(
                "A training run for this server is being queued right now: one training run per "
                "server at a time. Wait for it, or cancel it (❌ on its status)."
            )
        self._starting.add(interaction.guild_id)
        try:
            return await self._start(interaction, name=name, data=data, steps=steps, base=base)
        finally:
            self._starting.discard(interaction.guild_id)

    async def _start(
        self, interaction: discord.Interaction, *, name: str, data: discord.Attachment, steps: int | None, base: str
    ) -> int:
        assert interaction.guild_id is not None
        settings = self.jobs.settings
        params = validated(
            TrainParams,
            prompt=f"model {name}",
            name=name.strip(),
            base=base.strip(),
            steps=steps or settings.train_default_steps,
            upload="uploads/pending.zip",
        )
        async with self.jobs.sessions() as session:
            running = await jobs.active_of_kind(session, guild_id=interaction.guild_id, kind=JobKind.TRAIN)
        if running is not None:
            raise UserFacingError(
                f"{label(running)} is still {running.status}: one training run per server at a time. "
                f"Wait for it, or cancel it (❌ on its status, or `/admin cancel {running.id}`)."
            )
        try:
            check_models(params.name, params.base, await read_models(self.jobs.redis))
        except RedisError as exc:
            raise UserFacingError("Can't reach the job queue to check the models; try again in a minute.") from exc
        path = check_attachment(data, settings.train_max_upload_mb)
        await interaction.response.defer(thinking=True)
        await self._store(data, path, max_unpacked=int(settings.train_max_unpacked_mb * 2**20))
        params = params.model_copy(update={"upload": path})
        guild = await self.jobs.guild(interaction.guild_id)
        log.info("training queued", extra={"model": params.name, "base": params.base, "steps": params.steps})
        return await self.jobs.submit(interaction, params, guild)

    async def _store(self, file: discord.Attachment, path: str, *, max_unpacked: int) -> None:
        """Download the zip, check its content, and store it where the training worker reads it."""
        try:
            data = await file.read()
        except discord.HTTPException as exc:
            raise UserFacingError(f"Couldn't download {file.filename} from Discord ({exc.status}); try again.") from exc
        with tempfile.TemporaryDirectory(prefix="beatforge-train-check-") as scratch:
            candidate = Path(scratch) / "clips.zip"
            candidate.write_bytes(data)
            report = await asyncio.to_thread(check_zip, candidate, max_unpacked_bytes=max_unpacked)
        if not report.ok:
            count = len(report.problems)
            raise UserFacingError(
                f"❌ {file.filename} can't be used for training ({count} problem{'s' if count != 1 else ''}):\n"
                + report.problems_text()
            )
        store = self.jobs.store
        with store.writing("uploads", PurePath(path).name) as tmp:
            tmp.write_bytes(data)
        upload = ArtifactRecord(
            kind=ArtifactKind.AUDIO, path=path, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        try:
            await self.jobs.artifacts.publish([upload])
        except ArtifactsNotStored as exc:
            store.resolve(path).unlink(missing_ok=True)
            raise UserFacingError(f"Couldn't store {file.filename} right now; nothing was queued. Try again.") from exc
