"""The ACE-Step engine on the tiny random pipeline, through diffusers' real code paths (no download)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from beatforge.contract import BeatParams, SamplingParams
from generation.errors import GenerationCancelled, GenerationError, MelodyUnsupported
from generation.music.acestep import AceStepEngine, AceStepSampler
from generation.music.acestep_tiny import build_tiny_acestep, save_tiny_acestep
from generation.music.engine import GeneratedAudio, generate, items_for
from generation.music.model_cache import ModelCache
from generation.music.musicgen import MusicGenEngine
from generation.music.registry import ModelRegistry, ModelSpec

SAMPLING = SamplingParams()


@pytest.fixture(scope="module")
def engine() -> AceStepEngine:
    return AceStepEngine.load("debug-acestep", settings=AceStepSampler(steps=4))


def _params(**overrides: Any) -> BeatParams:
    return BeatParams(**{"prompt": "dark trap, 808s", "duration_s": 2.0, "seed": 7, **overrides})


class _Spy:
    """Records the keyword arguments of every pipeline call, and calls the real pipeline."""

    def __init__(self, engine: AceStepEngine) -> None:
        self.real, self.calls = engine.pipeline, []
        self.engine = engine

    def __enter__(self) -> list[dict[str, Any]]:
        real, calls = self.real, self.calls

        class Pipeline:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def __call__(self, **kwargs: Any) -> Any:
                calls.append(kwargs)
                return real(**kwargs)

        self.engine.pipeline = Pipeline()
        return calls

    def __exit__(self, *_: object) -> None:
        self.engine.pipeline = self.real


def test_a_saved_pipeline_loads_through_the_model_cache_as_ace_step(tmp_path: Path) -> None:
    directory = save_tiny_acestep(tmp_path / "acestep")
    cache = ModelCache(device="cpu", default=str(directory))
    loaded = cache.get(None)
    assert isinstance(loaded, AceStepEngine) and (loaded.sample_rate, loaded.audio_channels) == (48_000, 2)
    assert loaded.capabilities.native_controls and loaded.capabilities.remix
    assert cache.resident_bytes() > 0


def test_each_take_is_its_own_length_and_reproducible_alone(engine: AceStepEngine) -> None:
    takes = generate(engine, _params(takes=2, duration_s=1.5))
    assert [t.samples.shape for t in takes] == [(2, 72_000)] * 2 and takes[0].sample_rate == 48_000
    assert not np.allclose(takes[0].samples, takes[1].samples)
    (alone,) = generate(engine, _params(duration_s=1.5))
    np.testing.assert_allclose(alone.samples, takes[0].samples, atol=1e-5)
    (other,) = engine.generate_batch([replace(items_for(_params())[0], duration_s=1.0)], sampling=SAMPLING)
    assert other.samples.shape == (2, 48_000)


def test_tempo_key_and_metre_reach_the_pipeline_as_controls_and_group_the_calls(engine: AceStepEngine) -> None:
    a = items_for(_params(bpm=92, key="f minor", time_signature=3))[0]
    b = items_for(_params(bpm=140))[0]
    with _Spy(engine) as calls:
        out = engine.generate_batch([a, b, replace(a, seed=8)], sampling=SAMPLING)
    assert [o.seed for o in out] == [7, 7, 8]
    controls = sorted((c["bpm"], c["keyscale"], c["timesignature"], len(c["prompt"])) for c in calls)
    assert controls == [(92, "F minor", "3", 2), (140, None, None, 1)]
    assert all(c["lyrics"] == ["[Instrumental]"] * len(c["prompt"]) for c in calls)
    assert "in F minor" in a.text and "3/4 time" in a.text  # words too, which MusicGen relies on


def test_progress_counts_steps_and_a_stop_ends_it_within_one_step(engine: AceStepEngine) -> None:
    seen: list[tuple[int, int]] = []
    generate(engine, _params(), on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    asked = 0

    def stop() -> bool:
        nonlocal asked
        asked += 1
        return asked >= 2

    steps: list[int] = []
    forward = engine.pipeline.transformer.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        return forward(*args, **kwargs)

    engine.pipeline.transformer.forward = counting
    try:
        with pytest.raises(GenerationCancelled, match="after 2 of 4 steps"):
            generate(engine, _params(), should_stop=stop)
    finally:
        del engine.pipeline.transformer.forward
    assert len(steps) == 2


def test_extend_keeps_the_take_and_adds_the_new_seconds(engine: AceStepEngine) -> None:
    (take,) = generate(engine, _params(duration_s=1.0), fade_out_s=0.0)
    item = replace(items_for(_params(duration_s=1.0, seed=9))[0], prompt=take.samples)
    with _Spy(engine) as calls:
        (longer,) = engine.generate_batch([item], sampling=SAMPLING, fade_out_s=0.0)
    assert longer.samples.shape == (2, 96_000)
    kept = 48_000 - 960  # all but the crossfaded seam
    np.testing.assert_array_equal(longer.samples[:, :kept], take.samples[:, :kept])
    assert not np.allclose(longer.samples[:, 50_000:], 0.0)
    (call,) = calls
    assert call["task_type"] == "repaint" and call["repainting_start"] == pytest.approx(1.0)
    assert tuple(call["src_audio"].shape) == (1, 2, 96_000)


def test_remix_starts_from_the_audio_at_its_strength(engine: AceStepEngine) -> None:
    (source,) = generate(engine, _params(duration_s=1.0), fade_out_s=0.0)

    def remix(strength: float) -> tuple[GeneratedAudio, list[tuple[int, int]]]:
        seen: list[tuple[int, int]] = []
        params = _params(duration_s=1.0, prompt="bright house", remix_from="1/take.wav", remix_strength=strength)
        (out,) = generate(
            engine, params, remix=source.samples, fade_out_s=0.0, on_progress=lambda d, t: seen.append((d, t))
        )
        return out, seen

    unchanged, steps = remix(0.0)
    assert steps == [(1, 1)]  # from the clean latents there is nothing left to denoise
    vae = engine.pipeline.vae
    with torch.inference_mode():
        latents = vae.encode(torch.from_numpy(source.samples)[None]).latent_dist.mean
        round_trip = vae.decode(latents).sample[0].numpy()
    round_trip *= 10 ** (-1 / 20) / np.abs(round_trip).max()  # the pipeline's -1 dBFS peak
    np.testing.assert_allclose(unchanged.samples, round_trip[:, :48_000], atol=1e-4)
    halfway, steps = remix(0.5)
    assert steps[-1][1] < 4 and halfway.samples.shape == (2, 48_000)
    assert not np.allclose(halfway.samples, unchanged.samples, atol=1e-3)


def test_what_the_engine_cannot_do_is_refused(engine: AceStepEngine, tiny_model_dir: Path) -> None:
    tone = np.zeros((1, 48_000), dtype=np.float32)
    with pytest.raises(MelodyUnsupported, match="cannot follow a melody"):
        generate(engine, _params(), melody=tone)
    musicgen = MusicGenEngine.load(str(tiny_model_dir))
    assert not musicgen.capabilities.remix and not musicgen.capabilities.native_controls
    with pytest.raises(GenerationError, match="cannot remix audio"):
        generate(musicgen, _params(remix_from="1/take.wav", remix_strength=0.5), remix=tone)


def test_a_registered_lora_is_fused_into_a_fresh_copy_of_its_base(tmp_path: Path) -> None:
    from diffusers import AceStepPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    trained = build_tiny_acestep()  # the same weights as debug-acestep, with a LoRA on its attention
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False)
    trained.transformer.add_adapter(config)
    adapter = tmp_path / "house"
    layers = get_peft_model_state_dict(trained.transformer)
    AceStepPipeline.save_lora_weights(adapter, transformer_lora_layers=layers)  # type: ignore[no-untyped-call]
    registry = ModelRegistry(tmp_path / "models.json")
    registry.register(ModelSpec(name="house", source=str(adapter), kind="lora", base="debug-acestep"))
    cache = ModelCache(device="cpu", default="debug-acestep", registry=registry)
    (before,) = generate(cache.get(None), _params())
    house = cache.get("house")
    assert house.name == "house" and house is not cache.get(None)
    (styled,) = generate(house, _params())
    assert not np.allclose(styled.samples, before.samples, atol=1e-4)
    (again,) = generate(cache.get(None), _params())
    np.testing.assert_array_equal(again.samples, before.samples)  # the resident base is untouched
