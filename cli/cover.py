"""``beatforge cover``: a cover image drawn in this process, diffusion or procedural, to try looks and titles."""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from beatforge.bounds import MAX_SEED, MIN_DURATION_S
from beatforge.config import Settings
from beatforge.contract import BeatParams, explain
from beatforge.presets import MOODS, STYLES
from cli.console import output_of, result


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    cover = commands.add_parser("cover", help="draw a cover image in this process")
    cover.add_argument("prompt", help="the beat's description")
    cover.add_argument("--style", choices=sorted(STYLES), help="style preset for the look")
    cover.add_argument("--mood", choices=sorted(MOODS), help="mood preset for the palette")
    cover.add_argument("--title", help="set this title on the cover")
    cover.add_argument(
        "--model", default=settings.cover_model, help="HF id, local dir, 'debug' (tiny random), or 'procedural'"
    )
    cover.add_argument("--size", type=int, default=settings.cover_size, help="pixels, 64-1024, multiple of 8")
    cover.add_argument("--seed", type=int, default=None)
    cover.add_argument("--out", type=Path, default=Path("cover.png"), help="PNG file to write")
    cover.set_defaults(run=run_cover)


def _cover_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """The command's --model and --size override the configured cover settings, validated like the config."""
    mode = "procedural" if args.model == "procedural" else "diffusion"
    overrides = {"cover_mode": mode, "cover_model": args.model, "cover_size": args.size}
    if args.model == "debug":  # the tiny random pipeline gets the tiny random safety checker
        overrides["cover_safety_model"] = "debug"
    return Settings.model_validate(settings.model_dump() | overrides)


def run_cover(args: argparse.Namespace, settings: Settings) -> int:
    # Heavy imports stay here, so `beatforge --help` and `beatforge bot` never load torch.
    from generation.cover.maker import CoverMaker
    from generation.device import resolve_device
    from generation.errors import GenerationError

    seed = args.seed if args.seed is not None else random.randint(0, MAX_SEED)
    try:
        params = BeatParams(prompt=args.prompt, duration_s=MIN_DURATION_S, seed=seed, title=args.title)
        cover_settings = _cover_settings(args, settings)
    except ValidationError as exc:
        sys.stderr.write(f"beatforge: {explain(exc)}\n")
        return 2
    maker = CoverMaker(cover_settings, device=resolve_device(settings.device))
    started = time.perf_counter()
    try:
        cover = maker.make(description=params.prompt, seed=seed, style=args.style, mood=args.mood, title=params.title)
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cover.image.save(args.out, format="PNG")
    summary = {
        "out": str(args.out),
        "source": cover.source,
        "model": cover.model,
        "note": cover.note,
        "seed": seed,
        "size": cover.image.size[0],
        "seconds_taken": round(time.perf_counter() - started, 2),
    }
    size = summary["size"]
    line = f"wrote {args.out} ({size}x{size} {cover.source} cover, model {cover.model}, seed {seed})"
    result(output_of(args), line, summary)
    return 0
