"""What crosses redis between the bot and the worker: a job's request, and its progress.

Jobs cross redis as JSON (never pickle), so no Python class, least of all a torch exception, travels
between processes. A job's outcome does not cross at all: the worker writes it to the job's row.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import Field

from beatforge.contract.base import SCHEMA_VERSION, Frozen
from beatforge.contract.params import JobParams

#: redis key where the worker publishes a job's progress (JSON of :class:`JobProgress`).
PROGRESS_KEY = "beatforge:progress:{job_id}"
#: How long a progress key outlives its last update, so stale keys clean themselves up.
PROGRESS_TTL_S = 3600
#: The first seconds of a beat being made (an OGG file), while the rest is made: ``JobProgress.preview`` says it is
#: there. In redis, not the artifact store, so the bot can read it whichever machine made it.
PREVIEW_KEY = "beatforge:preview:{job_id}"

#: A kind's parameters; unparametrized, ``JobRequest`` holds any kind's (what the bot enqueues).
P = TypeVar("P", bound=JobParams)


class JobRequest(Frozen, Generic[P]):
    """The payload of a job: a stored job and its parameters. ``JobRequest[BeatParams]`` is a beat's, and so on;
    each arq function validates the payload as its own kind's request."""

    schema_version: Literal[2] = SCHEMA_VERSION
    job_id: int = Field(ge=1)
    params: P


class JobProgress(Frozen):
    """A progress snapshot the worker writes to redis and the bot turns into message edits."""

    schema_version: Literal[2] = SCHEMA_VERSION
    stage: Literal[
        "loading", "prompting", "generating", "looping", "packing", "transcribing", "drawing", "saving", "training"
    ]
    done: int = Field(ge=0)
    total: int = Field(ge=1)
    eta_s: float | None = Field(default=None, ge=0)
    #: The first seconds of take 1 are under ``PREVIEW_KEY`` (``BEATFORGE_PREVIEW_S``), for the status message.
    preview: bool = False
    #: A training run's latest loss (stage ``training``: ``done`` and ``total`` are its optimizer steps).
    loss: float | None = None

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.done / self.total))
