"""``beatforge eval``: measure models against a reference set (FAD, FAD∞, CLAP score, speed), without the worker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from beatforge.config import Settings
from cli.console import output_of, result
from cli.paths import folder_target_problem


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], _settings: Settings) -> None:
    ev = commands.add_parser(
        "eval",
        help="score models: FAD/FAD∞ to a reference set, CLAP text-audio match, real-time factor",
        description="Generate --per-prompt clips per prompt and model, embed them and the reference set, and "
        "write OUT/eval.md, OUT/eval.json and OUT/eval.png.",
    )
    ev.add_argument(
        "--model",
        dest="models",
        metavar="NAME",
        action="append",
        required=True,
        help="a model to score (repeat for more): registry name, HF id, directory, or 'debug'",
    )
    ev.add_argument(
        "--prompts", type=Path, required=True, metavar="FILE", help="a text file, one prompt a line (# comments)"
    )
    ev.add_argument(
        "--reference", type=Path, required=True, metavar="DIR", help="a folder of reference audio (searched below too)"
    )
    ev.add_argument("--per-prompt", type=int, default=150, help="clips per prompt and model (default 150)")
    ev.add_argument("--duration", type=float, default=8.0, help="seconds per clip (default 8)")
    ev.add_argument(
        "--embedding",
        choices=("clap", "encodec"),
        default="clap",
        help="FAD embeddings: CLAP (one per clip) or a MusicGen's EnCodec latents (one per frame, no extra weights)",
    )
    ev.add_argument(
        "--clap",
        metavar="MODEL",
        help="CLAP model (HF id or directory) for the text-audio score and --embedding clap "
        "(default laion/larger_clap_music with --embedding clap; none with encodec)",
    )
    ev.add_argument(
        "--encodec", metavar="NAME", help="the MusicGen whose EnCodec embeds (default: the first MusicGen --model)"
    )
    ev.add_argument("--seed", type=int, default=0, help="seed of the first clip; the rest follow from it")
    ev.add_argument("--batch-size", type=int, default=8, help="clips generated together")
    ev.add_argument(
        "--cache", type=Path, metavar="DIR", help="embedding cache folder, shared between runs (default OUT/cache)"
    )
    ev.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the report and the clips")
    ev.set_defaults(run=run_eval)


def _problem(args: argparse.Namespace) -> str | None:
    if args.per_prompt < 2:
        return "--per-prompt must be at least 2 (a covariance needs two clips)"
    if args.duration <= 0:
        return "--duration must be positive"
    if args.batch_size < 1:
        return "--batch-size must be at least 1"
    return folder_target_problem(args.out)


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    # Heavy imports stay here, so `beatforge --help` and `beatforge bot` never load torch.
    from generation.errors import GenerationError, ModelUnavailable
    from generation.evaluation.clap import DEFAULT_CLAP
    from generation.evaluation.report import write_report
    from generation.evaluation.run import EvalConfig, EvalInputError, run_evaluation
    from generation.music.model_cache import ModelCache

    problem = _problem(args)
    if problem is not None:
        sys.stderr.write(f"beatforge: {problem}\n")
        return 2
    config = EvalConfig(
        models=tuple(dict.fromkeys(args.models)),
        prompts_file=args.prompts,
        reference=args.reference,
        out=args.out,
        per_prompt=args.per_prompt,
        duration_s=args.duration,
        embedding=args.embedding,
        clap=args.clap or (DEFAULT_CLAP if args.embedding == "clap" else None),
        encodec=args.encodec,
        seed=args.seed,
        batch_size=args.batch_size,
        cache_dir=args.cache,
    )
    output = output_of(args)

    def say(line: str) -> None:
        if not output.json:
            sys.stderr.write(f"beatforge: {line}\n")

    try:
        cache = ModelCache.from_settings(settings, default=config.models[0])
        evaluation = run_evaluation(config, cache, progress=say)
        paths = write_report(evaluation, config.out)
    except (EvalInputError, ModelUnavailable) as exc:
        sys.stderr.write(f"beatforge: {str(exc).splitlines()[0]}\n")
        return 2
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    summary = {key: str(path) for key, path in paths.items()} | {"warnings": evaluation.warnings}
    result(output, f"wrote {paths['markdown']}, {paths['json'].name} and {paths['plot'].name}", summary)
    return 0
