"""``beatforge loop`` and ``beatforge auto``: loops on the command line, with the reference CLI's options."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from beatforge.bounds import MAX_SEED, MIN_DURATION_S
from beatforge.config import Settings
from beatforge.contract import BeatParams, LoopParams, explain
from cli.console import output_of, result
from cli.paths import named_files_folder_problem


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    loop = commands.add_parser("loop", help="generate (or cut from a file) a seamless loop at a target BPM")
    loop.add_argument("prompt", nargs="?", help="what the loop should sound like")
    loop.add_argument("--input", type=Path, help="cut a loop from this audio file instead of generating one")
    add_loop_arguments(loop, settings)
    loop.set_defaults(run=run_loop)

    auto = commands.add_parser("auto", help="fill a folder with loops for a use case (LLM-written prompts)")
    auto.add_argument("--use-case", required=True, help="e.g. 'Background music for RPG levels'")
    auto.add_argument("--count", type=int, default=10, help="how many loops (1-500)")
    add_loop_arguments(auto, settings)
    auto.set_defaults(run=run_auto)


def add_loop_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument("--bpm", type=int, help="target tempo (written into the prompt; with --stretch, exact)")
    parser.add_argument("--key", help="musical key written into the prompt, e.g. 'A minor' (a hint, not enforced)")
    parser.add_argument("--bars", type=int, help="exact number of bars (default: a power of two that fits)")
    parser.add_argument("--min-duration", type=float, help="shortest acceptable loop, seconds")
    parser.add_argument("--max-duration", type=float, help="longest acceptable loop, seconds")
    parser.add_argument("--stretch", action="store_true", help="time-stretch the loop to exactly --bpm")
    parser.add_argument("--format", choices=["wav", "flac", "ogg", "mp3"], default="wav")
    parser.add_argument("--model", default=settings.default_model, help="HF id, local directory, or 'debug'")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("loops"), help="folder to write into (created if missing)")
    parser.add_argument("--prefix", help="file name prefix (default: from the prompt)")
    parser.add_argument("--keep-metadata", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--s3-bucket", default=settings.s3_bucket, help="also upload to this S3 bucket")
    parser.add_argument("--s3-path", default=settings.s3_prefix, help="key prefix inside the bucket")


def _loop_params(args: argparse.Namespace) -> LoopParams:
    return LoopParams(
        bars=args.bars,
        min_duration_s=args.min_duration,
        max_duration_s=args.max_duration,
        target_bpm=args.bpm,
        stretch=args.stretch,
        format=args.format,
    )


class _Runner:
    """Loads the model once, then turns prompts (or files) into loop files."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        from storage.objects import S3Target

        self.args, self.settings = args, settings
        self.engine: Any = None
        self.target: S3Target | None = None
        if args.s3_bucket:
            self.target = S3Target(
                bucket=args.s3_bucket,
                prefix=args.s3_path or "",
                endpoint_url=settings.s3_endpoint_url,
                region=settings.s3_region,
            )

    def from_prompt(self, prompt: str, seed: int, loop: LoopParams) -> dict[str, Any]:
        from generation.music.engine import generate
        from generation.music.model_cache import ModelCache

        if self.engine is None:
            self.engine = ModelCache.from_settings(self.settings, default=self.args.model).get(self.args.model)
        params = BeatParams(
            prompt=prompt,
            seed=seed,
            bpm=self.args.bpm,
            key=self.args.key,
            duration_s=loop.generation_seconds(self.args.bpm),
            loop=loop,
        )
        (audio,) = generate(self.engine, params, fade_out_s=0.0)
        return self._cut(audio.samples, audio.sample_rate, params, loop, model=self.engine.name)

    def from_file(self, path: Path, loop: LoopParams) -> dict[str, Any]:
        from generation.audio.io import read_audio

        samples, sample_rate = read_audio(path)
        params = BeatParams(prompt=path.stem, seed=0, duration_s=MIN_DURATION_S, bpm=self.args.bpm, loop=loop)
        return self._cut(samples, sample_rate, params, loop, model=None)

    def _cut(
        self, samples: Any, sample_rate: int, params: BeatParams, loop: LoopParams, *, model: str | None
    ) -> dict[str, Any]:
        from generation.loops.export import cut_loop, safe_stem
        from storage.objects import upload_files

        stem = f"{self.args.prefix or safe_stem(params.prompt)}-seed{params.seed}"
        files = cut_loop(
            samples,
            sample_rate=sample_rate,
            params=params,
            loop=loop,
            model=model,
            out_dir=self.args.out,
            stem=stem,
            keep_metadata=self.args.keep_metadata,
        )
        summary: dict[str, Any] = {
            "file": str(files.audio),
            "metadata": str(files.metadata) if files.metadata else None,
            "bars": files.result.bars,
            "bpm": round(files.result.bpm, 2),
            "key": files.result.key.label,
            "seam_score": round(files.result.seam_score, 3),
        }
        if self.target is not None:
            paths = [files.audio] + ([files.metadata] if files.metadata else [])
            summary["s3_keys"] = upload_files(self.target, paths, key_prefix=safe_stem(params.prompt))
        return summary


