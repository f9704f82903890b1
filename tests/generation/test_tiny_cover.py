"""The tiny Stable Diffusion and safety checker: real diffusers code paths, offline, fast, seed-determined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image
from transformers import CLIPImageProcessor
from transformers.image_processing_utils import BaseImageProcessor

from generation.cover.tiny import (
    DEBUG_COVER_MODEL,
    build_tiny_safety_checker,
    build_tiny_sd_pipeline,
    save_tiny_safety_checker,
    save_tiny_sd_pipeline,
    set_tiny_safety_verdict,
)

PROMPT = "dark trap beat, 808s & neon rain at 3am!"


@pytest.fixture(scope="module")
def built() -> StableDiffusionPipeline:
    return build_tiny_sd_pipeline()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> StableDiffusionPipeline:
    directory = save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd"))
    pipeline = AutoPipelineForText2Image.from_pretrained(directory)
    pipeline.set_progress_bar_config(disable=True)  # a per-instance setting: save_pretrained does not keep it
    return pipeline


@pytest.fixture(params=["built", "loaded"])
def pipeline(request: pytest.FixtureRequest) -> StableDiffusionPipeline:
    return request.getfixturevalue(request.param)


def _render(pipeline: StableDiffusionPipeline, *, seed: int = 1, **kwargs: Any) -> np.ndarray:
    kwargs = {"num_inference_steps": 2, "guidance_scale": 0.0, **kwargs}
    image = pipeline(PROMPT, generator=torch.Generator().manual_seed(seed), **kwargs).images[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    return np.asarray(image)


def test_debug_name() -> None:
    assert DEBUG_COVER_MODEL == "debug"


def test_loads_through_both_entry_points(loaded: StableDiffusionPipeline, tmp_path: Path) -> None:
    assert type(loaded) is StableDiffusionPipeline
    assert loaded.safety_checker is None and loaded.feature_extractor is None
    assert loaded.scheduler.__class__.__name__ == "EulerAncestralDiscreteScheduler"
    assert loaded.scheduler.config.timestep_spacing == "trailing"
    direct = StableDiffusionPipeline.from_pretrained(save_tiny_sd_pipeline(tmp_path, seed=5))
    assert type(direct) is StableDiffusionPipeline and direct.safety_checker is None


def test_tokenizer_is_clip_sized_and_covers_prompts(pipeline: StableDiffusionPipeline) -> None:
    tokenizer = pipeline.tokenizer
    assert tokenizer.model_max_length == 77
    ids = tokenizer("abc xyz 0123456789 ,.-'!?&()/:; café").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in ids[1:-1]  # the unknown token is EOS: nothing fell back to it
    assert tokenizer.decode(ids, skip_special_tokens=True) == "abc xyz 0 1 2 3 4 5 6 7 8 9 ,.-'!?&()/:; café"


def test_default_size_is_64(built: StableDiffusionPipeline) -> None:
    assert _render(built).shape == (64, 64, 3)


@pytest.mark.parametrize("size", [64, 128])
def test_turbo_style_renders_the_requested_size(pipeline: StableDiffusionPipeline, size: int) -> None:
    pixels = _render(pipeline, height=size, width=size)
    assert pixels.shape == (size, size, 3)
    assert pixels.std() > 10  # a picture, not a flat colour


def test_guidance_with_negative_prompt(pipeline: StableDiffusionPipeline) -> None:
    guided = _render(pipeline, guidance_scale=3.0, negative_prompt="blurry, text", height=64, width=96)
    assert guided.shape == (64, 96, 3)
    assert not np.array_equal(guided, _render(pipeline, height=64, width=96))  # the text conditioning matters


def test_same_seed_same_pixels_other_seed_other_pixels(pipeline: StableDiffusionPipeline) -> None:
    first, again, other = _render(pipeline, seed=7), _render(pipeline, seed=7), _render(pipeline, seed=8)
    assert np.array_equal(first, again)
    assert np.abs(first.astype(np.int16) - other).mean() > 10


def test_loaded_pipeline_has_the_built_weights(built: StableDiffusionPipeline, loaded: StableDiffusionPipeline) -> None:
    assert np.array_equal(_render(built), _render(loaded))


def test_build_seed_determines_the_weights() -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        pipeline = build_tiny_sd_pipeline(seed=seed)
        models = (pipeline.unet, pipeline.vae, pipeline.text_encoder)
        return [tensor for model in models for tensor in model.state_dict().values()]

    a, b, c = weights(3), weights(3), weights(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, z) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_step_callback_once_per_step(built: StableDiffusionPipeline, steps: int) -> None:
    seen: list[int] = []

    def on_step(_pipe: object, step: int, _timestep: object, kwargs: dict[str, Any]) -> dict[str, Any]:
        seen.append(step)
        return kwargs

    _render(built, num_inference_steps=steps, callback_on_step_end=on_step)
    assert seen == list(range(steps))


def _check(
    checker: StableDiffusionSafetyChecker, processor: BaseImageProcessor, pipeline: StableDiffusionPipeline
) -> tuple[np.ndarray, list[bool]]:
    """Run the checker the way diffusers' pipelines do, on two real tiny-SD images."""
    generator = torch.Generator().manual_seed(0)
    images = pipeline([PROMPT] * 2, num_inference_steps=2, guidance_scale=0.0, generator=generator, output_type="np")
    np_images = images.images
    clip_input = processor(pipeline.numpy_to_pil(np_images), return_tensors="pt").pixel_values
    assert clip_input.shape == (2, 3, 32, 32)
    checked, flagged = checker(images=np_images.copy(), clip_input=clip_input)
    return checked, flagged


@pytest.mark.parametrize("flag_everything", [True, False])
def test_safety_verdict_is_set_by_the_helper(built: StableDiffusionPipeline, flag_everything: bool) -> None:
    checker, processor = build_tiny_safety_checker()
    set_tiny_safety_verdict(checker, flag_everything=flag_everything)
    checked, flagged = _check(checker, processor, built)
    assert flagged == [flag_everything] * 2
    assert bool(checked.max() == 0) is flag_everything  # flagged images come back black


def test_safety_checker_flags_nothing_by_default_and_round_trips(
    built: StableDiffusionPipeline, tmp_path: Path
) -> None:
    assert _check(*build_tiny_safety_checker(), built)[1] == [False, False]
    directory = save_tiny_safety_checker(tmp_path)
    checker = StableDiffusionSafetyChecker.from_pretrained(directory).eval()
    processor = CLIPImageProcessor.from_pretrained(directory)
    assert _check(checker, processor, built)[1] == [False, False]
    set_tiny_safety_verdict(checker, flag_everything=True)
    assert _check(checker, processor, built)[1] == [True, True]
