"""``beatforge eval``'s work: check the inputs, make the clips through the worker's engines, embed them and the
reference set, and score every (model, prompt) pair.

Inputs are checked before anything slow (a real model loads for minutes, 150 clips a prompt take longer): the
prompts, every reference file (read in full, so a corrupt one fails now, not after the generation), the model
names, and the embedding models. The clips are made by :meth:`MusicEngine.generate_batch`, as the worker makes
beats, in batches of ``batch_size`` items, and written as WAV files so they are embedded, cached and listened to
like the reference set.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from beatforge.bounds import MAX_SEED
from beatforge.contract import ErrorCode, SamplingParams
from beatforge.engines import refusal
from generation.audio.io import read_audio, write_wav
from generation.errors import GenerationError
from generation.evaluation.clap import DEFAULT_CLAP, ClapScorer
from generation.evaluation.embeddings import Embedder, EmbeddingCache, Embeddings, EncodecEmbedder
from generation.evaluation.fad import FadInf, Statistics, fad, fad_inf, rank_problem, statistics
from generation.music.engine import GenerationItem, MusicEngine
from generation.music.model_cache import ModelCache

log = logging.getLogger(__name__)

EmbeddingKind = Literal["clap", "encodec"]
#: What libsndfile reads (``generation.audio.io.read_audio``); other files in the reference folder are ignored.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"})
#: The row that pools every prompt's clips of a model.
ALL_PROMPTS = "(all prompts)"
#: The MusicGen whose EnCodec embeds when no model of the run is a MusicGen.
FALLBACK_ENCODEC = "small"

Progress = Callable[[str], None]


class EvalInputError(GenerationError):
    """Input that cannot be evaluated (a missing prompts file, an empty or unreadable reference set)."""

    code = ErrorCode.INVALID_REQUEST


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """One evaluation: ``per_prompt`` clips of ``duration_s`` per prompt and model, scored against ``reference``.

    ``clap``: the CLAP model for text–audio scores (and for the embeddings when ``embedding`` is ``clap``); None
    with ``encodec`` embeddings means no CLAP scores. ``encodec``: the MusicGen whose EnCodec embeds (default:
    the first MusicGen among ``models``). ``cache_dir`` (default ``out/cache``) keeps embeddings between runs.
    """

    models: tuple[str, ...]
    prompts_file: Path
    reference: Path
    out: Path
    per_prompt: int = 150
    duration_s: float = 8.0
    embedding: EmbeddingKind = "clap"
    clap: str | None = DEFAULT_CLAP
    encodec: str | None = None
    seed: int = 0
    batch_size: int = 8
    cache_dir: Path | None = None
    fade_out_s: float = 0.5


@dataclass(frozen=True, slots=True)
class Timing:
    """How fast a model made its clips: audio seconds per wall-clock second of ``generate_batch`` (not loading)."""

    model: str
    clips: int
    audio_s: float
    wall_s: float

    @property
    def rtf(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class Row:
    """The scores of one model on one prompt (or on all of them: :data:`ALL_PROMPTS`)."""

    model: str
    prompt: str
    clips: int
    embeddings: int
    fad: float
    fad_inf: FadInf | None
    clap_score: float | None


@dataclass(slots=True)
class EvalResult:
    config: EvalConfig
    prompts: list[str]
    embedder: str
    dim: int
    reference_files: int
    reference_embeddings: int
    clap: str | None
    timings: list[Timing] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, line: str) -> None:
        log.warning("%s", line)
        self.warnings.append(line)


def read_prompts(path: Path) -> list[str]:
    """One prompt a line; blank lines and lines starting with ``#`` are skipped."""
    if not path.is_file():
        raise EvalInputError(f"prompts file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalInputError(f"prompts file {path} cannot be read as UTF-8 text") from exc
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise EvalInputError(f"prompts file {path} has no prompts (one a line)")
    return prompts


def reference_files(folder: Path) -> list[Path]:
    """The audio files in ``folder`` and below, each read once now so that a bad one is named before generating."""
    if not folder.is_dir():
        raise EvalInputError(f"reference folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise EvalInputError(f"reference folder {folder} has no audio files (wav, flac, ogg, mp3, aiff)")
    for path in files:
        try:
            read_audio(path, name=str(path))
        except GenerationError as exc:
            raise EvalInputError(f"reference {exc}") from exc
    return files


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def _check_models(config: EvalConfig, cache: ModelCache) -> None:
    for name in config.models:
        spec = cache.registry.get(name)  # ModelUnavailable for an unknown name
        reason = refusal(spec.engine, model=name, duration_s=config.duration_s)
        if reason is not None:
            raise EvalInputError(reason.replace("`", ""))


def _encodec_source(config: EvalConfig, cache: ModelCache) -> str:
    if config.encodec is not None:
        return config.encodec
    musicgens = [m for m in config.models if cache.registry.get(m).engine == "musicgen"]
    return musicgens[0] if musicgens else FALLBACK_ENCODEC


def load_embedders(config: EvalConfig, cache: ModelCache) -> tuple[Embedder, ClapScorer | None]:
    """The FAD embedder and the CLAP scorer (the same model when ``embedding`` is ``clap``)."""
    if config.embedding == "clap":
        scorer = ClapScorer.load(config.clap or DEFAULT_CLAP, device=cache.device)
        return scorer, scorer
    optional = ClapScorer.load(config.clap, device=cache.device) if config.clap else None
    return EncodecEmbedder.of(cache.get(_encodec_source(config, cache))), optional


def _seed(base: int, prompt: int, clip: int, per_prompt: int) -> int:
    return (base + prompt * per_prompt + clip) % (MAX_SEED + 1)


def generate_clips(
    engine: MusicEngine, prompts: Sequence[str], config: EvalConfig, folder: Path, *, progress: Progress | None = None
) -> tuple[list[list[Path]], Timing]:
    """``per_prompt`` clips of every prompt, in batches, written to ``folder``; the paths per prompt and the timing.

    ``progress`` hears about every tenth of the clips (a line each, not a bar: a run takes hours, often logged).
    """
    items = [
        (p, k, GenerationItem(text, _seed(config.seed, p, k, config.per_prompt), config.duration_s))
        for p, text in enumerate(prompts)
        for k in range(config.per_prompt)
    ]
    paths: list[list[Path]] = [[] for _ in prompts]
    folder.mkdir(parents=True, exist_ok=True)
    wall = audio_s = 0.0
    for start in range(0, len(items), config.batch_size):
        batch = items[start : start + config.batch_size]
        started = time.perf_counter()
        clips = engine.generate_batch([i for _, _, i in batch], sampling=SamplingParams(), fade_out_s=config.fade_out_s)
        wall += time.perf_counter() - started
        for (p, k, _), clip in zip(batch, clips, strict=True):
            path = folder / f"p{p + 1:02d}-{k + 1:03d}.wav"
            write_wav(path, clip.samples, sample_rate=clip.sample_rate)
            paths[p].append(path)
            audio_s += clip.duration_s
        done = start + len(batch)
        if progress is not None and (done * 10 // len(items) > start * 10 // len(items)) and done < len(items):
            progress(f"{engine.name}: {done} of {len(items)} clips")
    return paths, Timing(engine.name, len(items), audio_s, wall)


def _row(
    result: EvalResult, reference: Statistics, model: str, prompt: str, rows: list[Embeddings], score: float | None
) -> Row:
    pooled = np.concatenate(rows)
    problem = rank_problem(pooled.shape[0], result.dim, what=f"{model} / {prompt}")
    if problem is not None:
        result.warn(problem)
    stats = statistics(pooled)
    return Row(model, prompt, len(rows), stats.count, fad(reference, stats), fad_inf(reference, pooled), score)


def _clap_means(scorer: ClapScorer, cache: EmbeddingCache, prompts: list[str], paths: list[list[Path]]) -> list[float]:
    """Each prompt's mean text–audio cosine over its clips (the audio embeddings come from the cache)."""
    texts = scorer.text_embeddings(prompts)
    means = []
    for text, files in zip(texts, paths, strict=True):
        audio = np.concatenate(cache.embed_files(scorer, files))
        means.append(float(np.mean(np.clip(audio @ text, -1.0, 1.0))))
    return means


def run_evaluation(config: EvalConfig, cache: ModelCache, *, progress: Progress | None = None) -> EvalResult:
    """Everything ``beatforge eval`` reports.

    Raises:
        EvalInputError: bad prompts or reference files, or a duration a model cannot make.
        ModelUnavailable: an unknown model, or one (music or embedding) that cannot be loaded.
        GenerationError: a model failed while making its clips.
    """
    say = progress or (lambda _line: None)
    prompts = read_prompts(config.prompts_file)
    references = reference_files(config.reference)
    _check_models(config, cache)
    embedder, scorer = load_embedders(config, cache)
    embeddings = EmbeddingCache(config.cache_dir or config.out / "cache")
    say(f"embedding {len(references)} reference files ({embedder.name})")
    reference_rows = np.concatenate(embeddings.embed_files(embedder, references))
    if reference_rows.shape[0] < 2:
        raise EvalInputError(f"reference folder {config.reference} gives 1 embedding; FAD needs at least 2 files")
    result = EvalResult(
        config=config,
        prompts=prompts,
        embedder=embedder.name,
        dim=int(reference_rows.shape[1]),
        reference_files=len(references),
        reference_embeddings=int(reference_rows.shape[0]),
        clap=scorer.name if scorer is not None else None,
    )
    problem = rank_problem(result.reference_embeddings, result.dim, what="reference set")
    if problem is not None:
        result.warn(problem)
    reference = statistics(reference_rows)
    for number, model in enumerate(config.models, start=1):
        engine = cache.get(model)
        say(f"generating {len(prompts) * config.per_prompt} clips with {model}")
        folder = config.out / "clips" / f"{number}-{_slug(model)}"  # numbered: two names may slug alike
        paths, timing = generate_clips(engine, prompts, config, folder, progress=say)
        result.timings.append(timing)
        say(f"embedding {model}'s clips")
        per_prompt = [embeddings.embed_files(embedder, files) for files in paths]
        scores: list[float | None] = (
            list(_clap_means(scorer, embeddings, prompts, paths)) if scorer else [None] * len(prompts)
        )
        for prompt, rows, score in zip(prompts, per_prompt, scores, strict=True):
            result.rows.append(_row(result, reference, model, prompt, rows, score))
        overall = float(np.mean([s for s in scores if s is not None])) if scorer else None
        result.rows.append(_row(result, reference, model, ALL_PROMPTS, [r for rs in per_prompt for r in rs], overall))
    return result
