"""Per-user limits and the queue cap: what applies on a server, and why a new job may not be queued (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from beatforge.bounds import MAX_DURATION_S
from beatforge.config import Settings
from beatforge.contract import BeatParams, JobParams, PackParams
from storage.guilds import GuildSettings
from storage.jobs import UserActivity


@dataclass(frozen=True, slots=True)
class Limits:
    jobs_per_hour: int
    concurrent_jobs: int
    max_duration_s: float
    everyone_can_reroll: bool
    max_pack_loops: int


def effective_limits(settings: Settings, guild: GuildSettings | None) -> Limits:
    """The server's own choices where its admins made one, the bot's settings elsewhere."""
    g = guild or GuildSettings(guild_id=0)
    return Limits(
        jobs_per_hour=settings.jobs_per_hour if g.jobs_per_hour is None else g.jobs_per_hour,
        concurrent_jobs=settings.concurrent_jobs if g.concurrent_jobs is None else g.concurrent_jobs,
        max_duration_s=MAX_DURATION_S if g.max_duration_s is None else g.max_duration_s,
        everyone_can_reroll=settings.everyone_can_reroll if g.everyone_can_reroll is None else g.everyone_can_reroll,
        max_pack_loops=settings.pack_max_loops if g.max_pack_loops is None else g.max_pack_loops,
    )


#: The window ``jobs_per_hour`` counts over.
HOUR = timedelta(hours=1)


def refusal(
    *, settings: Settings, limits: Limits, activity: UserActivity, params: JobParams, user_id: int, now: datetime
) -> str | None:
    """Why this user may not queue this job now (None: they may), as a sentence that says when to try again.

    Owners (``settings.owner_ids``) are exempt from everything here; the queue cap is checked separately.
    """
    if user_id in settings.owner_ids:
        return None
    # Only a beat has a length to generate: a loop, MIDI or cover is made from audio that already exists.
    if isinstance(params, BeatParams) and params.duration_s > limits.max_duration_s:
        return (
            f"Beats on this server can be up to {limits.max_duration_s:g} s long; you asked for "
            f"{params.duration_s:g} s. Try again with `duration` of {limits.max_duration_s:g} or less."
        )
    if isinstance(params, PackParams) and params.count > limits.max_pack_loops:
        return (
            f"Packs on this server hold up to {limits.max_pack_loops} loops; you asked for {params.count}. "
            f"Try again with `count` of {limits.max_pack_loops} or less."
        )
    if activity.recent >= limits.jobs_per_hour:
        # The oldest job in the window leaves it an hour after it was queued, freeing one slot.
        oldest = activity.oldest_recent or now
        again = int((oldest + HOUR).timestamp()) + 1
        return (
            f"You've queued {activity.recent} jobs in the last hour; the limit here is {limits.jobs_per_hour} "
            f"an hour. You can queue another <t:{again}:R>."
        )
    if activity.active >= limits.concurrent_jobs:
        jobs_word = "job" if limits.concurrent_jobs == 1 else "jobs"
        return (
            f"You already have {activity.active} queued or running; the limit here is {limits.concurrent_jobs} "
            f"{jobs_word} at once. Try again as soon as one of them finishes (`/queue` shows when)."
        )
    return None


def queue_full_text(waiting: int, cap: int) -> str:
    """Why nobody may queue now: the whole queue's cap, so a flood cannot grow the wait without bound."""
    return (
        f"The queue is full right now ({waiting} jobs waiting, the most it takes is {cap}). "
        "Please try again in a few minutes."
    )
