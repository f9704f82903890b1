"""The ``beatforge`` command: generate a beat locally, or run the bot, the worker, or migrations."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from beatforge.bounds import MAX_SEED, MIN_DURATION_S
from beatforge.config import Settings, get_settings
from beatforge.contract import BeatParams, SamplingParams, explain
from beatforge.log import setup_logging
from beatforge.presets import MOODS, STYLES
from cli.loop import add_loop_arguments, run_auto, run_loop


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beatforge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

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

    loop = commands.add_parser("loop", help="generate (or cut from a file) a seamless loop at a target BPM")
    loop.add_argument("prompt", nargs="?", help="what the loop should sound like")
    loop.add_argument("--input", type=Path, help="cut a loop from this audio file instead of generating one")
    add_loop_arguments(loop, settings)

    auto = commands.add_parser("auto", help="fill a folder with loops for a use case (LLM-written prompts)")
    auto.add_argument("--use-case", required=True, help="e.g. 'Background music for RPG levels'")
    auto.add_argument("--count", type=int, default=10, help="how many loops (1-500)")
    add_loop_arguments(auto, settings)

    midi = commands.add_parser("midi", help="transcribe an audio file into drums/bass/melody/full MIDI files")
    midi.add_argument("audio", type=Path, help="wav, flac, ogg or mp3")
    midi.add_argument("--out", type=Path, default=Path("midi"), help="directory to write into")
    midi.add_argument("--stems", action="store_true", help="also write the separated stems (drums, bass, other)")

    model = commands.add_parser("model", help="MusicGen models: import checkpoints")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    imp = model_commands.add_parser("import-audiocraft", help="convert an audiocraft-trained MusicGen and register it")
    imp.add_argument("checkpoint", type=Path, help="state_dict.bin / checkpoint.th, or audiocraft's export folder")
    imp.add_argument("name", help="registry name (lowercase letters, digits, . _ -)")
    imp.add_argument("--base", default="facebook/musicgen-small", help="local MusicGen giving the T5 + EnCodec")
    imp.add_argument("--compression", type=Path, help="audiocraft EnCodec checkpoint (default: the base's EnCodec)")
    imp.add_argument("--out", type=Path, help="directory to write (default: <artifact_dir>/../models/NAME)")

    commands.add_parser("bot", help="run the Discord bot")
    worker = commands.add_parser("worker", help="run the generation worker (arq)")
    worker.add_argument("--check", action="store_true", help="exit 0 if a worker's health check is recent")

    db = commands.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="apply all migrations")
    return parser


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from generation.audio.io import read_audio, write_wav
    from generation.audio.signal import resample
    from generation.errors import GenerationError
    from generation.music.model_cache import ModelCache

    seed = args.seed if args.seed is not None else random.randint(0, MAX_SEED)
    try:
        sampling = SamplingParams(
            top_k=args.top_k, top_p=args.top_p, temperature=args.temperature, guidance_scale=args.guidance
        )
        params = BeatParams(
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
    except ValidationError as exc:
        sys.stderr.write(f"beatforge: {explain(exc)}\n")
        return 2
    try:
        # registry names (`small`, an imported fine-tune, a LoRA), HF ids and directories alike
        engine = ModelCache.from_settings(settings, default=args.model).get(args.model)
        audio_in: dict[str, Any] = {}
        for key, path in (("prompt", args.continue_from), ("melody", args.melody)):
            if path is not None:
                samples, rate = read_audio(path, max_seconds=settings.continue_max_input_s)
                audio_in[key] = resample(samples, rate, engine.sample_rate)
        started = time.perf_counter()
        takes = engine.generate(params, fade_out_s=settings.fade_out_s, **audio_in)
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    taken = round(time.perf_counter() - started, 2)
    for number, audio in enumerate(takes, start=1):
        out = args.out if number == 1 else args.out.with_name(f"{args.out.stem}-take{number}{args.out.suffix}")
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


def _cover(args: argparse.Namespace, settings: Settings) -> int:
    from generation.cover.maker import CoverMaker
    from generation.errors import GenerationError

    seed = args.seed if args.seed is not None else random.randint(0, MAX_SEED)
    mode = "procedural" if args.model == "procedural" else "diffusion"
    try:
        params = BeatParams(prompt=args.prompt, duration_s=MIN_DURATION_S, seed=seed, title=args.title)
        overrides = {"cover_mode": mode, "cover_model": args.model, "cover_size": args.size}
        if args.model == "debug":  # the tiny random pipeline gets the tiny random safety checker
            overrides["cover_safety_model"] = "debug"
        cover_settings = Settings.model_validate(settings.model_dump() | overrides)
    except ValidationError as exc:
        sys.stderr.write(f"beatforge: {explain(exc)}\n")
        return 2
    maker = CoverMaker(cover_settings, device=settings.resolved_device())
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
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _midi(args: argparse.Namespace, settings: Settings) -> int:
    from generation.audio.io import read_audio
    from generation.errors import GenerationError
    from generation.loops.export import safe_stem
    from generation.midi.export import export_midi
    from generation.midi.stems import make_separator
    from generation.midi.transcribe import PitchTracker

    try:
        samples, sample_rate = read_audio(args.audio, max_seconds=settings.midi_max_input_s)
        tracker = PitchTracker(
            onset_threshold=settings.midi_onset_threshold,
            frame_threshold=settings.midi_frame_threshold,
            min_note_ms=settings.midi_min_note_ms,
        )
        files = export_midi(
            samples,
            sample_rate=sample_rate,
            tracker=tracker,
            separator=make_separator(settings.stems_model),
            out_dir=args.out,
            stem=safe_stem(args.audio.stem),
            source=args.audio.name,
            with_stems=args.stems,
        )
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    sys.stderr.write(files.summary + "\n")
    written = {"midi": str(files.pack), "stems": str(files.stems) if files.stems else None}
    sys.stdout.write(json.dumps({**written, **files.info}) + "\n")
    return 0


def _model_import(args: argparse.Namespace, settings: Settings) -> int:
    from generation.errors import GenerationError
    from generation.music.audiocraft_import import import_and_register

    out = args.out or settings.artifact_dir.parent / "models" / args.name
    try:
        summary = import_and_register(
            args.checkpoint,
            args.name,
            out=out,
            base=args.base,
            compression=args.compression,
            registry_file=getattr(settings, "model_registry_file", None),
        )
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    if not summary["registered"]:
        sys.stderr.write(f"beatforge: not registered (no model registry file); use the directory {out}\n")
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from arq.worker import check_health

    from generation.worker.app import create_worker, worker_settings

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
    if args.command == "cover":
        return _cover(args, settings)
    if args.command == "loop":
        return run_loop(args, settings)
    if args.command == "auto":
        return run_auto(args, settings)
    if args.command == "midi":
        return _midi(args, settings)
    if args.command == "model":
        return _model_import(args, settings)
    if args.command == "worker":
        return _worker(args, settings)
    if args.command == "bot":
        from bot.app import run_bot

        return asyncio.run(run_bot(settings))
    from migrations.runner import upgrade_locked

    upgrade_locked(settings.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
