"""The arq connection both sides share: JSON on the wire, the queue each kind of job goes to, one redis URL, fair
ordering by user."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from beatforge.config import Settings
from beatforge.contract import JobKind, JobParams, JobRequest


def _exception_as_text(value: object) -> str:
    """arq serialises a job's failure result with our serializer (e.g. ``JobExecutionFailed`` when it gives up
    retrying): an exception becomes its text. Anything else that is not JSON is a bug and stays a TypeError."""
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=_exception_as_text).encode()


def loads(data: bytes) -> Any:
    return json.loads(data)


#: arq's default is pickle, which would make the bot unpickle worker-side classes (torch exceptions).
SERIALIZERS: dict[str, Any] = {"job_serializer": dumps, "job_deserializer": loads}


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection: the URL's host, port, database, user and password, TLS for rediss://, and the CA bundle
    that signed the server's certificate when it is not a public CA (arq's own URL parsing has no place for it)."""
    conf = RedisSettings.from_dsn(settings.redis_url)
    if conf.ssl and settings.redis_ca_file is not None:
        conf.ssl_ca_certs = str(settings.redis_ca_file)
    if settings.redis_sentinels:  # arq asks the sentinels for the master, again after every failover
        conf.host, conf.sentinel = settings.sentinel_hosts(), True
        conf.sentinel_master = settings.redis_sentinel_master
    return conf


def plain_redis(settings: Settings, *, timeout_s: float) -> Redis:
    """A plain redis-py client to the same redis as the queue's (``beatforge status``): the URL's, with its CA
    bundle for rediss://, or the master the sentinels name."""
    options: dict[str, Any] = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}
    if settings.redis_url.startswith("rediss://") and settings.redis_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_ca_file)
    if not settings.redis_sentinels:
        return cast(Redis, Redis.from_url(settings.redis_url, **options))
    conf = RedisSettings.from_dsn(settings.redis_url)
    sentinel = Sentinel(settings.sentinel_hosts(), ssl=conf.ssl, **options)  # type: ignore[no-untyped-call]
    master = sentinel.master_for(
        settings.redis_sentinel_master, db=conf.database, username=conf.username, password=conf.password
    )
    return cast(Redis, master)


#: Kinds that are CPU work (signal analysis, ONNX transcription): on ``cpu_queue_name`` when it is set. arq serves
#: one queue per worker, first in first out, so kinds are routed by queue: a MIDI job never waits behind beats.
CPU_KINDS: frozenset[JobKind] = frozenset({JobKind.LOOP, JobKind.MIDI})


def queue_for(settings: Settings, kind: JobKind) -> str:
    """The arq queue a job of ``kind`` goes to (training runs: their own, which only ``train`` workers take)."""
    if kind is JobKind.TRAIN:
        return settings.train_queue_name
    if kind in CPU_KINDS and settings.cpu_queue_name is not None:
        return settings.cpu_queue_name
    return settings.queue_name


def queue_names(settings: Settings) -> list[str]:
    """Every queue jobs go to, the GPU one first, the training one last."""
    cpu = [settings.cpu_queue_name] if settings.cpu_queue_name else []
    return [settings.queue_name, *cpu, settings.train_queue_name]


def served_kinds(settings: Settings) -> list[JobKind]:
    """The kinds a worker of this lane runs: those whose queue is the one it serves."""
    queue = served_queue(settings)
    return [kind for kind in JobKind if queue_for(settings, kind) == queue]


def served_queue(settings: Settings) -> str:
    """The queue a worker of ``settings.worker_lane`` (and ``worker_roles``) takes jobs from."""
    if settings.worker_roles == "train":
        return settings.train_queue_name
    if settings.worker_lane == "cpu" and settings.cpu_queue_name is not None:
        return settings.cpu_queue_name
    return settings.queue_name


async def connect(settings: Settings) -> ArqRedis:
    return await create_pool(redis_settings(settings), default_queue_name=settings.queue_name, **SERIALIZERS)


class QueueError(Exception):
    """The job could not be put on the queue; nothing will run it."""


#: One "round" of fair ordering: a user's (k+1)-th active job is placed k rounds after its arrival.
ROUND_MS = 3_600_000
#: Rounds stop growing here: a user's 25th and later active jobs all queue in round 24, in arrival order.
MAX_ROUNDS = 24
#: Every score is shifted this far into the past, so the latest round still scores before "now" (a score in
#: the future would make an idle worker wait for it; arq only pops scores <= now). One round more than
#: needed, so a job's score is always at least a round before its arrival (see ``fair_score``).
OFFSET_MS = (MAX_ROUNDS + 1) * ROUND_MS
#: A job not started by then is dropped by arq (its default, which it would otherwise compute from the
#: score and so from the negative offset).
JOB_EXPIRES = timedelta(days=1)
#: Per queue and user, the queue ids of the jobs they queued (members) and their scores: what fair ordering reads.
USER_JOBS_KEY = "beatforge:fair:{queue}:user:{user_id}"

#: A user's active jobs (still in arq's queue: waiting or running, since arq removes a job from its sorted set
#: only when it finishes) and the highest score among them; finished ones are pruned on the way. A script, so
#: the count and the pruning are one atomic step.
_USER_ROUND_SCRIPT = """
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local active, latest = 0, nil
for _, id in ipairs(ids) do
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score then
    active = active + 1
    score = tonumber(score)
    if latest == nil or score > latest then latest = score end
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
if latest == nil then return {active, 0, 0} end
return {active, 1, latest}
"""


