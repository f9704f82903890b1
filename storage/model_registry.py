"""Registered-model rows: the model registry's entries admins manage from Discord.

Plain data in and out (:class:`ModelRow`), like ``storage/jobs.py``. These functions check only what
keeps the table consistent (a known kind, a lora naming its base, unique names); whether a source can
be loaded is the worker's business (``generation/registry.py``), since only it sees its disks and cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import StorageError
from storage.models import RegisteredModel

#: The kinds of registry entry; ``generation.music.registry.ModelKind`` is the same set.
MODEL_KINDS = ("base", "finetune", "lora")


class ModelAlreadyRegistered(StorageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a model named {name!r} is already registered")
        self.name = name


@dataclass(frozen=True, slots=True)
class ModelRow:
    """A registered model as callers see it; it has every field ``generation.music.registry.ModelSpec`` needs."""

    name: str
    source: str
    kind: str
    base: str | None
    licence: str
    description: str
    melody: bool
    stereo: bool
    added_by: int | None
    added_at: datetime
    #: The engine that runs it (``beatforge.engines.ENGINE_NAMES``).
    engine: str = "musicgen"
    #: The server it was trained for (/admin train), which alone may pick it; None: every server.
    guild_id: int | None = None


def _row(row: RegisteredModel) -> ModelRow:
    return ModelRow(
        name=row.name,
        source=row.source,
        kind=row.kind,
        base=row.base,
        licence=row.licence,
        description=row.description,
        melody=row.melody,
        stereo=row.stereo,
        added_by=row.added_by,
        added_at=row.added_at,
        engine=row.engine,
        guild_id=row.guild_id,
    )


async def list_models(session: AsyncSession) -> list[ModelRow]:
    """Every registered model, oldest first."""
    rows = await session.scalars(select(RegisteredModel).order_by(RegisteredModel.id))
    return [_row(row) for row in rows]


async def add_model(
    session: AsyncSession,
    *,
    name: str,
    source: str,
    kind: str,
    added_by: int | None,
    base: str | None = None,
    licence: str = "",
    description: str = "",
    melody: bool = False,
    stereo: bool = False,
    engine: str = "musicgen",
    guild_id: int | None = None,
) -> ModelRow:
    """Add a model, recording who (a Discord user id) added it and when.

    Raises:
        ValueError: an unknown kind, or a lora without a base (or a base on anything else).
        ModelAlreadyRegistered: the name is taken.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
    if (kind == "lora") != (base is not None):
        raise ValueError("a lora needs a base model; other kinds take none")
    row = RegisteredModel(
        name=name,
        source=source,
        kind=kind,
        base=base,
        licence=licence,
        description=description,
        melody=melody,
        stereo=stereo,
        engine=engine,
        added_by=added_by,
        guild_id=guild_id,
    )
    session.add(row)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise ModelAlreadyRegistered(name) from exc
    return _row(row)


async def other_servers_models(session: AsyncSession, guild_id: int) -> set[str]:
    """The names of models trained for servers other than ``guild_id``: that server may not pick them."""
    rows = await session.scalars(
        select(RegisteredModel.name).where(RegisteredModel.guild_id.is_not(None), RegisteredModel.guild_id != guild_id)
    )
    return set(rows)


async def remove_model(session: AsyncSession, name: str) -> bool:
    """Remove a model; False when no model has that name."""
    result = await session.execute(delete(RegisteredModel).where(RegisteredModel.name == name))
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]
