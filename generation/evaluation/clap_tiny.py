"""A tiny, randomly initialised CLAP built from configs in code, so tests run the real transformers path offline.

It has CLAP's real parts at a few thousand parameters: the HTSAT (Swin) audio encoder over 64 mel bins of 48 kHz
audio in 10 s windows, a RoBERTa text encoder, and both projections. The tokenizer is byte-level BPE with no
merges over the 256 byte symbols, so any prompt tokenizes without a downloaded vocabulary. The feature
extractor crops long clips (``rand_trunc``) rather than fusing four views, which the tiny audio encoder (built
without the fusion layers) could not take.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import (
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapProcessor,
    ClapTextConfig,
    RobertaTokenizer,
)

from generation.hf import evaluating

#: The width of both projections: each clip and each text becomes this many numbers.
TINY_CLAP_DIM = 16
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa's, at its ids 0-4


def _tokenizer() -> RobertaTokenizer:
    vocab = {token: i for i, token in enumerate(_SPECIALS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=128)


def build_tiny_clap(*, seed: int = 0) -> tuple[ClapModel, ClapProcessor]:
    """The model (in eval mode) and its processor. Same ``seed`` → same weights."""
    tokenizer = _tokenizer()
    text = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=130,  # 128 tokens + RoBERTa's position offset
        projection_dim=TINY_CLAP_DIM,
        pad_token_id=1,
    )
    audio = ClapAudioConfig(
        patch_embeds_hidden_size=8,
        hidden_size=64,  # patch_embeds_hidden_size doubled at each of the 4 stages after the first
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 1],
        projection_dim=TINY_CLAP_DIM,
        enable_fusion=False,
    )
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=TINY_CLAP_DIM)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = evaluating(ClapModel(config))
    processor = ClapProcessor(  # type: ignore[no-untyped-call]  # ProcessorMixin has no annotations
        feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tokenizer
    )
    return model, processor


def save_tiny_clap(directory: Path, *, seed: int = 0) -> Path:
    """Write the tiny CLAP in the Hugging Face layout, so it loads through the real ``from_pretrained`` path."""
    model, processor = build_tiny_clap(seed=seed)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
