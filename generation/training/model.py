"""The model being trained: the base loaded in float32, frozen where it must be, with LoRA layers or a trainable
decoder, and saved in the layout the engine loads back.

* LoRA (the default) wraps only the decoder (``get_peft_model(model.decoder, ...)``) on its attention (self and cross)
  and feed-forward projections, so ``save_pretrained`` writes keys starting ``base_model.model.model.decoder.``:
  what ``MusicGenEngine.apply_lora`` merges into a decoder.
* ``--full`` trains the decoder (and the text-to-decoder projection, where the widths differ) and saves the whole
  model with its processor, which loads as any local MusicGen directory.

The T5 text encoder and EnCodec stay frozen either way: the codes and the text states are inputs, not outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import MusicgenForConditionalGeneration

from generation.errors import GenerationError
from generation.hf import evaluating, on_device
from generation.music.musicgen import MusicGenEngine
from generation.music.registry import ModelRegistry, ModelSpec
from generation.training.config import TrainConfig

#: The decoder's projections LoRA adapts (q/k/v/out of self- and cross-attention, and the feed-forward pair).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


@dataclass(slots=True)
class Trainee:
    """The base model with its trainable part. ``adapter`` is the peft wrapper of the decoder (None: full)."""

    model: MusicgenForConditionalGeneration
    processor: Any
    spec: ModelSpec
    adapter: Any | None

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def train_mode(self) -> None:
        """Dropout on in the decoder only: the frozen encoders must give the same states every time."""
        evaluating(self.model)
        self.model.decoder.train()

    def save(self, directory: Path) -> None:
        """The adapter (peft's layout) or the whole model with its processor (a local MusicGen directory)."""
        if self.adapter is not None:
            self.adapter.save_pretrained(str(directory))
            return
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)


def resolve_base(name: str, registry: ModelRegistry) -> tuple[ModelSpec | None, list[str]]:
    """The base's registry entry, or the reasons it cannot be trained on (unknown, a LoRA, not text-only MusicGen)."""
    try:
        spec = registry.get(name)
    except GenerationError as exc:
        return None, [str(exc)]
    if spec.kind == "lora":
        return None, [f"base {name!r} is a LoRA; train on its base model ({spec.base}) instead"]
    if spec.engine != "musicgen":
        return None, [f"base {name!r} runs on {spec.engine}; only MusicGen models can be fine-tuned here"]
    if spec.melody:
        return None, [f"base {name!r} is a melody model; only text-to-music MusicGen models can be fine-tuned here"]
    return spec, []


def load_trainee(spec: ModelSpec, config: TrainConfig, *, device: str) -> Trainee:
    """The base in float32 on ``device`` (autocast picks the compute precision), made trainable as asked.

    Raises:
        ModelUnavailable: the base cannot be loaded.
    """
    engine = MusicGenEngine.load(spec.source, device="cpu")  # on a CPU the engine loads float32 weights
    if not isinstance(engine.model, MusicgenForConditionalGeneration):
        raise GenerationError(f"base {spec.name!r} is not a text-to-music MusicGen")
    return make_trainable(engine.model, engine.processor, spec, config, device=device)


def make_trainable(
    model: MusicgenForConditionalGeneration, processor: Any, spec: ModelSpec, config: TrainConfig, *, device: str
) -> Trainee:
    """``model`` (float32) on ``device``, frozen but for the LoRA layers or the decoder (bench/train.py builds its
    own models and comes in here)."""
    model = on_device(model, device)
    model.requires_grad_(False)
    adapter = None
    if config.full:
        model.decoder.requires_grad_(True)
        if hasattr(model, "enc_to_dec_proj"):
            model.enc_to_dec_proj.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=LORA_TARGETS
        )
        # injected in place: model.decoder now holds the LoRA layers, and the wrapper saves just the adapter
        adapter = get_peft_model(model.decoder, lora)
    if config.grad_checkpointing:
        model.decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainee = Trainee(model, processor, spec, adapter)
    trainee.train_mode()
    return trainee
