"""When queued jobs will likely start and finish, from the speeds workers measured (pure: no redis, no Discord).

The model is deliberately simple: **one worker processes the jobs one after another**, running jobs first,
then the queue in its order. The real worker batches beats queued together and several workers may share the
queue, so these times are an upper bound; they are shown as a guide ("~"), never as a promise.

Work is counted the way workers report speed (``beatforge.fleet``): a beat is ``duration_s * takes`` audio
seconds at its model's audio-seconds-per-second rate; loop, MIDI and cover jobs are one job each at their
kind's jobs-per-second rate. Where nothing has been measured yet (a new model, a fresh install) a
conservative default stands in, and the estimate says so (``measured=False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from beatforge.contract import JobKind
from beatforge.fleet import Speed, speed_key

#: Audio seconds per wall second assumed for a model nobody has timed: MusicGen-medium on a mid-range GPU
#: makes about one; a cold model load and the cover come on top. Slow on purpose: a wait that turns out
#: shorter than announced disappoints nobody.
DEFAULT_BEAT_RATE = 0.25
#: Seconds per job assumed for the other kinds until one is timed (demucs + basic-pitch on a long file,
#: a diffusion cover, a loop cut with tempo detection), again on the slow side.
DEFAULT_JOB_SECONDS: dict[str, float] = {JobKind.LOOP: 30.0, JobKind.MIDI: 120.0, JobKind.COVER: 20.0}
#: For a kind this module does not know.
FALLBACK_JOB_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Work:
    """One job's size: a beat's model, length and takes; other kinds only need their kind."""

    key: str
    kind: str
    model: str | None
    duration_s: float
    takes: int = 1


@dataclass(frozen=True, slots=True)
class Running:
    """A job a worker has: how far along it is, as far as the worker said.

    ``fraction_done`` (0-1) comes from its progress record, ``remaining_s`` from the worker's own estimate of
    the generation left (preferred when present), ``elapsed_s`` from when it started (used when neither
    is known).
    """

    work: Work
    fraction_done: float | None = None
    remaining_s: float | None = None
    elapsed_s: float | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    """Seconds from now until a job likely starts and ends; ``measured`` is False where any speed behind the
    number (its own, or that of a job ahead of it) is a default rather than a measurement."""

    key: str
    start_s: float
    end_s: float
    measured: bool


def job_seconds(work: Work, speeds: Mapping[str, Speed]) -> tuple[float, bool]:
    """How long the job should take on its own, and whether that comes from a measured speed."""
    speed = speeds.get(speed_key(work.kind, work.model))
    measured = speed is not None and speed.rate > 0
    if work.kind == JobKind.BEAT:
        audio_s = work.duration_s * max(1, work.takes)
        return audio_s / (speed.rate if speed is not None and measured else DEFAULT_BEAT_RATE), measured
    if speed is not None and measured:
        return 1.0 / speed.rate, True
    return DEFAULT_JOB_SECONDS.get(work.kind, FALLBACK_JOB_SECONDS), False


def _remaining(job: Running, speeds: Mapping[str, Speed]) -> tuple[float, bool]:
    total, measured = job_seconds(job.work, speeds)
    if job.remaining_s is not None:
        return max(0.0, job.remaining_s), True  # the worker's own count of what is left
    if job.fraction_done is not None:
        return total * (1.0 - min(1.0, max(0.0, job.fraction_done))), measured
    if job.elapsed_s is not None:
        return max(0.0, total - job.elapsed_s), measured
    return total, measured


def estimate(queued: Sequence[Work], running: Sequence[Running], speeds: Mapping[str, Speed]) -> list[Estimate]:
    """Start and end of every job, running ones first (start 0), then the queue in order, one after another.

    Args:
        queued: the waiting jobs in the order the worker will take them (arq's sorted set).
        running: the jobs workers hold now.
        speeds: ``beatforge.fleet.parse_speeds``, keyed by ``speed_key``.
    """
    estimates: list[Estimate] = []
    clock, all_measured = 0.0, True
    for job in running:
        left, measured = _remaining(job, speeds)
        estimates.append(Estimate(job.work.key, 0.0, left, measured))
        # One worker, jobs in sequence: the queue starts once every running job is done (an upper bound).
        clock += left
        all_measured = all_measured and measured
    for work in queued:
        seconds, measured = job_seconds(work, speeds)
        all_measured = all_measured and measured
        estimates.append(Estimate(work.key, clock, clock + seconds, all_measured))
        clock += seconds
    return estimates


def humanize(seconds: float) -> str:
    """A wait in the words a status line uses: coarse on purpose, since each change of text is a Discord edit."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{seconds / 3600:.1f} h"
