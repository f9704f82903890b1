"""``beatforge generate``: a beat made in this process, so prompts and models can be tried without Discord or redis."""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from beatforge.bounds import MAX_SEED
from beatforge.config import Settings
from beatforge.contract import BeatParams, SamplingParams, explain
from beatforge.engines import licence_terms, refusal
from beatforge.presets import MOODS, STYLES
from cli.console import output_of, progress_bar, result
from cli.paths import AudioOut, audio_out, file_target_problem

if TYPE_CHECKING:
    from generation.audio.signal import Samples
    from generation.music.engine import GeneratedAudio


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    gen = commands.add_parser("generate", help="generate a beat in this process (no Discord, no redis)")
    gen.add_argument("prompt", help="what the beat should sound like, e.g. 'dark trap, 808s, 140 bpm'")
    gen.add_argument(
        "--duration",
        type=float,
        default=settings.default_duration_s,
        help="seconds (MusicGen 1-120, past 30 in windows; ACE-Step 1-240)",
    )
    gen.add_argument("--seed", type=int, default=None, help="same seed + prompt + model = same beat")
    gen.add_argument(
        "--model",
        default=settings.default_model,
        help="registry name (small, acestep, ...), HF id, local directory, or 'debug' / 'debug-acestep' (tiny random)",
    )
    gen.add_argument("--style", choices=sorted(STYLES), help="style preset blended with the prompt")
    gen.add_argument("--mood", choices=sorted(MOODS), help="mood preset (tempo, key, register)")
    gen.add_argument("--bpm", type=int, help="target tempo: a control on ACE-Step, words in the prompt on MusicGen")
    gen.add_argument("--key", help="key, e.g. 'A minor' or 'F#m' (as --bpm)")
    gen.add_argument("--time-signature", type=int, choices=(2, 3, 4, 6), help="beats per bar (as --bpm)")
    gen.add_argument("--takes", type=int, default=1, help="takes generated together (1-4), each with its own seed")
    gen.add_argument(
        "--best-of",
        type=int,
        help="make this many takes (2-8) and keep the --takes whose CLAP text match is highest, best first",
    )
    gen.add_argument(
        "--clap",
        default=settings.clap_model,
        help="CLAP model for --best-of and the text-match score: HF id, directory or 'debug' (BEATFORGE_CLAP_MODEL)",
    )
    gen.add_argument("--continue", dest="continue_from", type=Path, help="continue this audio file by --duration s")
    gen.add_argument("--melody", type=Path, help="an audio file whose melody to follow (melody models only)")
    gen.add_argument(
        "--enhance",
        action="store_true",
        help="✨ turn a short idea into a detailed prompt first (the LLM at BEATFORGE_LLM_BASE_URL, else the presets)",
    )
    sampling = gen.add_argument_group("sampling")
    sampling.add_argument("--top-k", type=int, default=250, help="0-2048 (0: off)")
    sampling.add_argument("--top-p", type=float, default=0.0, help="0-1 (0: off)")
    sampling.add_argument("--temperature", type=float, default=1.0, help="0.05-4")
    sampling.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance, 1-20 (1: off)")
    gen.add_argument(
        "--out",
        default="beat.wav",
        help="a .wav/.flac/.ogg/.mp3 file (takes 2+: NAME-take2.EXT, ...), or a folder (existing, or ending in /) "
        "for PROMPT-SEED.wav files",
    )
    gen.add_argument(
        "--metadata",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write a .json beside each file: prompt, model, licence, seed, sampling, tempo, key",
    )
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
        key=args.key,
        time_signature=args.time_signature,
        takes=args.takes,
        best_of=args.best_of,
        sampling=sampling,
    )


