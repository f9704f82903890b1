"""Randomly-initialised MusicGens, built from configs in code: the tiny one (our ``get_pretrained('debug')``), and
the real small and medium architectures.

No weights can be downloaded in tests or CI, yet the whole pipeline must run through the real
transformers code. The tiny model has MusicGen's real architecture (T5 text encoder, 4-codebook
decoder with the delay pattern, EnCodec at 32 kHz / 50 Hz) at a size that decodes hundreds of
steps per second on a CPU. Its output is noise-like audio, but seed-determined noise. The real-size
ones (:func:`build_real_arch`) are for benches and for checking fast paths at the real shapes.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import (
    EncodecConfig,
    EncodecFeatureExtractor,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenMelodyConfig,
    MusicgenMelodyDecoderConfig,
    MusicgenMelodyForConditionalGeneration,
    MusicgenProcessor,
    T5Config,
    T5Tokenizer,
)

from generation.hf import evaluating, sub_config

DEBUG_MODEL = "debug"
_CODEBOOK_SIZE = 64
_SAMPLE_RATE = 32_000


def _tokenizer() -> T5Tokenizer:
    """A unigram vocabulary of single characters, so any lowercase prompt tokenizes offline."""
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for ch in string.ascii_lowercase + string.digits + ",.-'!?":
        vocab += [("▁" + ch, -3.0), (ch, -4.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_tiny_musicgen(
    *, audio_channels: int = 1, seed: int = 0, text_ff_dim: int = 64
) -> tuple[MusicgenForConditionalGeneration, MusicgenProcessor]:
    """Build the model and its processor. Same ``seed`` → same weights.

    ``text_ff_dim``: the text encoder's feed-forward width. A wide one makes the model slow to load (its weights)
    while generating stays as quick (the prompt is encoded once): what a GPU sees, where loading a real model
    takes longer than making a beat (bench/scale.py's routing part).
    """
    tokenizer = _tokenizer()
    text = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=text_ff_dim, num_layers=2, num_heads=4)
    # 4 codebooks of 6 bits at 50 Hz = 1.2 kbps, so EnCodec's quantizer uses exactly the 4 codebooks the decoder emits.
    audio = EncodecConfig(
        sampling_rate=_SAMPLE_RATE,
        audio_channels=1,  # stereo MusicGen codes each channel with the same mono EnCodec
        num_filters=4,
        codebook_size=_CODEBOOK_SIZE,
        codebook_dim=16,
        hidden_size=16,
        upsampling_ratios=[8, 5, 4, 4],
        num_lstm_layers=1,
        target_bandwidths=[1.2],
        normalize=False,
    )
    num_codebooks = 4 * audio_channels  # stereo MusicGen interleaves left/right codebooks
    decoder = MusicgenDecoderConfig(
        vocab_size=_CODEBOOK_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        num_codebooks=num_codebooks,
        audio_channels=audio_channels,
        max_position_embeddings=8192,
        pad_token_id=_CODEBOOK_SIZE,  # like the real checkpoints: pad/start token = codebook size
        bos_token_id=_CODEBOOK_SIZE,
    )
    # transformers' configs accept extra keys (strict(accept_kwargs=True)), which their typed signature cannot show
    config = MusicgenConfig(  # type: ignore[call-arg]
        text_encoder=text.to_dict(),
        audio_encoder=audio.to_dict(),
        decoder=decoder.to_dict(),
        decoder_start_token_id=_CODEBOOK_SIZE,
        pad_token_id=_CODEBOOK_SIZE,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = evaluating(MusicgenForConditionalGeneration(config))
    # A fresh EnCodec has all-zero codebooks: every code would decode to the same sound.
    for name, buffer in model.audio_encoder.named_buffers():
        if name.endswith("codebook.embed"):
            buffer.copy_(torch.randn(buffer.shape, generator=generator))
    model.generation_config.do_sample = True
    model.generation_config.guidance_scale = 3.0
    processor = MusicgenProcessor(  # type: ignore[no-untyped-call]  # transformers' ProcessorMixin has no annotations
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=_SAMPLE_RATE),
        tokenizer=tokenizer,
    )
    return model, processor


def save_tiny_musicgen(directory: Path, *, audio_channels: int = 1, seed: int = 0, text_ff_dim: int = 64) -> Path:
    """Write a tiny model in the Hugging Face layout, so tests load it through the real ``from_pretrained`` path."""
    model, processor = build_tiny_musicgen(audio_channels=audio_channels, seed=seed, text_ff_dim=text_ff_dim)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_tiny_musicgen_melody(*, seed: int = 0) -> tuple[MusicgenMelodyForConditionalGeneration, T5Tokenizer]:
    """The tiny model's melody sibling: the same parts, plus chroma conditioning prepended to the decoder's input.

    Returns the tokenizer alone: transformers' melody feature extractor needs torchaudio, which cannot be
    installed beside our torch, so beatforge computes the chroma itself (``generation/chroma.py``).
    """
    base, processor = build_tiny_musicgen(seed=seed)
    decoder = MusicgenMelodyDecoderConfig(
        **{k: v for k, v in sub_config(base.config.decoder, part="decoder").to_dict().items() if k != "model_type"}
    )
    config = MusicgenMelodyConfig(  # type: ignore[call-arg]  # extra keys, as above
        text_encoder=sub_config(base.config.text_encoder, part="text encoder").to_dict(),
        audio_encoder=sub_config(base.config.audio_encoder, part="audio encoder").to_dict(),
        decoder=decoder.to_dict(),
        num_chroma=12,
        chroma_length=235,  # 30 s of chroma at 32 kHz / 4096, as the real melody checkpoints
        decoder_start_token_id=_CODEBOOK_SIZE,
        pad_token_id=_CODEBOOK_SIZE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = evaluating(MusicgenMelodyForConditionalGeneration(config))
    model.audio_encoder.load_state_dict(base.audio_encoder.state_dict())  # the randomised codebooks
    with torch.no_grad():  # random init barely lets the chroma through; tests need a melody to visibly steer
        model.audio_enc_to_dec_proj.weight.mul_(1000.0)
    model.generation_config.do_sample = True
    return model, processor.tokenizer


def save_tiny_musicgen_melody(directory: Path, *, seed: int = 0) -> Path:
    model, tokenizer = build_tiny_musicgen_melody(seed=seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


#: Decoder width, layers and heads per size (ffn = 4 x width), as transformers' convert_musicgen_transformers.py.
ARCHS = {"small": (1024, 24, 16), "medium": (1536, 48, 24)}
CODEBOOK_SIZE = 2048  # also the pad / decoder start token, as in the checkpoints


def build_real_arch(arch: str, device: str = "cpu") -> tuple[MusicgenForConditionalGeneration, MusicgenProcessor]:
    """facebook/musicgen-{small,medium}'s architecture with random weights (speed does not depend on their values).

    The tokenizer is the tiny model's character-level one, the text encoder's vocabulary sized to it.
    """
    hidden, layers, heads = ARCHS[arch]
    tokenizer = _tokenizer()
    text = T5Config(  # t5-base, the text encoder of every MusicGen
        vocab_size=len(tokenizer),
        d_model=768,
        d_kv=64,
        d_ff=3072,
        num_layers=12,
        num_heads=12,
        relative_attention_num_buckets=32,
        feed_forward_proj="relu",
    )
    audio = EncodecConfig(  # facebook/encodec_32khz (convert_encodec_checkpoint_to_pytorch.py, "encodec_32khz")
        sampling_rate=32_000,
        audio_channels=1,
        num_filters=64,
        upsampling_ratios=[8, 5, 4, 4],
        codebook_size=CODEBOOK_SIZE,
        codebook_dim=128,
        hidden_size=128,
        num_lstm_layers=2,
        target_bandwidths=[2.2],
        normalize=False,
        use_causal_conv=False,
        use_conv_shortcut=False,
        compress=2,
        residual_kernel_size=3,
        num_residual_layers=1,
        norm_type="weight_norm",
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=CODEBOOK_SIZE,
        max_position_embeddings=2048,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        ffn_dim=4 * hidden,
        num_codebooks=4,
        audio_channels=1,
        pad_token_id=CODEBOOK_SIZE,
        bos_token_id=CODEBOOK_SIZE,
        tie_word_embeddings=False,
    )
    config = MusicgenConfig(  # type: ignore[call-arg]  # extra keys, as build_tiny_musicgen
        text_encoder=text.to_dict(),
        audio_encoder=audio.to_dict(),
        decoder=decoder.to_dict(),
        decoder_start_token_id=CODEBOOK_SIZE,
        pad_token_id=CODEBOOK_SIZE,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialise where it will run: random init of 1.5 B parameters is slow on a CPU
        model = MusicgenForConditionalGeneration(config)
    # transformers picks sdpa where a part supports it (EnCodec has no attention): what load()'s "sdpa" asks for
    assert model.decoder.config._attn_implementation == "sdpa", model.decoder.config._attn_implementation
    generator = torch.Generator(device=device).manual_seed(0)
    for name, buffer in model.audio_encoder.named_buffers():  # as tiny.py: a fresh EnCodec's codebooks are zeros
        if name.endswith("codebook.embed"):
            buffer.copy_(torch.randn(buffer.shape, generator=generator, device=device))
    gen = model.generation_config  # what the conversion script sets on the published checkpoints
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = CODEBOOK_SIZE
    gen.max_length, gen.do_sample, gen.guidance_scale = int(30 * audio.frame_rate), True, 3.0
    processor = MusicgenProcessor(  # type: ignore[no-untyped-call]
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32_000), tokenizer=tokenizer
    )
    return model, processor
