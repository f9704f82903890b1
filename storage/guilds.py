"""Per-server settings chosen by its admins, and the audit log of what admins did.

A setting left None falls back to the bot's global one (``beatforge.config.Settings``), so changing a
default in the environment reaches every server that never chose otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AuditEntry, GuildConfig

#: The columns ``/admin`` may change, as keyword arguments of :func:`update_guild`.
GUILD_FIELDS = ("model", "jobs_per_hour", "concurrent_jobs", "max_duration_s", "everyone_can_reroll", "max_pack_loops")


@dataclass(frozen=True, slots=True)
class GuildSettings:
    guild_id: int
    model: str | None = None
    jobs_per_hour: int | None = None
    concurrent_jobs: int | None = None
    max_duration_s: float | None = None
    everyone_can_reroll: bool | None = None
    max_pack_loops: int | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    guild_id: int | None
    user_id: int
    action: str
    detail: dict[str, Any]
    at: datetime


def _settings(row: GuildConfig | None, guild_id: int) -> GuildSettings:
    if row is None:
        return GuildSettings(guild_id)
    return GuildSettings(guild_id, **{name: getattr(row, name) for name in GUILD_FIELDS})


async def get_guild(session: AsyncSession, guild_id: int) -> GuildSettings:
    return _settings(await session.get(GuildConfig, guild_id), guild_id)


async def update_guild(session: AsyncSession, guild_id: int, *, by: int, action: str, **changes: Any) -> GuildSettings:
    """Change some of a server's settings and write the audit entry, in one transaction."""
    unknown = set(changes) - set(GUILD_FIELDS)
    if unknown:
        raise TypeError(f"unknown guild settings: {sorted(unknown)}")
    row = await session.get(GuildConfig, guild_id)
    if row is None:
        row = GuildConfig(guild_id=guild_id)
        session.add(row)
    before = {name: getattr(row, name) for name in changes}
    for name, value in changes.items():
        setattr(row, name, value)
    session.add(AuditEntry(guild_id=guild_id, user_id=by, action=action, detail={"before": before, "after": changes}))
    await session.commit()
    return _settings(row, guild_id)


async def audit(session: AsyncSession, *, guild_id: int | None, by: int, action: str, **detail: Any) -> None:
    """Record an admin action that changes no setting (e.g. cancelling someone's job)."""
    session.add(AuditEntry(guild_id=guild_id, user_id=by, action=action, detail=detail))
    await session.commit()


async def audit_log(session: AsyncSession, *, guild_id: int, limit: int = 20) -> list[AuditRecord]:
    """A server's admin actions, newest first."""
    rows = await session.scalars(
        select(AuditEntry).where(AuditEntry.guild_id == guild_id).order_by(AuditEntry.id.desc()).limit(limit)
    )
    return [AuditRecord(r.id, r.guild_id, r.user_id, r.action, dict(r.detail), r.at) for r in rows]
