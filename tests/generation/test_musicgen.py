"""The engine through the real transformers MusicGen path, on the tiny random model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beatforge.contract import BeatParams, SamplingParams
from generation.errors import GenerationCancelled, GenerationError, MelodyUnsupported, ModelUnavailable
from generation.music.chroma import melody_chroma
from generation.music.engine import GeneratedAudio, GenerationItem, Preview, generate, items_for
from generation.music.model_cache import ModelCache
from generation.music.musicgen import MusicGenEngine
from generation.music.sampling import take_seed
from generation.music.tiny import save_tiny_musicgen, save_tiny_musicgen_melody


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> MusicGenEngine:
    return MusicGenEngine.load(str(tiny_model_dir))


def _params(**overrides: object) -> BeatParams:
    return BeatParams.model_validate({"prompt": "dark trap, 808s", "duration_s": 2.0, "seed": 11, **overrides})


def _one(engine: MusicGenEngine, params: BeatParams, **kwargs: object) -> GeneratedAudio:
    (audio,) = generate(engine, params, **kwargs)  # type: ignore[arg-type]
    return audio


def test_rate_and_layout_come_from_the_model_config(engine: MusicGenEngine) -> None:
    assert (engine.sample_rate, engine.frame_rate, engine.audio_channels, engine.num_codebooks) == (32_000, 50, 1, 4)
    assert engine.decoding_steps(2.0) == 100 + 3  # the delay pattern adds num_codebooks - 1 steps
    # 75 s: 30 s, then windows of 20 new seconds after 10 s of context, each with its delay steps
    assert engine.window_frames == 1500 and engine.decoding_steps(75.0) == 3750 + 4 * 3


def test_generates_exactly_the_requested_duration(engine: MusicGenEngine, tmp_path: Path) -> None:
    audio = _one(engine, _params(duration_s=1.3))
    assert audio.samples.shape == (1, round(1.3 * 32_000)) and audio.samples.dtype == np.float32
    assert audio.sample_rate == 32_000 and audio.duration_s == pytest.approx(1.3)
    assert np.isfinite(audio.samples).all() and audio.samples.std() > 1e-3  # not silence
    assert np.abs(audio.samples[0, -1]) < 1e-3  # faded out


def test_same_seed_same_audio_and_other_seed_other_audio(engine: MusicGenEngine) -> None:
    a, b, c = _one(engine, _params()), _one(engine, _params()), _one(engine, _params(seed=12))
    np.testing.assert_array_equal(a.samples, b.samples)
    assert np.abs(a.samples - c.samples).mean() > 1e-3


def test_progress_counts_every_decoding_step(engine: MusicGenEngine) -> None:
    seen: list[tuple[int, int]] = []
    generate(engine, _params(duration_s=1.0), on_progress=lambda done, total: seen.append((done, total)))
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
        generate(engine, _params(duration_s=10.0), should_stop=stop)
    assert calls == 5  # stopped at the fifth step, not after 500


def test_missing_model_is_a_clear_error() -> None:
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        MusicGenEngine.load("/nowhere/musicgen")


def test_debug_model_and_saved_tiny_model_are_the_same_weights(engine: MusicGenEngine) -> None:
    debug = MusicGenEngine.load("debug")
    np.testing.assert_array_equal(_one(debug, _params()).samples, _one(engine, _params()).samples)


def test_model_cache_loads_once_and_evicts_least_recent(tiny_model_dir: Path) -> None:
    cache = ModelCache(device="cpu", default=str(tiny_model_dir), max_resident=1)
    first = cache.get(None)
    assert cache.get(str(tiny_model_dir)) is first
    other = cache.get("debug")
    assert other is not first and cache.get("debug") is other
    assert cache.get(None) is not first  # evicted, so reloaded


def test_takes_are_batched_each_reproducible_alone(engine: MusicGenEngine) -> None:
    takes = generate(engine, _params(takes=3))
    assert [t.seed for t in takes] == [11, take_seed(11, 1), take_seed(11, 2)] and len({t.seed for t in takes}) == 3
    for take in takes:
        alone = _one(engine, _params(seed=take.seed))
        # same tokens; the batched decode's float rounding differs from the single one by ~1e-7 at most
        np.testing.assert_allclose(alone.samples, take.samples, atol=1e-5)
    assert np.abs(takes[0].samples - takes[1].samples).mean() > 1e-3


def test_jobs_of_different_prompts_and_lengths_batch_together(engine: MusicGenEngine) -> None:
    items = [GenerationItem("lofi piano", 1, 1.0), GenerationItem("dark trap, 808s and more", 2, 2.5)]
    batched = engine.generate_batch(items, sampling=SamplingParams())
    assert [a.samples.shape[-1] for a in batched] == [32_000, 80_000]
    for item, audio in zip(items, batched, strict=True):
        (alone,) = engine.generate_batch([item], sampling=SamplingParams())
        np.testing.assert_allclose(alone.samples, audio.samples, atol=1e-5)


def test_top_k_one_is_greedy_whatever_the_seed(engine: MusicGenEngine) -> None:
    greedy = SamplingParams(top_k=1)
    a, b = (_one(engine, _params(seed=s, sampling=greedy)) for s in (1, 2))
    np.testing.assert_array_equal(a.samples, b.samples)
    warm, cold = (_one(engine, _params(sampling=SamplingParams(temperature=t))) for t in (1.5, 0.3))
    assert not np.array_equal(warm.samples, cold.samples)


@pytest.fixture
def windowed(tiny_model_dir: Path) -> MusicGenEngine:
    """The tiny model with 2-second windows and 1 s of context, so long-form runs in a test's time."""
    engine = MusicGenEngine.load(str(tiny_model_dir))
    engine.window_s, engine.context_s = 2.0, 1.0
    return engine


