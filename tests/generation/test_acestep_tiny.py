"""The tiny ACE-Step 1.5 pipeline (generation/music/acestep_tiny.py) through diffusers' real code path: saved,
loaded offline with ``from_pretrained``, generating at the real model's rate and channels, reproducible per seed,
and stoppable between two steps (what the ACE-Step engine of issue 19 builds on)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AceStepPipeline

from generation.music.acestep_tiny import save_tiny_acestep

COMMON: dict[str, Any] = {
    "audio_duration": 2.0,
    "num_inference_steps": 4,
    "guidance_scale": 1.0,
    "bpm": 120,
    "keyscale": "F minor",
    "timesignature": "4",
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = save_tiny_acestep(tmp_path_factory.mktemp("tiny-acestep"))
    loaded = AceStepPipeline.from_pretrained(directory, local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    return loaded


def _seeds(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def _generate(pipeline: Any, *seeds: int, **kwargs: Any) -> torch.Tensor:
    prompts = ["dark trap, 808s"] * len(seeds)
    audio: torch.Tensor = pipeline(
        prompt=prompts, lyrics=["[Instrumental]"] * len(seeds), generator=_seeds(*seeds), **{**COMMON, **kwargs}
    ).audios
    return audio


def test_a_batch_comes_out_stereo_at_48_khz_in_whole_latent_frames_one_take_per_seed(pipeline: Any) -> None:
    audio = _generate(pipeline, 1, 2)
    frames = math.ceil(COMMON["audio_duration"] * 25)  # 25 latent frames a second, 1920 samples each
    assert pipeline.sample_rate == 48_000 and tuple(audio.shape) == (2, 2, frames * 1920)
    assert torch.isfinite(audio).all() and not torch.allclose(audio[0], audio[1])


def test_the_same_seeds_give_the_same_takes(pipeline: Any) -> None:
    assert torch.equal(_generate(pipeline, 7, 8), _generate(pipeline, 7, 8))


def test_an_error_raised_between_two_steps_stops_generation_there(pipeline: Any) -> None:
    class Stop(Exception):
        pass

    steps: list[int] = []

    def on_step_end(_pipeline: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        steps.append(step)
        if step == 1:
            raise Stop
        return tensors

    with pytest.raises(Stop):
        _generate(pipeline, 3, num_inference_steps=8, callback_on_step_end=on_step_end)
    assert steps == [0, 1]
    assert _generate(pipeline, 3).shape[0] == 1  # the pipeline is usable again afterwards


def test_saved_weights_reload_to_the_same_pipeline(pipeline: Any, tmp_path: Path) -> None:
    again = AceStepPipeline.from_pretrained(save_tiny_acestep(tmp_path / "again"), local_files_only=True)
    again.set_progress_bar_config(disable=True)
    assert torch.equal(_generate(pipeline, 5), _generate(again, 5))