def fair_score(arrival_ms: int, *, active: int, latest_ms: int | None) -> int:
    """The queue score of a job that arrives while its user has ``active`` jobs waiting or running.

    arq runs the lowest score <= now first. Scoring ``arrival + k * ROUND_MS - OFFSET_MS`` with ``k`` the
    user's active jobs interleaves users round by round: one user's twenty jobs take rounds 0-19, and
    another user's single job (round 0) runs right after the first of them instead of after all twenty.
    Within a round, jobs keep their arrival order.

    ``latest_ms`` (the score of the user's latest job still queued) keeps one user's jobs in FIFO order:
    ``k`` counts jobs *now* active, so after some of a user's jobs finished, a new job could land in an
    earlier round than that user's older jobs still waiting. It is placed just after them instead.

    The result is never in the future: every round term is at most ``MAX_ROUNDS * ROUND_MS`` while the
    offset is one round more, and ``latest_ms`` itself was about a round before its own arrival (a
    millisecond later per job the same user queued within one millisecond).
    """
    if active < 0:
        raise ValueError(f"active must be >= 0, not {active}")
    score = arrival_ms + min(active, MAX_ROUNDS) * ROUND_MS - OFFSET_MS
    if latest_ms is not None:
        score = max(score, latest_ms + 1)
    return score


async def _user_round(redis: ArqRedis, queue_name: str, user_id: int) -> tuple[int, int | None]:
    """The user's active job count and their latest job's score (None without a queued job)."""
    active, has_latest, latest = await redis.eval(  # type: ignore[misc]
        _USER_ROUND_SCRIPT, 2, queue_name, USER_JOBS_KEY.format(queue=queue_name, user_id=user_id)
    )
    return int(active), int(latest) if has_latest else None


async def enqueue_job(
    redis: ArqRedis,
    *,
    job_id: int,
    queue_job_id: str,
    params: JobParams,
    user_id: int | None = None,
    queue_name: str | None = None,
) -> None:
    """Queue a stored job, as JSON (see the contract), by its kind's function name (``JobKind``), on
    ``queue_name``: ``queue_for`` its kind (default: the pool's queue, right only while nothing is split off).

    Jobs are ordered fairly across users (see ``fair_score``): pass the requester's ``user_id``. A job
    without one (the command line, scripts) counts as its own user's only job, i.e. round 0: those jobs are
    FIFO among themselves and never starve anyone.

    Why this scheme: the round comes from redis, at the moment of queueing, from what arq really holds for
    that user (waiting or running), so the shared kernel needs no database and a job that failed to queue
    or was cancelled never counts. Two jobs of one user queued in the same instant may share a round; they
    still keep their arrival order.

    Raises:
        QueueError: redis is unreachable, or arq already holds this job id (it would drop the job silently).
    """
    payload = JobRequest[JobParams](job_id=job_id, params=params).model_dump(mode="json")
    queue_name = queue_name or redis.default_queue_name
    try:
        active, latest = (0, None) if user_id is None else await _user_round(redis, queue_name, user_id)
        score = fair_score(int(time.time() * 1000), active=active, latest_ms=latest)
        queued = await redis.enqueue_job(
            params.kind.function,
            payload,
            _job_id=queue_job_id,
            _queue_name=queue_name,
            _defer_until=datetime.fromtimestamp(score / 1000, UTC),
            _expires=JOB_EXPIRES,
        )
        if queued is not None and user_id is not None:
            key = USER_JOBS_KEY.format(queue=queue_name, user_id=user_id)
            async with redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {queue_job_id: score})
                pipe.pexpire(key, JOB_EXPIRES * 2)
                await pipe.execute()
    except (RedisError, OSError) as exc:
        raise QueueError(f"redis is unreachable: {exc!r}") from exc
    if queued is None:
        raise QueueError(f"arq already holds a job with id {queue_job_id}")


#: Every key arq keeps per job id.
_JOB_KEY_PREFIXES = (job_key_prefix, in_progress_key_prefix, retry_key_prefix, result_key_prefix)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """What arq holds of one job: whether it is still queued, and whether a worker took it (and how long ago)."""

    queued: bool
    #: Milliseconds since a worker took it (None: nobody has); from the in-progress key's remaining life.
    taken_ms: int | None


async def inspect_jobs(redis: ArqRedis, queue_job_ids: Sequence[str], *, job_timeout_s: float) -> list[QueueEntry]:
    """arq's view of these jobs, in one round trip: the reconciler compares it with the database.

    arq marks a taken job with an in-progress key that lives ``job_timeout_s + 10`` seconds, which tells how
    long ago it was taken.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for queue_job_id in queue_job_ids:
            pipe.exists(job_key_prefix + queue_job_id)
            pipe.pttl(in_progress_key_prefix + queue_job_id)
        replies = await pipe.execute()
    life_ms = int((job_timeout_s + 10) * 1000)
    entries = []
    for exists, ttl in zip(replies[::2], replies[1::2], strict=True):
        taken = ttl is not None and int(ttl) >= 0
        entries.append(QueueEntry(queued=bool(exists), taken_ms=max(life_ms - int(ttl), 0) if taken else None))
    return entries


async def discard_job(redis: ArqRedis, queue_job_id: str, *, queue_name: str) -> None:
    """Forget everything arq holds of a job (queue entry, payload, in-progress mark, try count, result), so it
    can be queued again under the same id. Only for jobs no live worker runs: the reconciler's."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(queue_name, queue_job_id)
        pipe.delete(*(prefix + queue_job_id for prefix in _JOB_KEY_PREFIXES))
        await pipe.execute()
