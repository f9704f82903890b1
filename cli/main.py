"""The ``beatforge`` command: generate a beat locally, run the bot, the worker, or migrations, or look after them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from beatforge.config import Settings, get_settings
from beatforge.log import setup_logging
from cli import cover, eval, generate, loops, midi, models, ops, serve, train
from cli.console import add_output_flags, cli_logging, output_of

Command = Callable[[argparse.Namespace, Settings], int]

# In the order `beatforge --help` lists them; each module registers its parsers and the function that runs them.
GROUPS = (generate, cover, loops, midi, models, train, eval, serve, ops)

# The long-running services log as production expects (JSON lines, BEATFORGE_LOG_LEVEL), whatever the flags say.
SERVICES = frozenset({"bot", "worker"})


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beatforge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands, settings)
    add_output_flags(parser, top=True)  # after the groups, so every sub-command gets --json/--verbose too
    return parser


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    args = build_parser(settings).parse_args(argv)
    run: Command = args.run
    if args.command in SERVICES:
        setup_logging(level=settings.log_level, json_lines=settings.log_json)
        return run(args, settings)
    with cli_logging(output_of(args), level=settings.log_level):
        return run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
