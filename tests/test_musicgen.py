"""The engine through the real transformers MusicGen path, on the tiny random model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beatforge.contract import BeatParams
from generation.errors import GenerationCancelled, ModelUnavailable
from generation.models import ModelCache
from generation.musicgen import MusicGenEngine


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> MusicGenEngine:
    return MusicGenEngine.load(str(tiny_model_dir))


def _params(**overrides: object) -> BeatParams:
    return BeatParams.model_validate({"prompt": "dark trap, 808s", "duration_s": 2.0, "seed": 11, **overrides})


def test_rate_and_layout_come_from_the_model_config(engine: MusicGenEngine) -> None:
    assert (engine.sample_rate, engine.frame_rate, engine.audio_channels, engine.num_codebooks) == (32_000, 50, 1, 4)
    assert engine.decoding_steps(2.0) == 100 + 3  # the delay pattern adds num_codebooks - 1 steps


def test_generates_exactly_the_requested_duration(engine: MusicGenEngine, tmp_path: Path) -> None:
    audio = engine.generate(_params(duration_s=1.3))
    assert audio.samples.shape == (1, round(1.3 * 32_000)) and audio.samples.dtype == np.float32
    assert audio.sample_rate == 32_000 and audio.duration_s == pytest.approx(1.3)
    assert np.isfinite(audio.samples).all() and audio.samples.std() > 1e-3  # not silence
    assert np.abs(audio.samples[0, -1]) < 1e-3  # faded out


def test_same_seed_same_audio_and_other_seed_other_audio(engine: MusicGenEngine) -> None:
    a = engine.generate(_params())
    b = engine.generate(_params())
    c = engine.generate(_params(seed=12))
    np.testing.assert_array_equal(a.samples, b.samples)
    assert np.abs(a.samples - c.samples).mean() > 1e-3


def test_progress_counts_every_decoding_step(engine: MusicGenEngine) -> None:
    seen: list[tuple[int, int]] = []
    engine.generate(_params(duration_s=1.0), on_progress=lambda done, total: seen.append((done, total)))
    total = engine.decoding_steps(1.0)
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= total - 1


def test_should_stop_cancels_between_steps(engine: MusicGenEngine) -> None:
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 5

    with pytest.raises(GenerationCancelled):
        engine.generate(_params(duration_s=10.0), should_stop=stop)
    assert calls == 5  # stopped at the fifth step, not after 500


def test_missing_model_is_a_clear_error() -> None:
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        MusicGenEngine.load("/nowhere/musicgen")


def test_debug_model_and_saved_tiny_model_are_the_same_weights(engine: MusicGenEngine) -> None:
    debug = MusicGenEngine.load("debug")
    np.testing.assert_array_equal(debug.generate(_params()).samples, engine.generate(_params()).samples)


def test_model_cache_loads_once_and_evicts_least_recent(tiny_model_dir: Path) -> None:
    cache = ModelCache(device="cpu", default=str(tiny_model_dir), max_resident=1)
    first = cache.get(None)
    assert cache.get(str(tiny_model_dir)) is first
    other = cache.get("debug")
    assert other is not first and cache.get("debug") is other
    assert cache.get(None) is not first  # evicted, so reloaded
