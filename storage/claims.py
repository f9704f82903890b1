"""Which bot process may deliver a job's result: delivery claims (leases on the job row) and gateway shards.

Several bot processes share one database and one outbox (``storage/jobs.py``'s undelivered rows). A bot claims a
row before posting it; the claim is one conditional UPDATE, so the database picks exactly one winner, and it
expires, so a bot that dies mid-delivery holds nothing for long. A sharded bot reads only its shards' guilds' rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from storage.models import Generation, utcnow


async def _update(session: AsyncSession, job_id: int, *conditions: ColumnElement[bool], **values: object) -> bool:
    result = await session.execute(update(Generation).where(Generation.id == job_id, *conditions).values(**values))
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def claim_free_for(owner: str | None, now: datetime) -> ColumnElement[bool]:
    """Nobody's live claim but (maybe) ``owner``'s own stands in the way: never claimed, released, or expired."""
    free = (
        Generation.delivery_claimed_by.is_(None)
        | Generation.delivery_claimed_until.is_(None)
        | (Generation.delivery_claimed_until <= now)
    )
    return free | (Generation.delivery_claimed_by == owner) if owner is not None else free


async def claim_delivery(
    session: AsyncSession, job_id: int, *, owner: str, lease: timedelta, now: datetime | None = None
) -> bool:
    """Take (or renew) the right to post this job's result for ``lease``: True for exactly one of any number of bots
    asking at once, False while another's claim is live or once the job is delivered.

    One conditional UPDATE, so the database decides the race: on PostgreSQL a second UPDATE waits for the first
    one's commit and then re-checks the condition against the claimed row, on SQLite writes are serialised.
    ``owner`` names the bot process (``bot.delivery.Delivery.owner``); asking again while holding it renews it.
    """
    moment = now or utcnow()
    return await _update(
        session,
        job_id,
        Generation.delivered_at.is_(None),
        claim_free_for(owner, moment),
        delivery_claimed_by=owner,
        delivery_claimed_until=moment + lease,
    )


async def release_delivery(session: AsyncSession, job_id: int, *, owner: str) -> bool:
    """Give the claim back (the attempt failed or was cancelled): the next try may be any bot's, without waiting for
    the lease to run out. False when ``owner`` no longer held it."""
    return await _update(
        session,
        job_id,
        Generation.delivery_claimed_by == owner,
        delivery_claimed_by=None,
        delivery_claimed_until=None,
    )


@dataclass(frozen=True, slots=True)
class Shards:
    """The gateway shards one bot process runs. It delivers only the results of their guilds (and, when it runs shard
    0, those without a guild: DMs), as only it has those guilds in its cache and their interactions in hand."""

    count: int
    ids: frozenset[int]

    def owns(self, guild_id: int | None) -> bool:
        """Discord's formula: a guild is on shard ``(guild_id >> 22) % count``."""
        return (0 if guild_id is None else (guild_id >> 22) % self.count) in self.ids


#: ``guild_id >> 22`` as SQL both SQLite and PostgreSQL run: integer division by 2**22 (bigint by integer stays an
#: integer in both, and snowflakes are positive, so it truncates like the shift).
SNOWFLAKE_SHIFT = 2**22


def in_shards(shards: Shards) -> ColumnElement[bool]:
    owned = ((Generation.guild_id // SNOWFLAKE_SHIFT) % shards.count).in_(sorted(shards.ids))
    return Generation.guild_id.is_(None) | owned if 0 in shards.ids else owned
