"""A tiny, randomly initialised ACE-Step 1.5 pipeline (diffusers' ``AceStepPipeline``), built offline from configs.

The real checkpoints cannot be downloaded here or in CI, so tests (and ``--model debug-acestep``, issue 19) run
the real diffusers code path on this: the same components as ACE-Step 1.5 at a few thousand parameters, saved in
the diffusers layout and loaded back with ``from_pretrained``. What the real model's shapes require, and this
keeps:

- the Oobleck VAE: 48 kHz stereo, hop 2·4·4·6·10 = 1920 samples, so 25 latent frames a second; its encoder emits
  mean and scale, so its hidden size is twice the latent size;
- latent size = the transformer's ``audio_acoustic_hidden_dim`` = the condition encoder's ``timbre_hidden_dim``,
  and the transformer takes three of them in (source latents, mask, noisy latents);
- the condition encoder's width is the transformer's, its ``text_hidden_dim`` the text encoder's;
- the scheduler is flow matching with ``num_train_timesteps=1, shift=1.0``: the pipeline makes its shifted
  sigmas itself;
- the text encoder is a Qwen3 model (the real one is Qwen3-Embedding-0.6B) with a byte-level tokenizer made from
  an in-code vocabulary (the 256 byte symbols and ``<|endoftext|>``, no merges): any prompt tokenizes offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AceStepConditionEncoder,
    AceStepPipeline,
    AceStepTransformer1DModel,
    AutoencoderOobleck,
    FlowMatchEulerDiscreteScheduler,
)
from tokenizers import pre_tokenizers
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3Model

from generation.hf import evaluating

#: The registry name of this model (``generation.music.registry.DEBUG_ACESTEP``).
DEBUG_ACESTEP = "debug-acestep"
#: VAE latent channels (= transformer ``audio_acoustic_hidden_dim`` = condition encoder ``timbre_hidden_dim``).
_LATENT = 4
#: Width of the diffusion transformer and the condition encoder, and of the text encoder.
_HIDDEN = 32
_TEXT = 32


def _tokenizer() -> Qwen2Tokenizer:
    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    return Qwen2Tokenizer(vocab=vocab, merges=[])


def _make(component: Any, **config: Any) -> Any:
    """A diffusers model or scheduler from its config, in eval mode where it has one. Their constructors are
    unannotated (the config goes through ``register_to_config``), so they are Any to a type checker anyway."""
    made = component(**config)
    return made.eval() if hasattr(made, "eval") else made


def build_tiny_acestep(*, seed: int = 0) -> Any:
    """The pipeline, in eval mode, progress bars off. Same ``seed`` → same weights."""
    tokenizer = _tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = Qwen3Model(
            Qwen3Config(
                vocab_size=len(tokenizer),
                hidden_size=_TEXT,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                max_position_embeddings=4096,
            )
        )
        vae = _make(
            AutoencoderOobleck,
            encoder_hidden_size=2 * _LATENT,
            downsampling_ratios=[2, 4, 4, 6, 10],
            channel_multiples=[1, 1, 1, 1, 1],
            decoder_channels=8,
            decoder_input_channels=_LATENT,
            audio_channels=2,
            sampling_rate=48_000,
        )
        transformer = _make(
            AceStepTransformer1DModel,
            hidden_size=_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            in_channels=3 * _LATENT,
            audio_acoustic_hidden_dim=_LATENT,
            patch_size=2,
            sliding_window=16,
        )
        condition_encoder = _make(
            AceStepConditionEncoder,
            hidden_size=_HIDDEN,
            intermediate_size=64,
            text_hidden_dim=_TEXT,
            timbre_hidden_dim=_LATENT,
            num_lyric_encoder_hidden_layers=1,
            num_timbre_encoder_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            sliding_window=16,
        )
    pipeline = _make(
        AceStepPipeline,
        vae=vae,
        text_encoder=evaluating(text_encoder),
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=_make(FlowMatchEulerDiscreteScheduler, num_train_timesteps=1, shift=1.0),
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def save_tiny_acestep(directory: Path, *, seed: int = 0) -> Path:
    """Write the pipeline in the diffusers layout, so tests load it through the real ``from_pretrained`` path."""
    build_tiny_acestep(seed=seed).save_pretrained(directory)
    return directory
