"""The ``beatforge`` command: generate a beat locally, or run the bot, the worker, or migrations."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from beatforge.config import Settings, get_settings
from beatforge.contract import MAX_SEED, BeatParams, explain
from beatforge.log import setup_logging


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beatforge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate a beat in this process (no Discord, no redis)")
    gen.add_argument("prompt", help="what the beat should sound like, e.g. 'dark trap, 808s, 140 bpm'")
    gen.add_argument("--duration", type=float, default=settings.default_duration_s, help="seconds (1-30)")
    gen.add_argument("--seed", type=int, default=None, help="same seed + prompt + model = same beat")
    gen.add_argument(
        "--model", default=settings.default_model, help="HF id, local directory, or 'debug' (tiny random model)"
    )
    gen.add_argument("--out", type=Path, default=Path("beat.wav"), help="WAV file to write")

    commands.add_parser("bot", help="run the Discord bot")
    worker = commands.add_parser("worker", help="run the generation worker (arq)")
    worker.add_argument("--check", action="store_true", help="exit 0 if a worker's health check is recent")

    db = commands.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="apply all migrations")
    return parser


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from generation.audio import write_wav
    from generation.errors import GenerationError
    from generation.musicgen import MusicGenEngine

    seed = args.seed if args.seed is not None else random.randint(0, MAX_SEED)
    try:
        params = BeatParams(prompt=args.prompt, duration_s=args.duration, seed=seed, model=args.model)
    except ValidationError as exc:
        sys.stderr.write(f"beatforge: {explain(exc)}\n")
        return 2
    try:
        engine = MusicGenEngine.load(args.model, device=settings.resolved_device())
        started = time.perf_counter()
        audio = engine.generate(params, guidance_scale=settings.guidance_scale, fade_out_s=settings.fade_out_s)
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(args.out, audio.samples, sample_rate=audio.sample_rate)
    summary = {
        "out": str(args.out),
        "prompt": params.prompt,
        "model": engine.name,
        "seed": seed,
        "duration_s": round(audio.duration_s, 3),
        "sample_rate": audio.sample_rate,
        "channels": int(audio.samples.shape[0]),
        "seconds_taken": round(time.perf_counter() - started, 2),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from arq.worker import check_health

    from generation.worker import create_worker, worker_settings

    if args.check:
        return check_health(worker_settings(settings))
    create_worker(settings).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    args = _parser(settings).parse_args(argv)
    setup_logging(level=settings.log_level, json_lines=settings.log_json)
    if args.command == "generate":
        return _generate(args, settings)
    if args.command == "worker":
        return _worker(args, settings)
    if args.command == "bot":
        from bot.app import run_bot

        return asyncio.run(run_bot(settings))
    from storage.db import upgrade_locked

    upgrade_locked(settings.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
