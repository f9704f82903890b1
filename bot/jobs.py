"""Cancelling a job (❌ under its status, ``/admin cancel``): the row, the queue and the worker, in that order.

The row is marked cancelled first, so whatever happens next nothing delivers a result for it: a worker
that finishes anyway finds the row failed and drops its files (``storage.jobs.mark_done``). Then the job
leaves the queue if it is still waiting, and arq's abort set tells a worker running it to cancel its task,
which sets the generation thread's stop flag; the thread stops at its next decoding step and frees the GPU.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from redis.exceptions import RedisError

from beatforge.contract import PROGRESS_KEY
from storage import jobs
from storage.jobs import JobView

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)


async def cancel_job(bot: Beatforge, job: JobView, *, by: str) -> bool:
    """Cancel ``job``; False when it had already finished (nothing to cancel)."""
    async with bot.sessions() as session:
        if not await jobs.cancel(session, job.id, by=by):
            return False
    try:
        async with bot.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(bot.settings.queue_name, job.queue_job_id)
            pipe.zadd(abort_jobs_ss, {job.queue_job_id: timestamp_ms()})
            pipe.delete(PROGRESS_KEY.format(job_id=job.id))
            await pipe.execute()
    except (RedisError, OSError) as exc:
        # The row says cancelled, so no result will be delivered; a worker that runs it wastes the time.
        log.error("could not abort the queued job", extra={"job_id": job.id, "error": repr(exc)})
    log.info("job cancelled", extra={"job_id": job.id, "by": by})
    return True
