"""Per-user limits and the queue cap: what applies on a server, and whether a new job may be queued."""

from __future__ import annotations

from dataclasses import dataclass

from beatforge.config import Settings
from beatforge.contract import MAX_DURATION_S
from storage.guilds import GuildSettings


@dataclass(frozen=True, slots=True)
class Limits:
    jobs_per_hour: int
    concurrent_jobs: int
    max_duration_s: float
    everyone_can_reroll: bool


def effective_limits(settings: Settings, guild: GuildSettings | None) -> Limits:
    """The server's own choices where its admins made one, the bot's settings elsewhere."""
    g = guild or GuildSettings(guild_id=0)
    return Limits(
        jobs_per_hour=settings.jobs_per_hour if g.jobs_per_hour is None else g.jobs_per_hour,
        concurrent_jobs=settings.concurrent_jobs if g.concurrent_jobs is None else g.concurrent_jobs,
        max_duration_s=MAX_DURATION_S if g.max_duration_s is None else g.max_duration_s,
        everyone_can_reroll=settings.everyone_can_reroll if g.everyone_can_reroll is None else g.everyone_can_reroll,
    )
