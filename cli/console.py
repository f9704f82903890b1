"""How the ``beatforge`` command talks to a terminal: results, progress, and which log lines get through.

A person at a terminal wants one line per file written (stdout), a moving bar while a beat is made (stderr),
and nothing else unless something is wrong. A script wants the result as JSON on stdout and greppable JSON
logs on stderr (``--json``). The global flags that choose between them live on every sub-command, so
``beatforge generate x --json`` and ``beatforge --json generate x`` mean the same; :func:`add_output_flags`
puts them there and :func:`output_of` reads them back.

Library chatter (transformers' config warnings, diffusers, numba, Python ``warnings``) and INFO logs are
kept out unless ``--verbose``: :func:`cli_logging` sets that up for one command and undoes it afterwards, so
running ``main`` twice in one process (the tests) starts from the same state each time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from beatforge.log import CONTEXT_ATTR, setup_logging

#: Top-level packages whose loggers are the CLI's own; every other logger is a library's.
OUR_PACKAGES = frozenset({"beatforge", "bot", "cli", "generation", "storage", "migrations"})

#: Libraries that install their own stderr handler (and stop propagating), so the root handler's filter never
#: sees their records: their logger level is what keeps them quiet. The env variables cover a library that is
#: first imported (and configures its logger from them) only once the command runs.
_SELF_HANDLED = {"transformers": "TRANSFORMERS_VERBOSITY", "diffusers": "DIFFUSERS_VERBOSITY"}

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


@dataclass(frozen=True, slots=True)
class Output:
    """What the user asked of the terminal (the global flags)."""

    json: bool = False
    verbose: bool = False
    progress: str = "auto"  # auto: only on a terminal; always; never


def add_output_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Add ``--json``, ``--verbose`` and ``--progress`` to ``parser`` and, recursively, to its sub-commands.

    On sub-commands the defaults are SUPPRESS, so a flag given before the command is not reset by the
    sub-command's default. A sub-command that already has its own ``--json`` (``status``) keeps it; main
    reads either.
    """
    default: object = argparse.SUPPRESS
    group = parser.add_argument_group("output")
    if "--json" not in parser._option_string_actions:
        group.add_argument(
            "--json",
            dest="json_output",
            action="store_true",
            default=False if top else default,
            help="print the result as JSON on stdout and log JSON lines on stderr (for scripts)",
        )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else default,
        help="also show INFO logs and libraries' warnings",
    )
    group.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto" if top else default,
        help="progress bar on stderr: auto (only on a terminal), always, never",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                add_output_flags(sub, top=False)


def output_of(args: argparse.Namespace) -> Output:
    """The global flags, wherever they were given (a sub-command's own ``--json`` counts)."""
    as_json = bool(getattr(args, "json_output", False) or getattr(args, "json", False))
    return Output(json=as_json, verbose=bool(args.verbose), progress=str(args.progress))


