"""The status line under each job this process queued: which interaction tokens still live, what each line
shows now, and how it is edited (through the token while it lives, else as the channel message it is).

Held in memory on purpose: after a restart the row's ``status_message_id`` is enough to edit in the channel;
the token and the text shown only save API calls while this process lives.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import discord

from beatforge.contract import JobStatus
from bot.edit_budget import EditBudget
from storage.jobs import JobView

log = logging.getLogger(__name__)

#: Discord keeps an interaction token for 15 minutes; stop using it a little before.
TOKEN_MARGIN = timedelta(minutes=1)
#: How long a command may take to show its first status line (discord.py's own retries of a 5xx included) before
#: its job is delivered without one: a first edit that failed must not hold the result back for good.
ANSWER_GRACE_S = 20.0


class StatusBoard:
    def __init__(self, client: discord.Client, budget: EditBudget | None = None) -> None:
        #: For status messages without a live token: edited in their channel.
        self.client = client
        #: How often progress may edit status lines (Discord's rate limits); final edits are not counted.
        self.budget = budget or EditBudget()
        #: Interactions of jobs this process queued, for edits and follow-ups while their token lives.
        self.interactions: dict[int, discord.Interaction] = {}
        #: The text each job's status message shows now, so unchanged progress costs no API call.
        self.shown: dict[int, str] = {}
        #: When each job's command started answering (monotonic seconds), for ``answering``.
        self.answer_started: dict[int, float] = {}
        self.answer_grace_s = ANSWER_GRACE_S
        #: Jobs whose status message carries the first seconds of their beat (taken off with the result).
        self.previewed: set[int] = set()

    def track(self, job_id: int, interaction: discord.Interaction) -> None:
        """The job's status line will be ``interaction``'s answer: edit and follow up through it while it lives."""
        self.interactions[job_id] = interaction
        self.answer_started[job_id] = time.monotonic()

    def answering(self, job_id: int) -> bool:
        """Whether the job's command may still be posting its first status line, which would overwrite a result
        delivered meanwhile. False once it was posted, and once ``answer_grace_s`` passed without it (the edit
        failed: the job is delivered anyway, without a status message to reply to)."""
        started = self.answer_started.get(job_id)
        if started is None or job_id in self.shown:
            return False
        if time.monotonic() - started < self.answer_grace_s:
            return True
        log.warning("no status line was posted for the job; delivering without one", extra={"job_id": job_id})
        self.answer_started.pop(job_id, None)
        return False

    def no_status_line(self, job_id: int) -> None:
        """The command could not post the job's status line: deliver without waiting out ``answer_grace_s``."""
        self.answer_started.pop(job_id, None)

    def posted(self, job_id: int, content: str) -> None:
        """The job's status line was just posted, showing ``content``."""
        self.shown[job_id] = content

    def live(self, job_id: int) -> discord.Interaction | None:
        """The job's interaction while its token can still be used, else None."""
        interaction = self.interactions.get(job_id)
        if interaction is None or discord.utils.utcnow() > interaction.expires_at - TOKEN_MARGIN:
            return None
        return interaction

    def token_gone(self, job_id: int) -> None:
        """Discord said the token is dead (it expired early, or never was valid): it will not come back."""
        self.interactions.pop(job_id, None)

    def forget(self, job_id: int) -> None:
        """The job is delivered: nothing about its status line is needed any more."""
        self.interactions.pop(job_id, None)
        self.shown.pop(job_id, None)
        self.answer_started.pop(job_id, None)
        self.previewed.discard(job_id)
        self.budget.forget(job_id)

    async def edit(self, job: JobView, content: str, *, preview: discord.File | None = None) -> None:
        """Edit the status line; ``preview`` attaches the beat's first seconds, which the final edit takes off."""
        finished = job.status in (JobStatus.DONE, JobStatus.FAILED)
        # a finished job's status loses its ❌ Cancel button; while it waits or runs the button stays
        extras: dict[str, Any] = {"view": None} if finished else {}
        if preview is not None:
            extras["attachments"] = [preview]
        elif finished and job.id in self.previewed:  # the result replaces the preview
            extras["attachments"] = []
        interaction = self.live(job.id)
        if interaction is not None:
            await interaction.edit_original_response(content=content, **extras)
        elif job.channel_id and job.status_message_id:
            channel = self.client.get_partial_messageable(job.channel_id)
            await channel.get_partial_message(job.status_message_id).edit(content=content, **extras)
        self.shown[job.id] = content
        if preview is not None:
            self.previewed.add(job.id)

    async def show(self, job: JobView, content: str) -> None:
        """Edit the job's status line to ``content`` unless it shows that already, or the edit budget says not now
        (the next tick shows newer text: nothing is lost by waiting)."""
        if self.shown.get(job.id) == content:
            return
        channel_id = job.channel_id if self.live(job.id) is None else None  # edited as a channel message
        if self.budget.allow(job.id, channel_id=channel_id):
            await self.edit(job, content)
