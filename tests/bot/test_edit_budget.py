"""The status-edit budget keeps a busy queue inside Discord's rate limits."""

from __future__ import annotations

from bot.edit_budget import EditBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_job_is_edited_at_most_every_few_seconds() -> None:
    clock = Clock()
    budget = EditBudget(job_every_s=2.0, clock=clock)
    allowed = []
    for _ in range(100):  # ten seconds of watcher ticks every 0.1 s
        allowed.append(budget.allow(1))
        clock.now += 0.1
    assert sum(allowed) == 5 and allowed[0]


def test_many_jobs_together_stay_under_the_global_rate() -> None:
    clock = Clock()
    budget = EditBudget(per_second=10, job_every_s=0.0, clock=clock)
    edits = 0
    for _ in range(50):  # five seconds, 200 jobs wanting an edit on every tick
        edits += sum(budget.allow(job) for job in range(200))
        clock.now += 0.1
    assert edits <= 10 * 5 + 10  # the rate, plus one initial burst


def test_channel_edits_stay_within_the_channels_limit() -> None:
    clock = Clock()
    budget = EditBudget(per_second=100, job_every_s=0.0, channel_per_5s=4, clock=clock)
    per_window = []
    for _ in range(4):  # four 5-second windows, 30 jobs in one channel
        edits = 0
        for _ in range(50):
            edits += sum(budget.allow(job, channel_id=77) for job in range(30))
            clock.now += 0.1
        per_window.append(edits)
    assert max(per_window) <= 5 and min(per_window) >= 3  # Discord: 5 per 5 s; the channel is still served
    assert budget.allow(999)  # another route (an interaction's own edits) is not held up by the channel
