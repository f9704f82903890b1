"""``beatforge generate``: a beat made in this process, so prompts and models can be tried without Discord or redis."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from beatforge.bounds import MAX_SEED
from beatforge.config import Settings
from beatforge.contract import BeatParams, SamplingParams, explain
from beatforge.presets import MOODS, STYLES
from cli.paths import file_target_problem

if TYPE_CHECKING:
    from generation.audio.signal import Samples


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    gen = commands.add_parser("generate", help="generate a beat in this process (no Discord, no redis)")
    gen.add_argument("prompt", help="what the beat should sound like, e.g. 'dark trap, 808s, 140 bpm'")
    gen.add_argument(
        "--duration", type=float, default=settings.default_duration_s, help="seconds (1-120; past 30, in windows)"
    )
    gen.add_argument("--seed", type=int, default=None, help="same seed + prompt + model = same beat")
    gen.add_argument(
        "--model", default=settings.default_model, help="HF id, local directory, or 'debug' (tiny random model)"
    )
    gen.add_argument("--style", choices=sorted(STYLES), help="style preset blended with the prompt")
    gen.add_argument("--mood", choices=sorted(MOODS), help="mood preset (tempo, key, register)")
    gen.add_argument("--bpm", type=int, help="target tempo, written into the prompt")
    gen.add_argument("--takes", type=int, default=1, help="takes generated together (1-4), each with its own seed")
    gen.add_argument("--continue", dest="continue_from", type=Path, help="continue this audio file by --duration s")
    gen.add_argument("--melody", type=Path, help="an audio file whose melody to follow (melody models only)")
    sampling = gen.add_argument_group("sampling")
    sampling.add_argument("--top-k", type=int, default=250, help="0-2048 (0: off)")
    sampling.add_argument("--top-p", type=float, default=0.0, help="0-1 (0: off)")
    sampling.add_argument("--temperature", type=float, default=1.0, help="0.05-4")
    sampling.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance, 1-20 (1: off)")
    gen.add_argument("--out", type=Path, default=Path("beat.wav"), help="WAV file (takes 2+: NAME-take2.wav, ...)")
    gen.set_defaults(run=run_generate)


def _params(args: argparse.Namespace) -> BeatParams:
    seed = args.seed if args.seed is not None else random.randint(0, MAX_SEED)
    sampling = SamplingParams(
        top_k=args.top_k, top_p=args.top_p, temperature=args.temperature, guidance_scale=args.guidance
    )
    return BeatParams(
        prompt=args.prompt,
        duration_s=args.duration,
        seed=seed,
        model=args.model,
        style=args.style,
        mood=args.mood,
        bpm=args.bpm,
        takes=args.takes,
        sampling=sampling,
    )


def _take_paths(out: Path, takes: int) -> list[Path]:
    """Where each take goes: take 1 at ``out``, the others beside it as NAME-take2.wav, ..."""
    return [out] + [out.with_name(f"{out.stem}-take{n}{out.suffix}") for n in range(2, takes + 1)]


def run_generate(args: argparse.Namespace, settings: Settings) -> int:
    # Heavy imports stay here, so `beatforge --help` and `beatforge bot` never load torch.
    from generation.audio.io import read_audio, write_wav
    from generation.audio.signal import resample
    from generation.errors import AudioParameterError, GenerationError
    from generation.music.model_cache import ModelCache

    try:
        params = _params(args)
    except ValidationError as exc:
        sys.stderr.write(f"beatforge: {explain(exc)}\n")
        return 2
    # Bad input is refused before the model loads (minutes for the big ones), not after the beat is made.
    problem = next(filter(None, (file_target_problem(out) for out in _take_paths(args.out, params.takes))), None)
    if problem is not None:
        sys.stderr.write(f"beatforge: {problem}\n")
        return 2
    inputs: dict[str, tuple[Samples, int]] = {}
    try:
        for key, path in (("prompt", args.continue_from), ("melody", args.melody)):
            if path is not None:
                inputs[key] = read_audio(path, max_seconds=settings.continue_max_input_s)
    except AudioParameterError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2
    try:
        # registry names (`small`, an imported fine-tune, a LoRA), HF ids and directories alike
        engine = ModelCache.from_settings(settings, default=args.model).get(args.model)
        audio_in: dict[str, Any] = {
            key: resample(samples, rate, engine.sample_rate) for key, (samples, rate) in inputs.items()
        }
        started = time.perf_counter()
        takes = engine.generate(params, fade_out_s=settings.fade_out_s, **audio_in)
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    taken = round(time.perf_counter() - started, 2)
    for number, (out, audio) in enumerate(zip(_take_paths(args.out, len(takes)), takes, strict=True), start=1):
        write_wav(out, audio.samples, sample_rate=audio.sample_rate)
        summary = {
            "out": str(out),
            "prompt": params.prompt,
            "model": engine.name,
            "take": number,
            "seed": audio.seed,
            "duration_s": round(audio.duration_s, 3),
            "sample_rate": audio.sample_rate,
            "channels": int(audio.samples.shape[0]),
            "seconds_taken": taken,
        }
        sys.stdout.write(json.dumps(summary) + "\n")
    return 0