def _enhance(params: BeatParams, settings: Settings) -> tuple[BeatParams, dict[str, Any]]:
    """The params MusicGen is given for an ✨ enhanced beat (the written prompt in place of the idea and its
    presets, which it already carries), and what the metadata adds: the idea and who wrote the prompt."""
    from generation.prompts.enhance import enhance_prompt
    from generation.prompts.llm import ChatClient

    client = ChatClient.from_settings(settings)
    try:
        enhanced = enhance_prompt(params, client=client)
    finally:
        if client is not None:
            client.close()
    who = "the LLM" if enhanced.source == "llm" else f"the presets ({enhanced.note})"
    sys.stderr.write(f"beatforge: ✨ prompt written by {who}: {enhanced.text}\n")
    used = params.model_copy(update={"prompt": enhanced.text, "style": None, "mood": None})
    return used, {"idea": params.prompt, "prompt_source": enhanced.source, "prompt_note": enhanced.note}


def _target(out: str, *, takes: int, best_of: int | None = None, clap: str | None = None) -> AudioOut | str:
    """Where the takes go, or why they cannot go there (or why the takes cannot be chosen)."""
    if best_of is not None and not clap:
        return "--best-of needs a CLAP model to rank the takes: --clap NAME (or BEATFORGE_CLAP_MODEL)"
    target = audio_out(out)
    if isinstance(target, str) or target.is_folder:  # in a folder, names carry the seed
        return target
    # A later take's name may be taken by a folder.
    takes_at = (target.file(n, name="") for n in range(1, takes + 1))
    return next(filter(None, map(file_target_problem, takes_at)), target)


def _take_path(out: AudioOut, number: int, *, prompt: str, seed: int) -> Path:
    """Where take ``number`` goes: in a folder, named after what it is (``<prompt-slug>-<seed>.<ext>``, each take
    having its own seed), so a folder of beats reads as a list of them; else the named file and NAME-take2.EXT, ..."""
    from generation.loops.export import safe_stem

    return out.file(number, name=f"{safe_stem(prompt)}-{seed}")


def _best(
    takes: list[GeneratedAudio], params: BeatParams, clap: str | None, device: str
) -> list[tuple[GeneratedAudio, float | None]]:
    """Each take with its CLAP text match (None without a CLAP model); with ``best_of``, only the ``takes`` that
    match best, best first."""
    from generation.evaluation.clap import ClapScorer, best_first, clap_scores

    if clap is None:
        return [(take, None) for take in takes]

    scores = clap_scores(ClapScorer.load(clap, device=device), [params.music_text], [t.samples for t in takes],
                         takes[0].sample_rate)  # fmt: skip
    scored: list[tuple[GeneratedAudio, float | None]] = list(zip(takes, scores, strict=True))
    if params.best_of is None:
        return scored
    return [scored[i] for i in best_first(scores, params.takes)]


def _ranking(match: float | None, best_of: int | None) -> dict[str, Any]:
    """The sidecar's CLAP fields: the take's text match, and how many takes it was chosen from (none without CLAP)."""
    return {} if match is None else {"text_match": round(match, 4), "best_of": best_of}


def _metadata(
    params: BeatParams, audio: GeneratedAudio, *, number: int, model: str, licence: str | None, path: Path
) -> dict[str, Any]:
    """What a producer needs to reuse or credit a take without this tool: everything that made it (seed and
    sampling reproduce it), the licence the model's weights carry, and the detected tempo and key (as loops have)."""
    from generation.loops.export import analyse

    analysis = analyse(audio.samples, sample_rate=audio.sample_rate, bpm_hint=params.bpm)
    return {
        "file": path.name,
        "format": path.suffix.lower().lstrip("."),
        "prompt": params.prompt,
        "style": params.style,
        "mood": params.mood,
        "bpm_target": params.bpm,
        "key_target": params.key,
        "time_signature": params.time_signature,
        "model": model,
        "licence": licence,
        "licence_terms": licence_terms(licence or "").line,
        "take": number,
        "seed": audio.seed,
        "sampling": params.sampling.model_dump(mode="json"),
        "duration_s": round(audio.duration_s, 3),
        "sample_rate": audio.sample_rate,
        "channels": int(audio.samples.shape[0]),
        **analysis.to_metadata(),
    }


