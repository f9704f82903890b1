"""How often status lines may be edited, so the bot stays inside Discord's rate limits by design.

Discord allows a bot about 50 requests a second in all, and a channel about 5 message edits per 5 seconds.
Progress alone would edit each job's status line every watcher tick (5-8 edits a job, peaks of 80 a second
with a busy queue). Status lines are "latest wins": an edit refused now loses nothing, the next tick shows
newer text. So each status edit asks the budget first: one job's line changes at most every few seconds, all
lines together at most a few a second, and lines edited as channel messages (after the interaction token
expired) at most as often as the channel allows. Results, failures and the final ✅ are never throttled here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` events per second on average, in bursts of up to ``burst``."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    updated: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class EditBudget:
    def __init__(
        self,
        *,
        per_second: float = 10.0,
        job_every_s: float = 2.0,
        channel_per_5s: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: All status edits together: a fifth of Discord's global limit, the rest left to results and commands.
        self.all = TokenBucket(rate=per_second, burst=per_second)
        self.job_every_s, self.channel_per_5s, self.clock = job_every_s, channel_per_5s, clock
        self.last_edit: dict[int, float] = {}
        self.channels: dict[int, TokenBucket] = {}

    def allow(self, job_id: int, *, channel_id: int | None = None) -> bool:
        """Whether the job's status line may be edited now; ``channel_id`` when the edit is a channel message's."""
        now = self.clock()
        if now - self.last_edit.get(job_id, -self.job_every_s) < self.job_every_s:
            return False
        channel = None
        if channel_id is not None:
            channel = self.channels.setdefault(channel_id, TokenBucket(rate=self.channel_per_5s / 5, burst=1))
            # peek first, so a refusal by the channel costs the global budget nothing
            if channel.tokens + (now - channel.updated) * channel.rate < 1:
                return False
        if not self.all.take(now):
            return False
        if channel is not None:
            channel.take(now)
        self.last_edit[job_id] = now
        return True

    def forget(self, job_id: int) -> None:
        self.last_edit.pop(job_id, None)
