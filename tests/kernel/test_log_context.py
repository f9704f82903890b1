"""The log context: ids bound once appear on every line logged inside it, in tasks and threads started there,
and never on another job's lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from beatforge.log import ContextFilter, JsonFormatter, TextFormatter, bind, current_context, log_context

log = logging.getLogger("tests.log_context")


class Lines:
    """What a JSON handler on ``log`` wrote, one parsed object per line."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def __call__(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def lines() -> Iterator[Lines]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield Lines(stream)
    log.removeHandler(handler)


def test_a_line_inside_the_context_carries_the_ids_and_one_after_it_does_not(lines: Lines) -> None:
    with log_context(job_id=12, user_id=7, guild_id=None):
        log.info("inside")
    log.info("after")
    inside, after = lines()
    assert (inside["msg"], inside["job_id"], inside["user_id"]) == ("inside", 12, 7)
    assert "guild_id" not in inside  # None is dropped (a DM has no server)
    assert not {"job_id", "user_id"} & set(after)


def test_contexts_nest_and_extra_wins_for_its_own_line(lines: Lines) -> None:
    with log_context(user_id=7, guild_id=3):
        with log_context(job_id=12, guild_id=4):
            log.info("inner", extra={"job_id": 99, "stage": "saving"})
        log.info("outer")
    inner, outer = lines()
    assert (inner["user_id"], inner["guild_id"], inner["job_id"], inner["stage"]) == (7, 4, 99, "saving")
    assert (outer["user_id"], outer["guild_id"]) == (7, 3) and "job_id" not in outer


async def test_tasks_and_threads_started_inside_inherit_it(lines: Lines) -> None:
    async def child() -> None:
        await asyncio.sleep(0)
        log.info("in a task")

    with log_context(job_id=5, user_id=8):
        task = asyncio.create_task(child())
        await asyncio.to_thread(log.info, "in a thread")
    log.info("outside")  # logged while the task may still be running: the task kept its own copy
    await task
    by_msg = {line["msg"]: line for line in lines()}
    assert (by_msg["in a task"]["job_id"], by_msg["in a task"]["user_id"]) == (5, 8)
    assert by_msg["in a thread"]["job_id"] == 5
    assert "job_id" not in by_msg["outside"]


async def test_concurrent_jobs_never_see_each_others_ids(lines: Lines) -> None:
    async def job(job_id: int) -> None:
        bind(job_id=job_id)  # a job function learns its id after validating its payload
        for step in range(3):
            await asyncio.sleep(0)
            log.info("step %d", step)

    await asyncio.gather(job(1), job(2))
    assert current_context() == {}  # gather ran each job in its own task: the binding stayed there
    got = [(line["job_id"], line["msg"]) for line in lines()]
    assert sorted(got) == [(j, f"step {s}") for j in (1, 2) for s in range(3)]


def test_a_record_stamped_when_handled_keeps_its_ids_when_formatted_later() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "queued", (), None)
    with log_context(job_id=3):
        assert ContextFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["job_id"] == 3  # formatted outside the context
    assert "log_context" not in json.loads(JsonFormatter().format(record))
    assert TextFormatter().format(record).endswith("queued job_id=3")