def test_long_beats_continue_window_by_window(windowed: MusicGenEngine) -> None:
    seen: list[tuple[int, int]] = []
    long = _one(windowed, _params(duration_s=5.0), fade_out_s=0.0, on_progress=lambda d, t: seen.append((d, t)))
    assert long.samples.shape == (1, 5 * 32_000)
    total = windowed.decoding_steps(5.0)
    assert seen[-1] == (total, total) and total == 100 + 3 + 50 + 3 + 50 + 3 + 50 + 3
    # the first window is exactly a 2-second beat: same seed, same stream, same tokens
    short = _one(windowed, _params(duration_s=2.0), fade_out_s=0.0)
    np.testing.assert_allclose(long.samples[:, :32_000], short.samples[:, :32_000], atol=1e-5)
    assert np.abs(long.samples[:, 2 * 32_000 :]).std() > 1e-3  # later windows carry on making sound
    np.testing.assert_array_equal(long.samples, _one(windowed, _params(duration_s=5.0), fade_out_s=0.0).samples)


def test_continuing_audio_keeps_it_and_adds_the_new_seconds(engine: MusicGenEngine) -> None:
    clip = _one(engine, _params(duration_s=1.0), fade_out_s=0.0)
    extended = _one(engine, _params(duration_s=1.5, seed=3), prompt=clip.samples, fade_out_s=0.0)
    assert extended.samples.shape == (1, round(2.5 * 32_000))
    # the codec round trip of the prompt is close to it, not equal (EnCodec is lossy)
    head = extended.samples[:, : 32_000 - 2_000]
    assert np.corrcoef(head[0], clip.samples[0, : head.shape[-1]])[0, 1] > 0.5
    with pytest.raises(GenerationError, match="same length"):
        engine.generate_batch(
            [GenerationItem("a", 1, 1.0, clip.samples), GenerationItem("b", 2, 1.0, clip.samples[:, :16_000])],
            sampling=SamplingParams(),
        )


def test_stereo_models_make_stereo_takes_of_any_length(tmp_path: Path) -> None:
    engine = MusicGenEngine.load(str(save_tiny_musicgen(tmp_path / "stereo", audio_channels=2)))
    engine.window_s, engine.context_s = 2.0, 1.0
    assert (engine.audio_channels, engine.num_codebooks, engine.delay) == (2, 8, 3)
    takes = generate(engine, _params(duration_s=3.0, takes=2))
    assert [t.samples.shape for t in takes] == [(2, 96_000), (2, 96_000)]
    assert np.abs(takes[0].samples[0] - takes[0].samples[1]).mean() > 1e-4  # two channels, not one copied
    extended = _one(engine, _params(duration_s=1.0), prompt=takes[0].samples[:, :32_000])
    assert extended.samples.shape == (2, 64_000)


def _tone(hz: float, seconds: float = 3.0, sr: int = 32_000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None]