def _normalize_key(args: argparse.Namespace) -> None:
    """Spell ``--key`` one way ("f#m" → "F# minor") before it is written into prompts.

    Raises:
        ValueError: not a key name.
    """
    from beatforge.prompt_words import normalize_key

    if args.key is not None:
        args.key = normalize_key(args.key)


def run_loop(args: argparse.Namespace, settings: Settings) -> int:
    from generation.analysis import beat_model
    from generation.errors import GenerationError
    from storage.errors import StorageError

    beat_model.use(settings.learned_downbeats)
    if (args.prompt is None) == (args.input is None):
        sys.stderr.write("beatforge: give either a PROMPT to generate from, or --input AUDIO_FILE to cut\n")
        return 2
    try:
        loop = _loop_params(args)
        _normalize_key(args)
    except ValidationError as exc:
        sys.stderr.write(f"beatforge: {explain(exc)}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2
    problem = named_files_folder_problem(args.out)  # before the model loads, not after the loop is made
    if problem is not None:
        sys.stderr.write(f"beatforge: {problem}\n")
        return 2
    runner = _Runner(args, settings)
    seed = args.seed if args.seed is not None else random.randint(0, MAX_SEED)
    try:
        summary = runner.from_file(args.input, loop) if args.input else runner.from_prompt(args.prompt, seed, loop)
    except ValidationError as exc:
        sys.stderr.write(f"beatforge: {explain(exc)}\n")
        return 2
    except (GenerationError, StorageError) as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    result(output_of(args), _loop_line(summary), summary)
    return 0


def _loop_line(summary: dict[str, Any]) -> str:
    """``wrote loops/x.mp3 (2 bars at 100.0 bpm, metadata loops/x.json)`` for a person; scripts use --json."""
    meta = f", metadata {summary['metadata']}" if summary.get("metadata") else ""
    return f"wrote {summary['file']} ({summary['bars']} bars at {summary['bpm']:.1f} bpm{meta})"


def run_auto(args: argparse.Namespace, settings: Settings) -> int:
    from generation.analysis import beat_model
    from generation.errors import GenerationError
    from generation.prompts.auto import plan_prompts
    from generation.prompts.llm import ChatClient
    from storage.errors import StorageError

    beat_model.use(settings.learned_downbeats)
    problem = named_files_folder_problem(args.out)  # before the LLM and the model, not after the first loop
    if problem is not None:
        sys.stderr.write(f"beatforge: {problem}\n")
        return 2
    try:
        loop = _loop_params(args)
        _normalize_key(args)
        seed = args.seed if args.seed is not None else random.randint(0, MAX_SEED - args.count)
        client = ChatClient.from_settings(settings)
        try:
            plan = plan_prompts(
                use_case=args.use_case, count=args.count, client=client, seed=seed, bpm=args.bpm, key=args.key
            )
        finally:
            if client is not None:
                client.close()
    except ValidationError as exc:
        sys.stderr.write(f"beatforge: {explain(exc)}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2
    if plan.note:
        sys.stderr.write(f"beatforge: {plan.note}\n")
    runner, made = _Runner(args, settings), 0
    for i, prompt in enumerate(plan.prompts):
        try:
            summary = runner.from_prompt(prompt, seed + i, loop)
            made += 1
        except (GenerationError, StorageError, ValidationError) as exc:  # one bad take must not end the batch
            summary = {"prompt": prompt, "error": explain(exc) if isinstance(exc, ValidationError) else str(exc)}
        line = f"loop {i + 1} failed: {summary['error']}" if "error" in summary else _loop_line(summary)
        result(output_of(args), line, {"n": i + 1, "prompt": prompt, "prompt_source": plan.source, **summary})
    sys.stderr.write(f"beatforge: {made} of {len(plan.prompts)} loops written to {args.out}\n")
    return 0 if made else 1
