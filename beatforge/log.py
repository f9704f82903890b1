"""Structured logging for every entrypoint: one JSON object per line, stdlib ``logging`` API.

Every line of a job's life carries its ids. Code that works on a job opens a log context once, and every
record logged inside it (by any logger: ours, arq's, discord's) gets those fields, without passing
``extra=`` at each call::

    from beatforge.log import log_context

    with log_context(job_id=job.id, user_id=job.user_id, guild_id=job.guild_id):
        log.info("job started")          # {"msg": "job started", "job_id": 12, "user_id": 7, "guild_id": 3, ...}
        await run_the_job()              # and every line logged below, however deep

The context lives in a :mod:`contextvars` variable, so it follows the code, not the thread or the task:
asyncio tasks created inside the ``with`` block (``asyncio.create_task``, ``gather``) and functions run with
``asyncio.to_thread`` start with a copy of it; concurrent jobs in one event loop never see each other's ids;
and leaving the block restores whatever was bound before (contexts nest, inner values win). Fields passed
with ``extra={...}`` on one call win over the context's for that line. Values of None are dropped, so
``log_context(guild_id=job.guild_id)`` is safe for DMs.

:func:`bind` adds fields until the current task (or the context it runs in) ends, for code that cannot wrap
itself in a ``with``, e.g. a job function that learns its job id after validating its payload; arq runs each
job in its own task, so a job's binding never leaks into the next job. :func:`current_context` returns the
fields in force (to hand them to a thread started by hand, say).

The worker side wires this in ``generation/worker/run.py`` (``run_job``: ``job_id``, ``user_id``,
``guild_id`` once the request is validated); the bot side in ``bot/jobs.py`` (``JobService.submit`` and
``enqueue``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}

_EMPTY: Mapping[str, object] = MappingProxyType({})
#: The fields every record logged in the current context carries. Immutable, so a copied context (a new task)
#: can never change its parent's fields, only replace its own.
_context: ContextVar[Mapping[str, object]] = ContextVar("beatforge_log_context", default=_EMPTY)


def current_context() -> Mapping[str, object]:
    """The fields records logged here carry (read-only)."""
    return _context.get()


def bind(**fields: object) -> None:
    """Add ``fields`` to every record logged from here until the current task or context ends.

    None values are dropped. Prefer :func:`log_context` where a ``with`` block fits: it also unbinds.
    """
    _context.set(MappingProxyType({**_context.get(), **_drop_none(fields)}))


@contextmanager
def log_context(**fields: object) -> Iterator[Mapping[str, object]]:
    """Every record logged inside the block (and in tasks and threads started from it) carries ``fields``.

    Nests: inner fields are added to (and override) outer ones, and leaving the block restores the outer set.
    None values are dropped.
    """
    token = _context.set(MappingProxyType({**_context.get(), **_drop_none(fields)}))
    try:
        yield _context.get()
    finally:
        _context.reset(token)


def _drop_none(fields: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in fields.items() if v is not None}


def _fields_of(record: logging.LogRecord) -> Mapping[str, object]:
    """The context a record was logged in: stamped by :class:`ContextFilter` when it was handled, else (a
    handler without the filter, formatting as it emits) the current one."""
    stamped = getattr(record, CONTEXT_ATTR, None)
    return stamped if isinstance(stamped, Mapping) else _context.get()


#: The record attribute :class:`ContextFilter` stores the context in (one attribute, so ``extra=`` may still name
#: any field: logging refuses an ``extra`` key that is already an attribute of the record).
CONTEXT_ATTR = "log_context"


class ContextFilter(logging.Filter):
    """Stamps the log context on each record as it is handled, in the thread and task that logged it, so a
    handler that formats later or elsewhere (a queue, a test's captured records) still sees the right ids."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, CONTEXT_ATTR):
            setattr(record, CONTEXT_ATTR, _context.get())
        return True


class JsonFormatter(logging.Formatter):
    """Renders a record, the log context's fields and any ``extra={...}`` fields as one JSON line, so logs are
    greppable by field (``job_id`` above all)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields_of(record))
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS and k != CONTEXT_ATTR})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the log context's fields appended (``job_id=12 user_id=7``)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields_of(record)
        return line + "".join(f" {k}={v}" for k, v in fields.items()) if fields else line


def setup_logging(*, level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # discord.http logs every request at INFO/DEBUG; arq logs each job itself.
    logging.getLogger("discord.http").setLevel(logging.WARNING)
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)