def test_chroma_is_the_dominant_pitch_class_per_frame() -> None:
    chroma = melody_chroma(np.concatenate([_tone(440.0, 1.0), _tone(311.1, 1.0)], axis=-1), 32_000)
    assert chroma.shape[1] == 12 and np.all(chroma.sum(axis=1) == 1)
    classes = chroma.argmax(axis=1)
    assert classes[2] == 9 and classes[-3] == 3  # A, then D#
    assert melody_chroma(_tone(440.0, 1.0, sr=16_000), 16_000).argmax(axis=1)[2] == 9  # resampled first


def test_melody_models_follow_the_melody(tmp_path: Path) -> None:
    engine = MusicGenEngine.load(str(save_tiny_musicgen_melody(tmp_path / "melody")))
    assert engine.takes_melody
    greedy = SamplingParams(top_k=1)  # the tiny random decoder's logits move only a little with the chroma
    a, b, none = engine.generate_batch(
        [
            GenerationItem("lofi", 1, 1.0, melody=_tone(440.0)),
            GenerationItem("lofi", 1, 1.0, melody=_tone(311.1)),
            GenerationItem("lofi", 1, 1.0),
        ],
        sampling=greedy,
    )
    assert not np.array_equal(a.samples, b.samples) and not np.array_equal(a.samples, none.samples)
    (alone,) = engine.generate_batch([GenerationItem("lofi", 1, 1.0, melody=_tone(440.0))], sampling=greedy)
    np.testing.assert_allclose(alone.samples, a.samples, atol=1e-5)
    engine.window_s, engine.context_s = 2.0, 1.0  # a melody across windows: each window follows its stretch
    (long,) = engine.generate_batch([GenerationItem("lofi", 1, 4.0, melody=_tone(440.0, 5.0))], sampling=greedy)
    assert long.samples.shape == (1, 4 * 32_000)


def test_a_melody_for_a_model_without_one_is_refused(engine: MusicGenEngine) -> None:
    with pytest.raises(MelodyUnsupported, match="cannot follow a melody; choose a melody model"):
        generate(engine, _params(), melody=_tone(440.0))


def test_long_batches_decode_in_groups_with_the_same_result(
    engine: MusicGenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [GenerationItem("a", 1, 1.0), GenerationItem("b", 2, 1.0), GenerationItem("c", 3, 1.0)]
    whole = engine.generate_batch(items, sampling=SamplingParams(), fade_out_s=0.0)
    monkeypatch.setattr("generation.music.musicgen.DECODE_FRAMES", 60)  # one 50-frame row per EnCodec call
    grouped = engine.generate_batch(items, sampling=SamplingParams(), fade_out_s=0.0)
    for a, b in zip(whole, grouped, strict=True):
        np.testing.assert_allclose(a.samples, b.samples, atol=1e-5)


def test_the_first_seconds_come_early_once_and_sound_like_the_beats_start(engine: MusicGenEngine) -> None:
    previews: list[list[GeneratedAudio]] = []
    steps: list[int] = []
    seen: list[tuple[int, int]] = []

    def delivered(audio: list[GeneratedAudio]) -> None:
        previews.append(audio)
        steps.append(len(seen))  # the steps reported before it came

    preview = Preview(1.0, delivered)
    items = items_for(_params(duration_s=3.0, takes=2))
    final = engine.generate_batch(
        items, sampling=SamplingParams(), fade_out_s=0.0, preview=preview, on_progress=lambda d, t: seen.append((d, t))
    )
    (audio,) = previews
    assert steps == [50 + engine.delay] and seen[-1] == (150 + engine.delay, 150 + engine.delay)
    assert [a.seed for a in audio] == [i.seed for i in items] and all(a.samples.shape == (1, 32_000) for a in audio)
    for early, take in zip(audio, final, strict=True):  # EnCodec's last frames differ a little without what follows
        np.testing.assert_allclose(early.samples[:, :28_000], take.samples[:, :28_000], atol=1e-4)
    previews.clear()
    engine.generate_batch(items_for(_params(duration_s=1.0)), sampling=SamplingParams(), preview=preview)
    engine.generate_batch(
        items_for(_params(duration_s=2.0), prompt=final[0].samples[:, :16_000]),
        sampling=SamplingParams(),
        preview=preview,
    )
    assert previews == []  # a beat no longer than the preview, and a continuation, get none
