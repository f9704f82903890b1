"""Soak: the whole system under a crowd of users, with a worker killed mid-job and redis restarted.

Why: unit and fault tests each prove one path once. This runs every part for real and at volume, so what only
shows under load does show: a job that is never answered, a result posted twice, one user starved by another's
burst, a bot that floods Discord with status edits. It starts a redis-server with an append-only file, a fresh
migrated SQLite database, ``--workers`` real ``beatforge worker`` processes (the tiny random MusicGen, 1 s beats,
procedural covers) and the real ``Beatforge`` bot in this process, logged in to the loopback Discord fake
(``tests/support/discord_harness``). ``--users`` simulated users send ``--jobs`` /beat commands between them,
spread over ``--spread-s`` seconds (a quarter of the users bursty: several commands within a second or two).
30 % of the way through, a worker in the middle of generating (its log says it started jobs that the database
calls running) is SIGKILLed and a replacement started 5 s later; at 60 %, redis is stopped, left down 2 s and
started again. Then it waits until every job is delivered (or ``--drain-s`` passes). The bot runs with its
production settings (a watcher tick a second, 4 deliveries at once), the workers with fast liveness (heartbeat
0.5 s, silent after 3 s, a reconcile pass a second), and the per-user limits are out of the way unless
``--jobs-per-hour``, ``--concurrent-jobs`` or ``--queue-cap`` bring them in. All users share one channel, the
worst case for Discord's per-channel limit.

    .venv/bin/python bench/soak.py --jobs 1000 --users 40

Reading the table (everything counted from what the fake Discord received, checked against the database):

* commands: /beat interactions sent. Each ends one of three ways: accepted (its status line showed "Beat #N"),
  refused (an ephemeral ⚠️ answer, by reason: "limits" are the per-user limits and the queue cap, "queue down"
  is redis being away while the command came in), or unanswered (no answer at all: a bug).
* accepted jobs end as posted (a result message with files), failed (a ❌ message, by error code) or lost
  (neither: a bug). duplicated: jobs whose result was created as more than one message (a bug); a repeated
  create that Discord answered from its nonce with the same message is counted apart, as it is harmless.
* latency: from the command's dispatch to the request that posted its result. The ack is the command's first
  answer to Discord (it must come within 3 s or Discord shows "the application did not respond").
* fairness: each user's p50 latency (min / median / max over users), and Jain's index over users' mean latencies
  (1.0 = every user waited the same; 1/users = one user got all the service).
* Discord calls: every request the bot made after start-up, per accepted job; edits split into interaction-token
  edits (``/webhooks/…/@original``) and channel message edits. Peaks are the most requests seen in any 1 s
  window, against Discord's ~50/s per bot, and the most channel edits of one channel in any 5 s window, against
  Discord's 5 per 5 s (token edits are not bound by that one, but count in the 50/s).

Exits 1 if any job was lost or duplicated, or any command unanswered. ``--keep`` keeps the run's folder (the
bot's and workers' logs, the database); it is kept anyway when the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arq.connections import ArqRedis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import JobStatus
from beatforge.fleet import read_workers
from beatforge.log import ContextFilter, JsonFormatter
from beatforge.queue import connect
from bot.app import Beatforge
from migrations.runner import upgrade_locked
from storage import jobs
from storage.db import make_engine, make_sessionmaker
from storage.jobs import JobView
from storage.models import Generation
from tests.support.discord_harness import (
    FakeDiscord,
    RecordedRequest,
    connected,
    dispatch_gateway,
    settle,
    slash_command_payload,
)
from tests.support.processes import settings_env
from tests.support.redis_server import RedisServer

#: Simulated users' Discord ids are this plus their index.
USER_BASE = 500_000_000_000_000_000
PROMPTS = ("boom bap, dusty drums", "dark trap, 808s", "lofi piano, vinyl", "house, four on the floor", "drill")
#: Where in the arrival spread the faults happen (fractions of ``--spread-s``).
KILL_AT, REDIS_RESTART_AT = 0.3, 0.6
#: The kill's replacement starts this long after; redis stays down this long.
REPLACE_AFTER_S, REDIS_DOWN_S = 5.0, 2.0
#: Discord's limits the peaks are compared with.
GLOBAL_PER_S, CHANNEL_EDITS, CHANNEL_WINDOW_S, ACK_DEADLINE_S = 50, 5, 5.0, 3.0

ANNOUNCED = re.compile(r"Beat #(\d+)")
RESULT = re.compile(r"\*\*Beat #(\d+)\*\*")
FAILURE = re.compile(r"^❌ Beat #(\d+) — |couldn't deliver Beat #(\d+)")
TOKEN = re.compile(r"^/(?:interactions/\d+|webhooks/\d+)/([^/]+)")
CHANNEL_EDIT = re.compile(r"^/channels/(\d+)/messages/\d+$")
#: What a status edit says, by the words that tell it apart (``bot/messages.py``), first match wins.
EDIT_KINDS = (
    ("retrying", "retry / worker stopped"),
    ("worker stopped", "retry / worker stopped"),
    ("in line", "place in line"),
    ("starting", "starting"),
    ("loading the model", "loading"),
    ("generating", "generating %"),
    ("drawing the cover", "drawing"),
    ("saving", "saving"),
    ("✅", "ready"),
    ("❌", "failed"),
)
#: arq's log lines for a job starting and finishing, as the JSON log escapes them: "→ <queue id>:", "← <queue id>:".
STARTED, FINISHED = re.compile(r"\\u2192 ([^:\s]+):"), re.compile(r"\\u2190 ([^:\s]+):")
LIMIT_REFUSALS = ("You've queued", "You already have", "The queue is full", "can be up to")
QUEUE_DOWN = "queue is unreachable"
#: What a job row says when redis refused it as it was queued (the user was told at once: a refusal).
ENQUEUE_FAILED = "the job queue is unreachable"


# ---------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class Command:
    """One /beat a simulated user sends, ``at`` seconds after the traffic starts."""

    at: float
    user: int
    bursty: bool


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder), each at least 1 while there are enough."""
    floor = 1 if total >= len(weights) else 0
    rest = total - floor * len(weights)
    shares = [rest * w / sum(weights) for w in weights]
    counts = [floor + int(s) for s in shares]
    by_remainder = sorted(range(len(weights)), key=lambda i: shares[i] - int(shares[i]), reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def burst_times(n: int, spread_s: float, rng: random.Random) -> list[float]:
    """``n`` commands in bursts of 4-12, each burst's commands 50-300 ms apart, bursts at random times."""
    times: list[float] = []
    while len(times) < n:
        at = rng.uniform(0, spread_s)
        for _ in range(min(n - len(times), rng.randint(4, 12))):
            times.append(min(at, spread_s))
            at += rng.uniform(0.05, 0.3)
    return times


def plan(n_jobs: int, n_users: int, spread_s: float, rng: random.Random) -> list[Command]:
    """Who sends what when: a quarter of the users bursty (and heavier), the rest at steady random times."""
    bursty = set(rng.sample(range(n_users), max(1, n_users // 4)))
    weights = [rng.uniform(2.0, 4.0) if u in bursty else rng.uniform(0.5, 1.5) for u in range(n_users)]
    commands = []
    for user, count in enumerate(allocate(n_jobs, weights)):
        if user in bursty:
            times = burst_times(count, spread_s, rng)
        else:
            times = [rng.uniform(0, spread_s) for _ in range(count)]
        commands += [Command(at, user, user in bursty) for at in times]
    return sorted(commands, key=lambda c: c.at)


# ---------------------------------------------------------------------------------------------------- processes


@dataclass
class Fleet:
    """The worker processes, each logging to its own file in ``logs``."""

    settings: Settings
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def log(self, index: int) -> Path:
        return self.logs / f"worker-{index}.log"

    def start(self) -> subprocess.Popen[bytes]:
        log = self.log(len(self.procs)).open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"],
            cwd=ROOT,
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for proc in self.alive():
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def save_tiny_model(directory: Path) -> Path:
    """The tiny random MusicGen, saved by a child process so this one (the bot's) never imports torch."""
    code = (
        "import sys, pathlib; from generation.music.tiny import save_tiny_musicgen; "
        "save_tiny_musicgen(pathlib.Path(sys.argv[1]))"
    )
    subprocess.run([sys.executable, "-c", code, str(directory)], cwd=ROOT, check=True, capture_output=True)
    return directory


def bot_logging(path: Path) -> None:
    """The bot's log (JSON lines with job ids) goes to a file, not the terminal the table is printed on."""
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("discord.http", "discord.gateway", "discord.client", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class Sent:
    """A command as dispatched to the bot."""

    command: Command
    token: str
    dispatched: float


@dataclass
class Faults:
    """What was done to the system, when (seconds after the traffic started)."""

    killed_pid: int | None = None
    killed_at: float | None = None
    killed_running: int = 0
    replaced_at: float | None = None
    redis_down_at: float | None = None
    redis_up_at: float | None = None


async def wait_for_workers(redis: ArqRedis, count: int, within_s: float) -> None:
    """Until ``count`` workers report themselves in redis (models loading can take a minute on busy cores)."""
    deadline = time.monotonic() + within_s
    while len(await read_workers(redis)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} workers came up within {within_s:.0f} s")
        await asyncio.sleep(0.5)


async def send_commands(bot: Beatforge, commands: Sequence[Command], start: float, sent: list[Sent]) -> None:
    """Dispatch each command at its time, as Discord's gateway would deliver it."""
    for number, command in enumerate(commands):
        delay = start + command.at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        options = {"prompt": PROMPTS[number % len(PROMPTS)], "duration": 1, "seed": number}
        payload = slash_command_payload("beat", options, bot=bot, user_id=USER_BASE + command.user)
        sent.append(Sent(command, str(payload["token"]), time.monotonic()))
        dispatch_gateway(bot, "INTERACTION_CREATE", payload)


def open_jobs(log: Path) -> set[str]:
    """Queue ids of the jobs a worker's log says it started (arq's "→" line) and has not finished ("←")."""
    text = log.read_text(errors="replace")
    return set(STARTED.findall(text)) - set(FINISHED.findall(text))


async def running_in(sessions: async_sessionmaker[AsyncSession], queue_ids: set[str]) -> int:
    """How many of these jobs the database calls running (started, not finished)."""
    if not queue_ids:
        return 0
    async with sessions() as session:
        rows = await session.scalars(
            select(Generation.id).where(
                Generation.queue_job_id.in_(queue_ids), Generation.status == JobStatus.RUNNING.value
            )
        )
        return len(rows.all())


async def busy_worker(fleet: Fleet, sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int] | None:
    """A live worker (its index in the fleet) in the middle of generating, and how many jobs it is running."""
    for index, proc in enumerate(fleet.procs):
        if proc.poll() is None:
            running = await running_in(sessions, open_jobs(fleet.log(index)))
            if running:
                return index, running
    return None


async def kill_a_busy_worker(
    fleet: Fleet, sessions: async_sessionmaker[AsyncSession], at: float, start: float, faults: Faults
) -> None:
    """At ``at`` s, SIGKILL a worker that is running jobs (its log says it started them, the database that they
    run), and start a replacement 5 s later."""
    await asyncio.sleep(max(0.0, start + at - time.monotonic()))
    found = None
    deadline = time.monotonic() + 60
    while found is None and time.monotonic() < deadline:
        found = await busy_worker(fleet, sessions)
        if found is None:
            await asyncio.sleep(0.05)
    index, running = found or (fleet.procs.index(fleet.alive()[0]), 0)  # none busy for a minute: any one
    victim = fleet.procs[index]
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait)
    faults.killed_pid, faults.killed_at, faults.killed_running = victim.pid, time.monotonic() - start, running
    await asyncio.sleep(REPLACE_AFTER_S)
    fleet.start()
    faults.replaced_at = time.monotonic() - start


async def restart_redis(server: RedisServer, at: float, start: float, faults: Faults) -> None:
    """At ``at`` s, stop redis (SIGTERM), leave it down 2 s, start it again on the same port and file."""
    await asyncio.sleep(max(0.0, start + at - time.monotonic()))
    faults.redis_down_at = time.monotonic() - start
    await asyncio.to_thread(server.restart, down_s=REDIS_DOWN_S)
    faults.redis_up_at = time.monotonic() - start


async def read_rows(sessions: async_sessionmaker[AsyncSession]) -> list[JobView]:
    async with sessions() as session:
        ids = (await session.scalars(select(Generation.id).order_by(Generation.id))).all()
        return [await jobs.get_job(session, job_id) for job_id in ids]


async def drain(
    bot: Beatforge, sessions: async_sessionmaker[AsyncSession], sender: asyncio.Task[None], until: float
) -> bool:
    """Until every command was dispatched and answered and every job row is delivered (True), or ``until`` passes
    (False)."""
    await asyncio.wait([sender], timeout=max(0.0, until - time.monotonic()))
    await settle(bot, timeout=max(0.1, until - time.monotonic()), raise_on_timeout=False)  # the last commands' rows
    while time.monotonic() < until:
        async with sessions() as session:
            undelivered = await session.scalar(select(Generation.id).where(Generation.delivered_at.is_(None)).limit(1))
        if undelivered is None:
            return True
        await asyncio.sleep(1.0)
    return False


# ---------------------------------------------------------------------------------------------------- the numbers


def content_of(request: RecordedRequest) -> str:
    """The message text a request sent (an interaction callback carries it under ``data``)."""
    body = request.json if isinstance(request.json, dict) else {}
    data = body["data"] if isinstance(body.get("data"), dict) else body
    return str(data.get("content") or "")


def ok(request: RecordedRequest) -> bool:
    return 200 <= request.status < 300


@dataclass
class Outcome:
    """What the fake saw for one job."""

    result_ids: set[str] = field(default_factory=set)
    result_attempts: int = 0
    first_result_at: float | None = None
    failure: str | None = None


def outcomes(requests: Iterable[RecordedRequest]) -> dict[int, Outcome]:
    """Result posts and failure messages per job number, from every successful request."""
    seen: dict[int, Outcome] = defaultdict(Outcome)
    for request in requests:
        text = content_of(request)
        if not ok(request) or not text:
            continue
        result = RESULT.search(text)
        if request.method == "POST" and request.files and result:
            outcome = seen[int(result.group(1))]
            outcome.result_attempts += 1
            if isinstance(request.response, dict) and "id" in request.response:
                outcome.result_ids.add(str(request.response["id"]))
            if outcome.first_result_at is None:
                outcome.first_result_at = request.timestamp
        elif failure := FAILURE.search(text):
            outcome = seen[int(failure.group(1) or failure.group(2))]
            outcome.failure = outcome.failure or text
    return seen


def answers(requests: Iterable[RecordedRequest], sent: Sequence[Sent]) -> tuple[dict[str, int], dict[str, str]]:
    """Per command token: the job number its answer announced, or the refusal it got instead."""
    tokens = {s.token for s in sent}
    announced: dict[str, int] = {}
    refused: dict[str, str] = {}
    for request in requests:
        match = TOKEN.match(request.path)
        if not ok(request) or match is None or match.group(1) not in tokens:
            continue
        token, text = match.group(1), content_of(request)
        job = ANNOUNCED.search(text)
        if job and token not in announced and token not in refused:
            announced[token] = int(job.group(1))
        elif text.startswith(("⚠️", "⛔", "💥")) and token not in announced:
            refused.setdefault(token, text)
    return announced, refused


def first_acks(requests: Iterable[RecordedRequest], tokens: set[str]) -> dict[str, float]:
    """When each command's interaction was first answered (deferred or refused)."""
    acks: dict[str, float] = {}
    for request in requests:
        match = TOKEN.match(request.path)
        if match and request.path.endswith("/callback") and match.group(1) in tokens:
            acks.setdefault(match.group(1), request.timestamp)
    return acks


def refusal_reason(text: str) -> str:
    if any(marker in text for marker in LIMIT_REFUSALS):
        return "limits"
    if QUEUE_DOWN in text:
        return "queue down"
    return "other: " + text[:60]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: (Σx)² / (n·Σx²), 1.0 when all equal."""
    squares = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * squares) if squares else math.nan


def peak_in_window(times: Sequence[float], window_s: float) -> int:
    """The most events within any ``window_s``-long window."""
    return peak_window(times, window_s)[0]


def peak_window(times: Sequence[float], window_s: float) -> tuple[int, float]:
    """The most events within any ``window_s``-long window, and when that window starts."""
    ordered, best, start, left = sorted(times), 0, 0.0, 0
    for right, t in enumerate(ordered):
        while t - ordered[left] >= window_s:
            left += 1
        if right - left + 1 > best:
            best, start = right - left + 1, ordered[left]
    return best, start


def request_kind(request: RecordedRequest) -> str:
    """What a request was for, to say what the busiest second was made of."""
    if request.path.endswith("/callback"):
        return "command answer"
    if request.method == "PATCH":
        return f"edit: {edit_kind(content_of(request))}"
    if request.method == "POST":
        return "message create"
    return f"{request.method} other"


@dataclass
class Report:
    rows: list[tuple[str, str]] = field(default_factory=list)
    failed: bool = False

    def section(self, title: str) -> None:
        self.rows.append((title, ""))

    def add(self, name: str, value: object) -> None:
        self.rows.append(("  " + name, str(value)))

    def print(self) -> None:
        width = max(len(name) for name, _ in self.rows)
        for name, value in self.rows:
            print(f"{name:<{width}}  {value}")


def with_ids(found: Sequence[JobView]) -> str:
    """A count, and the first job numbers when there are any."""
    return f"{len(found)} (jobs {', '.join(str(r.id) for r in found[:20])})" if found else "0"


def seconds(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} s"


def build_report(
    requests: Sequence[RecordedRequest], sent: Sequence[Sent], rows: Sequence[JobView], faults: Faults
) -> Report:
    report = Report()
    announced, refused = answers(requests, sent)
    by_job = {job: s for s in sent if (job := announced.get(s.token)) is not None}
    seen = outcomes(requests)
    enqueue_failures = {r.id for r in rows if r.error == ENQUEUE_FAILED and r.started_at is None}
    accepted = [r for r in rows if r.id not in enqueue_failures]
    unanswered = [s for s in sent if s.token not in announced and s.token not in refused]

    report.section("commands")
    report.add("sent (/beat)", len(sent))
    report.add("accepted", len(announced))
    reasons = Counter(refusal_reason(refused[s.token]) for s in sent if s.token in refused)
    report.add("refused (limits)", reasons.pop("limits", 0))
    report.add("refused (queue down)", reasons.pop("queue down", 0))
    for reason, count in sorted(reasons.items()):
        report.add(f"refused ({reason})", count)
    report.add("unanswered (must be 0)", len(unanswered))
    acks = first_acks(requests, {s.token for s in sent})
    ack_s = [acks[s.token] - s.dispatched for s in sent if s.token in acks]
    report.add(
        "ack p50 / p99 / max",
        f"{seconds(percentile(ack_s, 50))} / {seconds(percentile(ack_s, 99))} / "
        f"{seconds(max(ack_s, default=math.nan))}",
    )
    report.add(f"acks later than {ACK_DEADLINE_S:g} s", sum(1 for a in ack_s if a > ACK_DEADLINE_S))

    posted = [r for r in accepted if seen.get(r.id, Outcome()).result_ids]
    failed = [r for r in accepted if not seen.get(r.id, Outcome()).result_ids and seen.get(r.id, Outcome()).failure]
    lost = [r for r in accepted if r not in posted and r not in failed]
    duplicated = [r for r in posted if len(seen[r.id].result_ids) > 1]
    repeats = sum(seen[r.id].result_attempts - len(seen[r.id].result_ids) for r in posted)
    codes = Counter(str(r.error_code.value if r.error_code else "none") for r in failed)
    report.section("jobs")
    report.add("accepted (job rows queued)", len(accepted))
    report.add("  of them without a status line", len([r for r in accepted if r.id not in by_job]))
    report.add("posted", len(posted))
    report.add(
        "failed", f"{len(failed)}" + (f" ({', '.join(f'{c}: {n}' for c, n in sorted(codes.items()))})" if codes else "")
    )
    report.add("lost (must be 0)", with_ids(lost))
    report.add("duplicated (must be 0)", with_ids(duplicated))
    report.add("result creates answered from the nonce", repeats)
    report.add("retried after the worker kill (tries > 1)", sum(1 for r in accepted if r.attempts > 1))
    report.add("status lines not ending ✅/❌", stale_status_lines(accepted, requests))
    report.failed = bool(lost or duplicated or unanswered)

    latencies = {
        r.id: first - by_job[r.id].dispatched
        for r in posted
        if r.id in by_job and (first := seen[r.id].first_result_at) is not None
    }
    add_latency(report, latencies, by_job)
    add_discord_calls(report, requests, max(1, len(accepted)))
    add_faults(report, faults)
    return report


def stale_status_lines(accepted: Sequence[JobView], requests: Sequence[RecordedRequest]) -> int:
    """Jobs whose status line's last successful edit is not the final word (✅ ready / ❌ failed / ⚠️)."""
    last: dict[int, str] = {}
    for request in requests:
        text = content_of(request) if request.method == "PATCH" and ok(request) else ""
        if job := ANNOUNCED.search(text):
            last[int(job.group(1))] = text
    return sum(1 for r in accepted if not last.get(r.id, "").startswith(("✅", "❌", "⚠️")))


def spread(values: Sequence[float]) -> str:
    """min / median / max."""
    if not values:
        return "n/a"
    return f"{seconds(min(values))} / {seconds(statistics.median(values))} / {seconds(max(values))}"


def add_latency(report: Report, latencies: dict[int, float], by_job: dict[int, Sent]) -> None:
    values = list(latencies.values())
    report.section("command → result latency")
    report.add(
        "p50 / p99 / max",
        f"{seconds(percentile(values, 50))} / {seconds(percentile(values, 99))} / "
        f"{seconds(max(values, default=math.nan))}",
    )
    per_user: dict[int, list[float]] = defaultdict(list)
    for job, value in latencies.items():
        per_user[by_job[job].command.user].append(value)
    bursty_users = {s.command.user for s in by_job.values() if s.command.bursty}
    report.add("per-user p50: min / median / max", spread([statistics.median(v) for v in per_user.values()]))
    means = [statistics.fmean(v) for v in per_user.values()]
    report.add("Jain's index over users' means", f"{jain(means):.3f} ({len(means)} users)")
    steady = {user: v for user, v in per_user.items() if user not in bursty_users}
    steady_means = [statistics.fmean(v) for v in steady.values()]
    report.add("  the same, steady users only", f"{jain(steady_means):.3f} ({len(steady_means)} users)")
    bursty_values = [v for user, vs in per_user.items() if user in bursty_users for v in vs]
    steady_values = [v for vs in steady.values() for v in vs]
    report.add(
        "p50 bursty users / steady users",
        f"{seconds(percentile(bursty_values, 50))} / {seconds(percentile(steady_values, 50))}",
    )


def add_discord_calls(report: Report, requests: Sequence[RecordedRequest], accepted: int) -> None:
    token_edits = [r for r in requests if r.method == "PATCH" and r.path.startswith("/webhooks/")]
    channel_edits = [r for r in requests if r.method == "PATCH" and CHANNEL_EDIT.match(r.path)]
    by_channel: dict[str, list[float]] = defaultdict(list)
    for request in channel_edits:
        match = CHANNEL_EDIT.match(request.path)
        assert match is not None
        by_channel[match.group(1)].append(request.timestamp)
    errors = Counter(r.status for r in requests if not ok(r))
    report.section("Discord calls")
    report.add("requests (after login)", len(requests))
    report.add("requests per accepted job", f"{len(requests) / accepted:.2f}")
    report.add(
        "edits per job (token + channel)",
        f"{(len(token_edits) + len(channel_edits)) / accepted:.2f} "
        f"({len(token_edits) / accepted:.2f} + {len(channel_edits) / accepted:.2f})",
    )
    kinds = Counter(edit_kind(content_of(r)) for r in token_edits + channel_edits if ok(r))
    report.add("edits per job by what they said", ", ".join(f"{k} {n / accepted:.2f}" for k, n in kinds.most_common()))
    report.add("error answers", ", ".join(f"{s}: {n}" for s, n in sorted(errors.items())) or "none")
    peak, start = peak_window([r.timestamp for r in requests], 1.0)
    report.add("peak requests in 1 s, all", peak)
    busiest = Counter(request_kind(r) for r in requests if start <= r.timestamp < start + 1.0)
    report.add("  made of", ", ".join(f"{kind} {n}" for kind, n in busiest.most_common()))
    # Interaction endpoints (callbacks, and edits and follow-ups through an interaction's token) are not bound
    # to the bot's global rate limit; everything sent with the bot token is.
    bot_token = [r.timestamp for r in requests if not r.path.startswith(("/interactions/", "/webhooks/"))]
    report.add(
        "peak bot-token requests in 1 s", f"{peak_in_window(bot_token, 1.0)} (Discord: ~{GLOBAL_PER_S}/s per bot)"
    )
    report.add("peak token edits in 1 s", peak_in_window([r.timestamp for r in token_edits], 1.0))
    peak_1 = max((peak_in_window(t, 1.0) for t in by_channel.values()), default=0)
    peak_5 = max((peak_in_window(t, CHANNEL_WINDOW_S) for t in by_channel.values()), default=0)
    report.add("peak channel edits, one channel, 1 s", peak_1)
    report.add(
        f"peak channel edits, one channel, {CHANNEL_WINDOW_S:g} s",
        f"{peak_5} (Discord: {CHANNEL_EDITS} per {CHANNEL_WINDOW_S:g} s)",
    )


def edit_kind(text: str) -> str:
    return next((kind for words, kind in EDIT_KINDS if words in text), "other")


def add_faults(report: Report, faults: Faults) -> None:
    def at(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f} s"

    report.section("faults (seconds after the first command)")
    report.add(
        "worker SIGKILLed", f"pid {faults.killed_pid} at {at(faults.killed_at)}, running {faults.killed_running} job(s)"
    )
    report.add("replacement started", at(faults.replaced_at))
    report.add("redis stopped / started", f"{at(faults.redis_down_at)} / {at(faults.redis_up_at)}")


# ---------------------------------------------------------------------------------------------------- main


def make_settings(args: argparse.Namespace, run_dir: Path, redis_url: str, model: Path) -> Settings:
    return Settings(
        _env_file=None,
        discord_token=None,
        redis_url=redis_url,
        database_url=f"sqlite+aiosqlite:///{run_dir / 'beatforge.db'}",
        artifact_dir=run_dir / "artifacts",
        model_registry_file=run_dir / "models.json",
        default_model=str(model),
        device="cpu",
        default_duration_s=1.0,
        cover_mode="procedural",
        cover_size=64,
        job_heartbeat_s=0.5,
        job_stale_after_s=3.0,
        reconcile_interval_s=1.0,
        worker_presence_interval_s=0.5,
        jobs_per_hour=args.jobs_per_hour,
        concurrent_jobs=args.concurrent_jobs,
        queue_cap=args.queue_cap,
        log_level="INFO",
        log_json=True,
    )


async def soak(args: argparse.Namespace, run_dir: Path) -> Report:
    rng = random.Random(args.seed)
    commands = plan(args.jobs, args.users, args.spread_s, rng)
    server = RedisServer(run_dir / "redis", persistent=True)
    server.workdir.mkdir()
    server.start()
    model = save_tiny_model(run_dir / "tiny-musicgen")
    settings = make_settings(args, run_dir, server.url, model)
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    redis = await connect(settings)
    fleet = Fleet(settings, run_dir)
    bot_logging(run_dir / "bot.log")
    try:
        for _ in range(args.workers):
            fleet.start()
        await wait_for_workers(redis, args.workers, within_s=300)
        bot = Beatforge(settings=settings, redis=redis, sessions=sessions)
        async with FakeDiscord() as fake, connected(bot, fake):
            first = len(fake.requests)
            sent: list[Sent] = []
            faults = Faults()
            start = time.monotonic()
            sender = asyncio.create_task(send_commands(bot, commands, start, sent))
            chaos = [
                sender,
                asyncio.create_task(kill_a_busy_worker(fleet, sessions, KILL_AT * args.spread_s, start, faults)),
                asyncio.create_task(restart_redis(server, REDIS_RESTART_AT * args.spread_s, start, faults)),
            ]
            drained = await drain(bot, sessions, sender, until=start + args.spread_s + args.drain_s)
            elapsed = time.monotonic() - start
            for task in chaos:
                task.cancel()
            await asyncio.gather(*chaos, return_exceptions=True)
            await asyncio.sleep(1.0)  # a last status edit still on its way
            requests = list(fake.requests[first:])
            rows = await read_rows(sessions)
        report = build_report(requests, sent, rows, faults)
        report.section("run")
        report.add("all delivered", "yes" if drained else f"no: stopped at the deadline ({args.drain_s:g} s drain)")
        report.add("first command → last delivery", f"{elapsed:.0f} s")
        return report
    finally:
        fleet.stop()
        await redis.aclose()
        await engine.dispose()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="/beat commands in all (default 1000)")
    parser.add_argument("--users", type=int, default=40, help="simulated users (default 40)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="seeds who sends what when (default 1)")
    parser.add_argument(
        "--spread-s", type=float, default=None, help="arrivals spread over this long (default jobs/2 s)"
    )
    parser.add_argument("--drain-s", type=float, default=300, help="after the last arrival, wait this long at most")
    parser.add_argument("--jobs-per-hour", type=int, default=10_000, help="per-user limit (default: out of the way)")
    parser.add_argument("--concurrent-jobs", type=int, default=100, help="per-user limit (default: out of the way)")
    parser.add_argument("--queue-cap", type=int, default=100_000, help="queue cap (default: out of the way)")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs, database)")
    args = parser.parse_args()
    if args.spread_s is None:
        args.spread_s = args.jobs / 2
    run_dir = Path(tempfile.mkdtemp(prefix="beatforge-soak-"))
    began = time.monotonic()
    try:
        report = asyncio.run(soak(args, run_dir))
    except BaseException:
        print(f"the run's folder is kept: {run_dir}", file=sys.stderr)
        raise
    report.section("wall time")
    report.add("whole run incl. start-up", f"{time.monotonic() - began:.0f} s")
    report.print()
    if args.keep or report.failed:
        print(f"\nthe run's folder is kept: {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
