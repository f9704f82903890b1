"""The evaluation written down: ``eval.json`` for scripts and later comparison, ``eval.md`` for people, and
``eval.png``, the same table drawn (matplotlib's Agg canvas: no display, no global pyplot state)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from generation.evaluation.run import ALL_PROMPTS, EvalResult, Row
from storage.files import atomic_write_bytes, atomic_write_text

NO_CLAP = "n/a (no CLAP model: --embedding encodec without --clap)"


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def to_data(result: EvalResult) -> dict[str, Any]:
    """Everything in the report, as plain JSON values."""
    config = result.config
    return {
        "settings": {
            "models": list(config.models),
            "prompts_file": str(config.prompts_file),
            "per_prompt": config.per_prompt,
            "duration_s": config.duration_s,
            "seed": config.seed,
            "batch_size": config.batch_size,
        },
        "embedding": {"name": result.embedder, "dim": result.dim},
        "clap": result.clap,
        "reference": {
            "folder": str(config.reference),
            "files": result.reference_files,
            "embeddings": result.reference_embeddings,
        },
        "models": [
            {
                "model": t.model,
                "clips": t.clips,
                "audio_s": t.audio_s,
                "wall_s": t.wall_s,
                "rtf": t.rtf if math.isfinite(t.rtf) else None,
            }
            for t in result.timings
        ],
        "results": [
            {
                "model": r.model,
                "prompt": r.prompt,
                "clips": r.clips,
                "embeddings": r.embeddings,
                "fad": r.fad,
                "fad_inf": r.fad_inf.score if r.fad_inf else None,
                "fad_inf_slope": r.fad_inf.slope if r.fad_inf else None,
                "fad_inf_r2": r.fad_inf.r2 if r.fad_inf else None,
                "clap_score": r.clap_score,
            }
            for r in result.rows
        ],
        "warnings": result.warnings,
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(result: EvalResult) -> str:
    config = result.config
    lines = [
        "# Evaluation",
        "",
        f"{config.per_prompt} clips of {config.duration_s:g} s per prompt and model, seed {config.seed}. "
        f"Reference: {config.reference} ({result.reference_files} files, {result.reference_embeddings} embeddings). "
        f"Embeddings: {result.embedder} ({result.dim} dimensions). CLAP: {result.clap or 'none'}.",
        "",
        "FAD and FAD∞ (lower is closer to the reference set); FAD∞ is FAD extrapolated to infinitely many "
        "embeddings (n/a: too few clips to fit). CLAP score: mean cosine of each clip with its prompt, in [-1, 1] "
        "(higher matches the words better).",
        "",
        "| model | prompt | clips | FAD | FAD∞ | CLAP score |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        score = _number(r.clap_score, 3) if result.clap else NO_CLAP
        name = f"**{r.prompt}**" if r.prompt == ALL_PROMPTS else r.prompt
        fad_inf = _number(r.fad_inf.score) if r.fad_inf else "n/a"
        lines.append(f"| {_cell(r.model)} | {_cell(name)} | {r.clips} | {_number(r.fad)} | {fad_inf} | {score} |")
    lines += [
        "",
        "## Speed",
        "",
        "| model | clips | audio s | wall s | real-time factor |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in result.timings:
        lines.append(f"| {_cell(t.model)} | {t.clips} | {t.audio_s:.1f} | {t.wall_s:.1f} | {t.rtf:.2f}× |")
    if result.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"


def _plot(result: EvalResult) -> bytes:
    """Grouped bars, one group per prompt (and all prompts), one bar per model: FAD, FAD∞ and the CLAP score."""
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r.model for r in result.rows))
    labels = list(dict.fromkeys(r.prompt for r in result.rows))
    table: dict[tuple[str, str], Row] = {(r.model, r.prompt): r for r in result.rows}
    panels: list[tuple[str, Any]] = [
        ("FAD", lambda r: r.fad),
        ("FAD∞", lambda r: r.fad_inf.score if r.fad_inf else np.nan),
    ]
    if result.clap:
        panels.append(("CLAP score", lambda r: r.clap_score if r.clap_score is not None else np.nan))
    figure = Figure(figsize=(max(6.0, 1.2 * len(labels) * max(1, len(models)) / 2 + 3), 3.2 * len(panels)))
    FigureCanvasAgg(figure)
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(models))
    for index, (title, value) in enumerate(panels):
        axes = figure.add_subplot(len(panels), 1, index + 1)
        for m, model in enumerate(models):
            heights = [value(table[(model, p)]) if (model, p) in table else np.nan for p in labels]
            axes.bar(x + (m - (len(models) - 1) / 2) * width, heights, width, label=model)
        axes.set_title(title)
        axes.set_xlim(-0.5, len(labels) - 0.5)  # a panel of n/a values keeps the others' layout
        axes.set_xticks(x, [p if len(p) <= 24 else p[:23] + "…" for p in labels], rotation=20, ha="right")
        if index == 0:
            axes.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_report(result: EvalResult, out: Path) -> dict[str, Path]:
    """``eval.json``, ``eval.md`` and ``eval.png`` in ``out`` (created if missing), each written atomically."""
    paths = {"json": out / "eval.json", "markdown": out / "eval.md", "plot": out / "eval.png"}
    atomic_write_text(paths["json"], json.dumps(to_data(result), indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(paths["markdown"], to_markdown(result))
    atomic_write_bytes(paths["plot"], _plot(result))
    return paths
