"""Per-user limits and the queue cap: what applies on a server, and whether a new job may be queued."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from beatforge.bounds import MAX_DURATION_S
from beatforge.config import Settings
from beatforge.contract import BeatParams, JobParams, JobStatus
from bot.errors import UserFacingError
from storage import jobs
from storage.guilds import GuildSettings
from storage.jobs import UserActivity

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)


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


#: The window ``jobs_per_hour`` counts over.
HOUR = timedelta(hours=1)


def _refusal(
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


async def check_limits(bot: Beatforge, *, user_id: int, guild: GuildSettings | None, params: JobParams) -> None:
    """Refuse a new job before anything is recorded or queued, when it would break a limit.

    Per user (owners exempt): the beat's length against the server's maximum, jobs queued in the last hour,
    jobs queued or running at once; the server's own choices (``/admin limits``) override the bot's
    settings. For everyone: the whole queue's cap, so a flood cannot grow the wait without bound.

    ``guild``: the server's settings (None outside a server), read once by the caller, who needs them too.

    Raises:
        UserFacingError: the refusal, written for the user, saying when they can try again.
    """
    settings, now = bot.settings, datetime.now(UTC)
    async with bot.sessions() as session:
        activity = await jobs.user_activity(session, user_id=user_id, since=now - HOUR)
        waiting = await jobs.count_jobs(session, status=JobStatus.QUEUED)
    limits = effective_limits(settings, guild)
    reason = _refusal(settings=settings, limits=limits, activity=activity, params=params, user_id=user_id, now=now)
    if reason is None and waiting >= settings.queue_cap:
        reason = (
            f"The queue is full right now ({waiting} jobs waiting, the most it takes is {settings.queue_cap}). "
            "Please try again in a few minutes."
        )
    if reason is not None:
        log.info("job refused by a limit", extra={"user_id": user_id, "guild_id": guild.guild_id if guild else None})
        raise UserFacingError(reason)