def run_generate(args: argparse.Namespace, settings: Settings) -> int:
    # Heavy imports stay here, so `beatforge --help` and `beatforge bot` never load torch.
    from generation.analysis import beat_model
    from generation.audio.formats import encode, write_metadata
    from generation.audio.io import read_audio
    from generation.audio.signal import resample
    from generation.errors import AudioParameterError, GenerationError
    from generation.music.engine import generate
    from generation.music.model_cache import ModelCache
    from storage.files import atomic_write_bytes

    beat_model.use(settings.learned_downbeats)
    try:
        params = _params(args)
    except ValidationError as exc:
        sys.stderr.write(f"beatforge: {explain(exc)}\n")
        return 2
    # Bad input is refused before the model loads (minutes for the big ones), not after the beat is made.
    target = _target(args.out, takes=params.takes, best_of=params.best_of, clap=args.clap)
    if isinstance(target, str):
        sys.stderr.write(f"beatforge: {target}\n")
        return 2
    inputs: dict[str, tuple[Samples, int]] = {}
    try:
        for key, path in (("prompt", args.continue_from), ("melody", args.melody)):
            if path is not None:
                inputs[key] = read_audio(path, max_seconds=settings.continue_max_input_s)
    except AudioParameterError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2
    enhanced: dict[str, Any] = {}
    if args.enhance:
        params, enhanced = _enhance(params, settings)
    try:
        # registry names (`small`, an imported fine-tune, a LoRA), HF ids and directories alike
        cache = ModelCache.from_settings(settings, default=args.model)
        reason = refusal(cache.registry.get(args.model).engine, model=args.model, duration_s=params.duration_s)
        if reason is not None:  # before the model loads, like any other bad input
            sys.stderr.write(f"beatforge: {reason.replace('`', '')}\n")
            return 2
        engine = cache.get(args.model)
        audio_in: dict[str, Any] = {
            key: resample(samples, rate, engine.sample_rate) for key, (samples, rate) in inputs.items()
        }
        started = time.perf_counter()
        bar = progress_bar(output_of(args), "generating", audio_s=params.duration_s * params.generated_takes)
        try:
            made = generate(engine, params, fade_out_s=settings.fade_out_s, on_progress=bar, **audio_in)
        finally:
            if bar is not None:
                bar.close()
        scored = _best(made, params, args.clap or None, cache.device)
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    taken = round(time.perf_counter() - started, 2)
    licence = cache.registry.get(args.model).licence or None
    for number, (audio, match) in enumerate(scored, start=1):
        out = _take_path(target, number, prompt=enhanced.get("idea", params.prompt), seed=audio.seed)
        try:
            # encoded in the format the name promises (mp3 at 320 kbps, ogg ~192), never a WAV under another name
            data = encode(audio.samples, sample_rate=audio.sample_rate, fmt=target.fmt)
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out, data)
            sidecar = None
            if args.metadata:
                meta = _metadata(params, audio, number=number, model=engine.name, licence=licence, path=out)
                meta |= enhanced | _ranking(match, params.best_of)
                sidecar = write_metadata(out, meta)
        except GenerationError as exc:  # e.g. mp3 needs ffmpeg where libsndfile cannot write it
            sys.stderr.write(f"beatforge: {exc}\n")
            return 1
        summary = {
            "out": str(out),
            "format": target.fmt,
            "metadata": str(sidecar) if sidecar else None,
            "prompt": params.prompt,
            "model": engine.name,
            "take": number,
            "seed": audio.seed,
            "duration_s": round(audio.duration_s, 3),
            "sample_rate": audio.sample_rate,
            "channels": int(audio.samples.shape[0]),
            "seconds_taken": taken,
            **_ranking(match, params.best_of),
        }
        channels = "" if summary["channels"] == 1 else f" {summary['channels']} channels,"
        rate = f"{audio.sample_rate / 1000:g} kHz"
        line = f"wrote {summary['out']} ({audio.duration_s:.1f} s, {rate},{channels} seed {audio.seed})"
        result(output_of(args), line, summary)
    return 0
