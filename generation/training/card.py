"""The model card a training run leaves beside its weights (``card.json`` for programs, ``README.md`` for people,
``loss.png`` for the curve), and registering a finished output directory from it.

The card is what makes a directory of weights answerable later: which base it needs, what data it saw (a
fingerprint, not the data), with which settings, how far the loss fell, and under which licence (the base's: a
fine-tune of a non-commercial model is non-commercial too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from generation.music.registry import ModelRegistry, ModelSpec, RegistryError
from generation.training.checkpoint import History

CARD_FILE = "card.json"
LOSS_PLOT = "loss.png"


def render_readme(card: dict[str, Any]) -> str:
    data, hp = card["data"], card["hyper_parameters"]
    val = f"{card['val_loss']:.4f}" if card["val_loss"] is not None else "n/a (no validation clips)"
    lines = [
        f"# {card['name']}",
        "",
        f"A {'LoRA adapter for' if card['kind'] == 'lora' else 'full fine-tune of'} MusicGen `{card['base']}`"
        f" (`{card['base_source']}`), trained with `beatforge train`.",
        "",
        f"- **Licence:** {card['licence']} (inherited from the base model)",
        f"- **Data:** {data['clips']} clips, {data['seconds']:.1f} s, {data['windows']} windows of {hp['window_s']:g} s"
        f" ({data['val_windows']} held out); fingerprint `{data['fingerprint'][:16]}`",
        f"- **Steps:** {card['steps']} at batch {hp['batch_size']} x {hp['grad_accum']}, lr {hp['lr']:g},"
        f" precision {card['precision']}",
        f"- **Final loss:** train {card['train_loss']:.4f}, validation {val}",
        "",
        "## Hyper-parameters",
        "",
        *(f"- `{key}`: {value}" for key, value in sorted(hp.items())),
        "",
        f"![loss]({LOSS_PLOT})",
        "",
    ]
    return "\n".join(lines)


def plot_loss(history: History, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a worker or in CI
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    try:
        if history.train:
            axes.plot(*zip(*history.train, strict=True), label="train", linewidth=1)
        if history.val:
            axes.plot(*zip(*history.val, strict=True), label="validation", marker="o")
        axes.set_xlabel("step")
        axes.set_ylabel("cross-entropy")
        axes.legend()
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)


def write_card(directory: Path, card: dict[str, Any], history: History) -> None:
    (directory / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (directory / "README.md").write_text(render_readme(card), encoding="utf-8")
    plot_loss(history, directory / LOSS_PLOT)


def read_card(directory: Path) -> dict[str, Any]:
    """Raises RegistryError when ``directory`` has no readable card (it was not written by ``beatforge train``)."""
    try:
        card = json.loads((directory / CARD_FILE).read_text(encoding="utf-8"))
        if not isinstance(card, dict) or card.get("kind") not in ("lora", "finetune"):
            raise ValueError("not a training card")
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{directory} has no readable {CARD_FILE} (was it written by `beatforge train`?)") from exc
    return card


def register_output(
    directory: Path, registry: ModelRegistry, *, name: str | None = None, replace_existing: bool = False
) -> ModelSpec:
    """Register a finished training directory under its card's name (or ``name``): a LoRA on its base, or a full
    fine-tune as a local model.

    Raises:
        RegistryError: no card, a taken name, a LoRA whose base is not a registry name, no registry file.
    """
    card = read_card(directory)
    lora = card["kind"] == "lora"
    spec = ModelSpec(
        name=name or str(card["name"]),
        source=str(directory.resolve()),
        kind="lora" if lora else "finetune",
        base=str(card["base"]) if lora else None,
        licence=str(card.get("licence", "")),
        description=f"fine-tuned from {card['base']} on {card['data']['clips']} clips ({card['steps']} steps)",
        stereo=bool(card.get("stereo", False)),
    )
    return registry.register(spec, replace_existing=replace_existing)
