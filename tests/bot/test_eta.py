"""The pure wait estimate (bot/eta.py): work from measured speeds, defaults where none, jobs in sequence."""

from __future__ import annotations

import pytest

from beatforge.fleet import Speed
from bot.eta import (
    DEFAULT_BEAT_RATE,
    DEFAULT_JOB_SECONDS,
    FALLBACK_JOB_SECONDS,
    Estimate,
    Running,
    Work,
    estimate,
    humanize,
    job_seconds,
)

SPEEDS = {"model:small": Speed(rate=2.0, samples=5), "job:midi": Speed(rate=0.1, samples=2)}


def test_a_beat_is_its_audio_seconds_times_takes_at_its_models_measured_rate() -> None:
    assert job_seconds(Work("a", "beat", "small", duration_s=30, takes=2), SPEEDS) == (30.0, True)


def test_an_unmeasured_model_falls_back_to_the_conservative_default_and_says_so() -> None:
    assert job_seconds(Work("a", "beat", "large", duration_s=10), SPEEDS) == (10 / DEFAULT_BEAT_RATE, False)


def test_other_kinds_are_jobs_per_second() -> None:
    assert job_seconds(Work("a", "midi", None, duration_s=120), SPEEDS) == (10.0, True)
    assert job_seconds(Work("a", "cover", None, duration_s=15), SPEEDS) == (DEFAULT_JOB_SECONDS["cover"], False)
    assert job_seconds(Work("a", "mystery", None, duration_s=15), SPEEDS) == (FALLBACK_JOB_SECONDS, False)


def test_jobs_run_one_after_another_after_the_running_one() -> None:
    running = [Running(Work("r", "beat", "small", duration_s=20), fraction_done=0.25)]  # 10 s of work, 7.5 s left
    queued = [Work("q1", "beat", "small", duration_s=60, takes=2), Work("q2", "midi", None, duration_s=120)]
    assert estimate(queued, running, SPEEDS) == [
        Estimate("r", 0.0, 7.5, True),
        Estimate("q1", 7.5, 67.5, True),
        Estimate("q2", 67.5, 77.5, True),
    ]


def test_one_guessed_speed_makes_every_later_estimate_a_guess() -> None:
    queued = [Work("q1", "beat", "small", 10), Work("q2", "beat", "large", 10), Work("q3", "beat", "small", 10)]
    assert [e.measured for e in estimate(queued, [], SPEEDS)] == [True, False, False]
    assert [e.start_s for e in estimate(queued, [], SPEEDS)] == [0.0, 5.0, 5.0 + 10 / DEFAULT_BEAT_RATE]


@pytest.mark.parametrize(
    ("running", "left"),
    [
        (Running(Work("r", "beat", "small", 20), remaining_s=3.0, fraction_done=0.1), 3.0),  # the worker's word
        (Running(Work("r", "beat", "small", 20), elapsed_s=4.0), 6.0),
        (Running(Work("r", "beat", "small", 20), elapsed_s=40.0), 0.0),  # overdue: never negative
        (Running(Work("r", "beat", "small", 20)), 10.0),
    ],
)
def test_what_a_running_job_has_left(running: Running, left: float) -> None:
    (only,) = estimate([], [running], SPEEDS)
    assert (only.start_s, only.end_s) == (0.0, left)


def test_an_empty_queue_has_no_estimates() -> None:
    assert estimate([], [], SPEEDS) == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "under a minute"),
        (59.9, "under a minute"),
        (60, "1 min"),
        (135, "2 min"),
        (89 * 60, "89 min"),
        (90 * 60, "1.5 h"),
        (4 * 3600, "4.0 h"),
    ],
)
def test_humanize(seconds: float, text: str) -> None:
    assert humanize(seconds) == text
