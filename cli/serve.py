"""``beatforge bot``, ``worker`` and ``db``: the long-running processes and the schema upgrade they wait for."""

from __future__ import annotations

import argparse
import asyncio

from beatforge.config import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], _settings: Settings) -> None:
    commands.add_parser("bot", help="run the Discord bot").set_defaults(run=run_bot)
    worker = commands.add_parser("worker", help="run the generation worker (arq)")
    worker.add_argument("--check", action="store_true", help="exit 0 if a worker's health check is recent")
    worker.set_defaults(run=run_worker)

    db = commands.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="apply all migrations")
    db.set_defaults(run=run_db)


def run_bot(_args: argparse.Namespace, settings: Settings) -> int:
    # Each side is imported only by its own command: the bot process never loads the worker's ML stack.
    from bot.app import run_bot as serve

    return asyncio.run(serve(settings))


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from arq.worker import check_health

    from generation.worker.settings import create_worker, worker_settings

    if args.check:
        return check_health(worker_settings(settings))
    create_worker(settings).run()
    return 0


def run_db(_args: argparse.Namespace, settings: Settings) -> int:
    from migrations.runner import upgrade_locked

    upgrade_locked(settings.database_url)
    return 0
