"""A tiny randomly-initialised Stable Diffusion, built from configs in code (cover art's ``'debug'`` model).

No weights can be downloaded in tests or CI, yet cover generation must run through the real
diffusers code. This pipeline has Stable Diffusion's real architecture (CLIP text encoder →
cross-attention UNet → KL VAE, an Euler-ancestral scheduler configured like sd-turbo) at a size
that renders a 64x64 image in a few tens of milliseconds on a CPU. Its pictures are coloured noise,
but seed-determined noise. A tiny ``StableDiffusionSafetyChecker`` comes with it, whose verdict a
test sets outright with :func:`set_tiny_safety_verdict`.
"""

from __future__ import annotations

from pathlib import Path

import torch

# From their own modules, not the package's lazy top level: to a type checker that one names diffusers' dummy
# placeholder classes (what it exports without torch), which have no methods.
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteScheduler
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig
from transformers.image_processing_utils import BaseImageProcessor

from generation.hf import evaluating

DEBUG_COVER_MODEL = "debug"
_MAX_TOKENS = 77  # CLIP's context length; the pipeline pads/truncates every prompt to it
_HIDDEN = 32
_VISION_IMAGE_SIZE = 32
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _tokenizer() -> CLIPTokenizer:
    """A byte-level BPE with no merges: every byte is a token, so any prompt tokenizes offline without ``<unk>``.

    CLIP's pre-tokenizer splits words and marks each word's last symbol with ``</w>``, so the vocabulary
    holds each of the 256 byte-level symbols twice: bare and word-final.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols = [_BOS, _EOS, *alphabet, *(ch + "</w>" for ch in alphabet)]
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=_MAX_TOKENS)


def _text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=64,
        projection_dim=_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # the pooled output is read at the first EOS token
        pad_token_id=tokenizer.pad_token_id,
    )
    return evaluating(CLIPTextModel(config))


# diffusers' models and schedulers take their config through an untyped decorator (register_to_config), so their
# constructors return Any to a type checker: the annotated locals below say what they build.


def _unet() -> UNet2DConditionModel:
    unet: UNet2DConditionModel = UNet2DConditionModel(
        sample_size=32,  # latents of 32x32, so the default image is 32 * vae_scale_factor (2) = 64 px square
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=_HIDDEN,
        attention_head_dim=(2, 4),  # (legacy name) the number of heads per block: 64 channels / 4 = 16 per head
    )
    return evaluating(unet)


def _vae() -> AutoencoderKL:
    vae: AutoencoderKL = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        sample_size=64,
    )
    return evaluating(vae)


def _scheduler() -> EulerAncestralDiscreteScheduler:
    """sd-turbo's scheduler config: one to four steps with ``guidance_scale=0.0``."""
    scheduler: EulerAncestralDiscreteScheduler = EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        steps_offset=1,
        timestep_spacing="trailing",
    )
    return scheduler


def build_tiny_sd_pipeline(*, seed: int = 0) -> StableDiffusionPipeline:
    """Build the pipeline, without a safety checker (beatforge runs its own). Same ``seed`` → same weights."""
    tokenizer = _tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = _text_encoder(tokenizer)
        unet = _unet()
        vae = _vae()
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        # diffusers annotates these as the enum of scheduler names and as never None, though it documents a
        # scheduler instance and None for both parts beatforge replaces with its own safety check
        scheduler=_scheduler(),  # type: ignore[arg-type]
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)  # type: ignore[no-untyped-call]  # unannotated in diffusers
    return pipeline


def save_tiny_sd_pipeline(directory: Path, *, seed: int = 0) -> Path:
    """Write a tiny pipeline in the diffusers layout, so tests load it through the real ``from_pretrained`` path."""
    build_tiny_sd_pipeline(seed=seed).save_pretrained(directory)
    return directory


def build_tiny_safety_checker(*, seed: int = 0) -> tuple[StableDiffusionSafetyChecker, BaseImageProcessor]:
    """Build diffusers' safety checker on a tiny CLIP and its image processor. It flags nothing until told to.

    Same ``seed`` → same weights. The processor is what ``CLIPImageProcessor(...)`` returns: without torchvision
    installed transformers 5 hands back its PIL backend, ``CLIPImageProcessorPil``, which is no subclass of it.
    """
    # The checker never runs a text tower, but CLIPConfig needs one; ids inside its vocabulary keep transformers quiet.
    text = CLIPTextConfig(
        vocab_size=100,
        hidden_size=_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_MAX_TOKENS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=_VISION_IMAGE_SIZE,
        patch_size=8,
    )
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=_HIDDEN)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        checker = evaluating(StableDiffusionSafetyChecker(config))
    # A fresh checker has identical all-ones concept embeddings; give each concept its own direction, as real ones have.
    with torch.no_grad():
        for embeds in (checker.concept_embeds, checker.special_care_embeds):
            embeds.copy_(torch.randn(embeds.shape, generator=generator))
    set_tiny_safety_verdict(checker, flag_everything=False)
    processor = CLIPImageProcessor(
        size={"shortest_edge": _VISION_IMAGE_SIZE},
        crop_size={"height": _VISION_IMAGE_SIZE, "width": _VISION_IMAGE_SIZE},
    )
    return checker, processor


def set_tiny_safety_verdict(checker: StableDiffusionSafetyChecker, *, flag_everything: bool) -> None:
    """Make ``checker`` flag every image (``True``) or none (``False``), whatever the image.

    The checker flags an image when, for some concept, ``cosine(image, concept) - concept_embeds_weights[i]``
    is above 0 (``special_care_embeds_weights`` only lowers that bar by 0.01). A cosine lies in [-1, 1], so a
    threshold of -2 is always beaten and one of 2 never is.
    """
    threshold = -2.0 if flag_everything else 2.0
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)


def save_tiny_safety_checker(directory: Path, *, seed: int = 0) -> Path:
    """Write a tiny checker and its processor, loadable with ``StableDiffusionSafetyChecker.from_pretrained``."""
    checker, processor = build_tiny_safety_checker(seed=seed)
    checker.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
