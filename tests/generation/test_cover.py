"""Cover art through the real diffusers path (tiny random pipeline), its safety check, and the fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beatforge.config import Settings
from beatforge.presets import MOODS, STYLES
from generation.cover.maker import CoverMaker, DiffusionCover
from generation.cover.prompt import NEGATIVE_PROMPT, build_cover_prompt
from generation.cover.tiny import build_tiny_safety_checker, save_tiny_sd_pipeline, set_tiny_safety_verdict
from generation.errors import GenerationCancelled, ModelUnavailable


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd"))


def _safety_dir(tmp_path: Path, *, flag_everything: bool) -> Path:
    checker, processor = build_tiny_safety_checker()
    set_tiny_safety_verdict(checker, flag_everything=flag_everything)
    checker.save_pretrained(tmp_path / "safety")
    processor.save_pretrained(tmp_path / "safety")
    return tmp_path / "safety"


def _settings(**overrides: object) -> Settings:
    base = {"cover_mode": "diffusion", "cover_model": "debug", "cover_safety_model": "debug", "cover_size": 64}
    return Settings(_env_file=None, **(base | overrides))  # type: ignore[call-arg, arg-type]


@pytest.mark.parametrize("style", [None, *STYLES])
@pytest.mark.parametrize("mood", [None, *MOODS])
def test_cover_prompt_for_every_preset(style: str | None, mood: str | None) -> None:
    spec = build_cover_prompt(description="dark psychedelic trap, 808s, 140 bpm, flutes", style=style, mood=mood)
    assert spec.prompt.startswith("square album cover art")
    assert "dark psychedelic trap" in spec.prompt and "flutes" in spec.prompt
    assert "bpm" not in spec.prompt.lower() and "808" not in spec.prompt and ", ," not in spec.prompt
    if style:
        assert STYLES[style].visual in spec.prompt
    if mood:
        assert MOODS[mood].visual in spec.prompt
    assert spec.negative == NEGATIVE_PROMPT and "text" in spec.negative  # no fake lettering
    assert len(spec.prompt.split()) < 77


def test_cover_prompt_with_only_jargon_keeps_the_preset_look() -> None:
    spec = build_cover_prompt(description="140 bpm, 808s", style="lofi")
    assert "inspired by" not in spec.prompt and STYLES["lofi"].visual in spec.prompt


def test_diffusion_cover_from_a_saved_pipeline(tiny_sd_dir: Path, tmp_path: Path) -> None:
    maker = CoverMaker(
        _settings(cover_model=str(tiny_sd_dir), cover_safety_model=str(_safety_dir(tmp_path, flag_everything=False))),
        device="cpu",
    )
    cover = maker.make(description="lofi rain", seed=1, style="lofi", mood="calm")
    assert (cover.source, cover.model, cover.note) == ("diffusion", str(tiny_sd_dir), None)
    assert cover.image.size == (64, 64) and cover.image.mode == "RGB"
    again = maker.make(description="lofi rain", seed=1, style="lofi", mood="calm")
    other = maker.make(description="lofi rain", seed=2, style="lofi", mood="calm")
    a, b, c = (np.asarray(x.image, dtype=np.int16) for x in (cover, again, other))
    assert (a == b).all() and np.abs(a - c).mean() > 5


def test_flagged_images_are_replaced_by_the_fallback(tmp_path: Path) -> None:
    maker = CoverMaker(_settings(cover_safety_model=str(_safety_dir(tmp_path, flag_everything=True))), device="cpu")
    cover = maker.make(description="anything", seed=3, mood="tense")
    assert cover.source == "procedural" and "safety check" in (cover.note or "")
    assert np.asarray(cover.image).std() > 10  # a real picture, not the checker's black square


def test_safety_check_can_be_turned_off(tmp_path: Path) -> None:
    maker = CoverMaker(
        _settings(cover_safety_check=False, cover_safety_model=str(_safety_dir(tmp_path, flag_everything=True))),
        device="cpu",
    )
    assert maker.make(description="anything", seed=3).source == "diffusion"


def test_missing_model_falls_back_and_says_so() -> None:
    maker = CoverMaker(_settings(cover_model="/models/no-such-sd"), device="cpu")
    cover = maker.make(description="boom bap", seed=5, style="boom-bap")
    assert cover.source == "procedural" and "not available" in (cover.note or "")
    assert cover.image.size == (64, 64)
    with pytest.raises(ModelUnavailable, match="no-such-sd"):
        DiffusionCover.load("/models/no-such-sd", device="cpu")


def test_procedural_mode_never_loads_a_model() -> None:
    maker = CoverMaker(_settings(cover_mode="procedural", cover_model="/models/no-such-sd"), device="cpu")
    maker.warm_up()
    cover = maker.make(description="house", seed=5, mood="happy")
    assert (cover.source, cover.note) == ("procedural", None)
    assert not CoverMaker(_settings(cover_mode="off"), device="cpu").enabled


def test_title_is_set_on_the_cover() -> None:
    maker = CoverMaker(_settings(cover_safety_check=False), device="cpu")
    plain = np.asarray(maker.make(description="synthwave", seed=8).image, dtype=np.int16)
    titled = np.asarray(maker.make(description="synthwave", seed=8, title="Night Drive").image, dtype=np.int16)
    assert np.abs(plain - titled).sum() > 0


def test_cancel_between_denoising_steps() -> None:
    maker = CoverMaker(_settings(cover_safety_check=False, cover_steps=4), device="cpu")
    with pytest.raises(GenerationCancelled):
        maker.make(description="x", seed=1, should_stop=lambda: True)


def test_an_album_cover_lora_is_fused_at_load(tmp_path: Path) -> None:
    """A LoRA for the tiny UNet, written in diffusers' layout, changes what the pipeline draws."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    from generation.cover.tiny import build_tiny_sd_pipeline

    pipe = build_tiny_sd_pipeline()
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:  # zero-initialised by peft: a no-op adapter would prove nothing
                param.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(pipe.unet))

    args = {"negative": "", "seed": 1, "size": 64, "steps": 2, "guidance": 0.0}
    plain = DiffusionCover.load("debug", device="cpu").render("lofi", **args)
    styled = DiffusionCover.load("debug", device="cpu", lora=str(tmp_path / "lora"), lora_scale=1.0).render(
        "lofi", **args
    )
    off = DiffusionCover.load("debug", device="cpu", lora=str(tmp_path / "lora"), lora_scale=0.0).render("lofi", **args)
    as_int = [np.asarray(x, dtype=np.int16) for x in (plain, styled, off)]
    assert np.abs(as_int[0] - as_int[1]).mean() > 2
    assert np.abs(as_int[0] - as_int[2]).max() <= 1  # scale 0 fuses nothing
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        DiffusionCover.load("debug", device="cpu", lora=str(tmp_path / "missing-lora"))