class CliFormatter(logging.Formatter):
    """One short line per record: ``beatforge: warning: no LLM is configured``, plus the log context and any
    ``extra`` fields as ``key=value``. Tracebacks only with ``--verbose``: an error stays one sentence."""

    def __init__(self, *, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        fields = {**_context_of(record), **{k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS}}
        fields.pop(CONTEXT_ATTR, None)
        where = f" ({record.name})" if self.verbose else ""
        message = record.getMessage()
        if record.name == "py.warnings":  # "file:line: Category: text" and then the source line: keep the first
            message = message.strip().splitlines()[0]
        line = f"beatforge: {record.levelname.lower()}: {message}{where}"
        line += "".join(f" {k}={v}" for k, v in fields.items())
        if self.verbose and record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _context_of(record: logging.LogRecord) -> Mapping[str, object]:
    stamped = getattr(record, CONTEXT_ATTR, None)
    return stamped if isinstance(stamped, Mapping) else {}


class _LibraryFilter(logging.Filter):
    """Lets a library's record through only at ERROR and above; ours at WARNING (the root level)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OUR_PACKAGES or record.levelno >= logging.ERROR


@contextmanager
def cli_logging(output: Output, *, level: str) -> Iterator[None]:
    """Logging for one interactive command (not ``bot``/``worker``, which keep :func:`setup_logging`).

    Quiet (the default): our WARNINGs and up in :class:`CliFormatter` lines, libraries' ERRORs only, Python
    warnings ignored. ``--verbose``: INFO (or ``level``, if that is lower: BEATFORGE_LOG_LEVEL=DEBUG) for
    everyone and warnings shown as log lines. ``--json`` switches the format to JSON lines, not what gets through.
    """
    wanted = logging.getLevelName(level.upper())
    verbose_level = min(wanted, logging.INFO) if isinstance(wanted, int) else logging.INFO
    chosen = verbose_level if output.verbose else logging.WARNING
    setup_logging(level=logging.getLevelName(chosen), json_lines=output.json)
    handler = logging.getLogger().handlers[0]
    if not output.json:
        handler.setFormatter(CliFormatter(verbose=output.verbose))
    if not output.verbose:
        handler.addFilter(_LibraryFilter())
    quiet_level = logging.NOTSET if output.verbose else logging.ERROR
    # (level, handlers, propagate) of each self-handled library logger, to put back afterwards
    saved = {name: _logger_state(logging.getLogger(name)) for name in _SELF_HANDLED}
    saved_env = {var: os.environ.get(var) for var in _SELF_HANDLED.values()}
    for name, var in _SELF_HANDLED.items():
        lib = logging.getLogger(name)
        # already configured: its records go through our handler (our format, JSON with --json) instead of its own
        lib.setLevel(quiet_level)
        lib.handlers, lib.propagate = [], True
        os.environ[var] = "info" if output.verbose else "error"  # configured during the command: its level
    logging.captureWarnings(output.verbose)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default" if output.verbose else "ignore")
            yield
    finally:
        logging.captureWarnings(False)
        for name, (lib_level, handlers, propagate) in saved.items():
            lib = logging.getLogger(name)
            lib.setLevel(lib_level)
            lib.handlers, lib.propagate = handlers, propagate
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _logger_state(logger: logging.Logger) -> tuple[int, list[logging.Handler], bool]:
    return logger.level, list(logger.handlers), logger.propagate


def result(output: Output, line: str, data: Mapping[str, object], *, stream: TextIO | None = None) -> None:
    """One result on stdout: the human ``line``, or ``data`` as one JSON object with ``--json``."""
    out = stream if stream is not None else sys.stdout
    out.write((json.dumps(data, default=str) if output.json else line) + "\n")
    out.flush()


def clock(seconds: float) -> str:
    """``42 s``, ``3:07`` or ``1:02:03``: short enough for a bar that must fit a terminal line."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class ProgressBar:
    """An ``on_progress(done, total)`` callback that draws ``generating [#####-----] 50% 100/200 steps ·
    4.0/8.0 s audio · 3 s left`` on stderr.

    On a terminal it redraws one line in place (at most ten times a second, and always at 100 %). Elsewhere
    (``--progress always`` into a file or a test) it writes a plain line at each tenth, so a log stays short.
    ``audio_s`` is the length the whole run makes; the audio done is that share of it.
    """

    WIDTH = 24

    def __init__(self, label: str, *, audio_s: float | None = None, stream: TextIO | None = None) -> None:
        self.label, self.audio_s = label, audio_s
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.last_tenth = -1
        self.finished = False

    def line(self, done: int, total: int, *, elapsed: float) -> str:
        share = done / total if total > 0 else 1.0
        filled = round(share * self.WIDTH)
        parts = [f"{self.label} [{'#' * filled}{'-' * (self.WIDTH - filled)}] {share:4.0%} {done}/{total} steps"]
        if self.audio_s is not None:
            parts.append(f"{share * self.audio_s:.1f}/{self.audio_s:.1f} s audio")
        if done >= total:
            parts.append(f"took {clock(elapsed)}")
        elif done > 0:
            parts.append(f"{clock(elapsed / done * (total - done))} left")
        return " · ".join(parts)

    def __call__(self, done: int, total: int) -> None:
        if self.finished:
            return
        now = time.monotonic()
        complete = done >= total
        if self.tty:
            if not complete and now - self.last_draw < 0.1:
                return
            self.stream.write("\r\x1b[2K" + self.line(done, total, elapsed=now - self.started))
            if complete:
                self.stream.write("\n")
        else:
            tenth = 10 if complete else int(10 * done / total) if total > 0 else 10
            if tenth <= self.last_tenth:
                return
            self.last_tenth = tenth
            self.stream.write(self.line(done, total, elapsed=now - self.started) + "\n")
        self.last_draw = now
        self.finished = complete
        self.stream.flush()

    def close(self) -> None:
        """Ends the line on a terminal when the run stopped short of 100 % (an error, a cancel)."""
        if self.tty and not self.finished and self.last_draw:
            self.stream.write("\n")
            self.stream.flush()
        self.finished = True


def progress_bar(output: Output, label: str, *, audio_s: float | None = None) -> ProgressBar | None:
    """A bar for ``output``'s ``--progress`` choice, or None. ``auto`` draws only on a terminal and never with
    ``--json`` (stderr carries JSON lines then)."""
    if output.progress == "never":
        return None
    if output.progress == "auto" and (output.json or not sys.stderr.isatty()):
        return None
    return ProgressBar(label, audio_s=audio_s)
