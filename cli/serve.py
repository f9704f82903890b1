"""``beatforge bot``, ``worker`` and ``db``: the long-running processes and the schema upgrade they wait for."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from beatforge.config import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], _settings: Settings) -> None:
    commands.add_parser("bot", help="run the Discord bot").set_defaults(run=run_bot)
    worker = commands.add_parser("worker", help="run the generation worker (arq)")
    worker.add_argument(
        "--check", action="store_true", help="exit 0 if a worker on this machine reported itself lately (healthcheck)"
    )
    worker.add_argument(
        "--roles",
        choices=("generate", "train"),
        help="what this worker does: generate (beats, covers, loops, MIDI, packs; the default) or train "
        "(/admin train runs, from their own queue); default: BEATFORGE_WORKER_ROLES",
    )
    worker.set_defaults(run=run_worker)

    db = commands.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="apply all migrations")
    db.set_defaults(run=run_db)


def run_bot(_args: argparse.Namespace, settings: Settings) -> int:
    # Each side is imported only by its own command: the bot process never loads the worker's ML stack.
    from bot.app import run_bot as serve

    return asyncio.run(serve(settings))


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    if args.check:
        return asyncio.run(check_worker(settings))
    from generation.worker.settings import create_worker

    create_worker(with_roles(args, settings)).run()
    return 0


def with_roles(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings a ``beatforge worker`` runs with: ``--roles`` wins over ``BEATFORGE_WORKER_ROLES``."""
    if args.roles is None:
        return settings
    return settings.model_validate({**settings.model_dump(), "worker_roles": args.roles})


async def check_worker(settings: Settings) -> int:
    """The healthcheck of a worker's container: a worker on this machine reported itself within its TTL.

    It asks redis for this host's presence, so a worker that lost redis, or whose process hangs or died, is
    reported unhealthy, and one worker's health never stands in for another's (arq's own check is per queue).
    """
    from redis.exceptions import RedisError

    from beatforge.fleet import read_workers
    from beatforge.queue import connect

    host = socket.gethostname()
    try:
        redis = await connect(settings)
        try:
            mine = [w for w in await read_workers(redis) if w.host == host]
        finally:
            await redis.aclose()
    except (RedisError, OSError) as exc:
        sys.stdout.write(f"unhealthy: redis is unreachable ({exc})\n")
        return 1
    if not mine:
        sys.stdout.write(f"unhealthy: no worker on {host} has reported itself\n")
        return 1
    for worker in mine:
        sys.stdout.write(f"ok: worker {worker.id}, {worker.jobs_running} job(s) running, {worker.jobs_finished} done\n")
    return 0


def run_db(_args: argparse.Namespace, settings: Settings) -> int:
    from migrations.runner import upgrade_locked

    upgrade_locked(settings.database_url)
    return 0
