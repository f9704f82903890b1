"""Tempo, key, loop cuts and seam scores on synthetic drum + bass renders with a known tempo, bar grid and key.

The renders come from tests/support/synth.py; the functions under test live in generation.analysis and
generation.loops.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import librosa
import numpy as np
import pytest

from generation.analysis.key import detect_key
from generation.analysis.tempo import detect_tempo
from generation.errors import AudioParameterError
from generation.loops.cut import LoopResult, make_loop, naive_loop
from generation.loops.seam import seam_score
from tests.support.synth import Render, render_beat

SR = 32_000  # MusicGen's rate
TEMPOS = (75, 90, 120, 140, 170)
dnr = contextlib.nullcontext  # "does not raise", as librosa's tests spell it


@pytest.fixture(scope="module")
def renders() -> dict[int, Render]:
    """8 bars per tempo, stereo, 5 ms timing jitter per hit, a quarter second of silence first (seed 440)."""
    rng = np.random.default_rng(440)  # the conftest `rng` is per test; these renders are shared by the module
    return {
        bpm: render_beat(bpm=bpm, bars=8, jitter_ms=5, lead_in_s=0.25, chords=True, stereo=True, rng=rng)
        for bpm in TEMPOS
    }


@pytest.fixture(scope="module")
def loops(renders: dict[int, Render]) -> dict[int, LoopResult]:
    return {bpm: make_loop(r.samples, sr=SR, bars=4) for bpm, r in renders.items()}


def librosa_tempo(render: Render) -> float:
    """librosa's plain beat_track estimate, as the reference system uses it."""
    y = librosa.resample(render.mono, orig_sr=render.sample_rate, target_sr=22_050)
    tempo, _ = librosa.beat.beat_track(y=y, sr=22_050)
    return float(np.atleast_1d(tempo)[0])


@pytest.mark.parametrize("bpm", TEMPOS)
def test_tempo_within_one_percent_and_downbeats_on_the_bar_lines(renders: dict[int, Render], bpm: int) -> None:
    render = renders[bpm]
    info = detect_tempo(render.samples, sr=SR)
    assert info.bpm == pytest.approx(bpm, rel=0.01)
    assert info.confidence > 0.5
    assert info.beats_per_bar == 4
    downbeats = np.array(info.downbeat_times)
    downbeats = downbeats[downbeats < render.downbeats[-1] + render.bar_seconds / 2]  # not the decay after bar 8
    assert len(downbeats) == 8
    nearest = np.abs(downbeats[:, None] - render.downbeats[None, :]).min(axis=1)
    assert nearest.max() < 0.015, nearest  # every detected downbeat is a true one (±15 ms: jitter is 5 ms)
    assert set(info.downbeat_times) <= set(info.beat_times)


def test_a_bpm_hint_picks_the_octave(renders: dict[int, Render]) -> None:
    assert detect_tempo(renders[170].samples, sr=SR).bpm == pytest.approx(170, rel=0.01)
    assert detect_tempo(renders[170].samples, sr=SR, bpm_hint=85).bpm == pytest.approx(85, rel=0.01)


@pytest.mark.parametrize("bpm", TEMPOS)
def test_loop_is_whole_bars_on_a_downbeat_with_a_clean_seam(
    renders: dict[int, Render], loops: dict[int, LoopResult], bpm: int
) -> None:
    render, loop = renders[bpm], loops[bpm]
    n = loop.samples.shape[-1]
    assert loop.bars == 4 and loop.beats_per_bar == 4 and not loop.stretched
    assert n == round(4 * 4 * 60 / loop.bpm_detected * SR) == loop.end_sample - loop.start_sample
    assert abs(n / SR - 4 * render.bar_seconds) < 0.010  # 4 bars at the true tempo, within 10 ms
    assert np.abs(render.downbeats - loop.start_sample / SR).min() < 0.015  # starts on a bar line
    assert loop.seam_score < 1.5
    # the reference system's cut: the first 16 beats by librosa's tempo estimate, hard cut
    naive = naive_loop(render.samples, sr=SR, seconds=16 * 60 / librosa_tempo(render))
    assert seam_score(naive, sr=SR) > 3 * loop.seam_score


def test_seam_score_is_one_for_a_perfect_loop_and_high_for_a_cut_mid_bar() -> None:
    bar = render_beat(bpm=120, bars=1, chords=True, rng=np.random.default_rng(7)).mono[: 2 * SR]
    perfect = np.tile(bar, 4)  # four identical bars: the seam is exactly like the bar lines inside
    assert seam_score(perfect, sr=SR) == pytest.approx(1.0, abs=0.02)
    assert seam_score(perfect[None, :].repeat(2, axis=0), sr=SR) == pytest.approx(1.0, abs=0.02)
    assert seam_score(perfect[: -int(0.3 * SR)], sr=SR) > 3  # a bar cut 300 ms short


@pytest.mark.parametrize(("bpm", "target"), [(120, 128), (90, 84)])
def test_stretch_hits_the_target_tempo_exactly(renders: dict[int, Render], bpm: int, target: int) -> None:
    loop = make_loop(renders[bpm].samples, sr=SR, bars=2, target_bpm=target, stretch=True)
    assert loop.stretched and loop.bpm == target
    assert loop.bpm_detected == pytest.approx(bpm, rel=0.01)
    assert loop.samples.shape == (2, round(2 * 4 * 60 / target * SR))
    assert loop.seam_score < 1.5


def test_default_bar_count_is_the_largest_power_of_two_that_fits(renders: dict[int, Render]) -> None:
    audio = renders[120].samples  # 8 bars of 2 s after 0.25 s of silence, then 0.5 s of decay
    assert make_loop(audio, sr=SR).bars == 8  # 16 bars would need 32 s
    assert make_loop(audio, sr=SR, min_duration=3, max_duration=12).bars == 4


@pytest.mark.parametrize(
    ("key", "drums"), [("A minor", True), ("C minor", False), ("E major", True), ("A# major", False)]
)
def test_key_of_a_bass_line_and_chords(key: str, drums: bool) -> None:
    render = render_beat(bpm=100, bars=4, key=key, drums=drums, chords=True, rng=np.random.default_rng(440))
    found = detect_key(render.samples, sr=SR)
    assert found.label == key
    assert 0.5 < found.confidence <= 1


def test_stereo_and_mono_layouts_are_kept(renders: dict[int, Render], loops: dict[int, LoopResult]) -> None:
    audio, loop = renders[140].samples, loops[140]
    assert loop.samples.shape[0] == 2 and loop.samples.dtype == np.float32
    assert not np.allclose(loop.samples[0], loop.samples[1])  # hats and chords are panned: two real channels
    fade = round(0.020 * SR)  # the default crossfade touches only the last 20 ms
    s = loop.start_sample
    np.testing.assert_array_equal(loop.samples[:, :-fade], audio[:, s : loop.end_sample - fade])
    mono = make_loop(audio[0], sr=SR, max_duration=2)
    assert mono.bars == 1 and mono.samples.shape == (round(4 * 60 / mono.bpm_detected * SR),)
    assert naive_loop(audio[0], sr=SR, seconds=1.0).shape == (SR,)


def test_metadata_is_json_safe(loops: dict[int, LoopResult]) -> None:
    meta = loops[90].to_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["bars"] == 4 and meta["sample_rate"] == SR and meta["stretched"] is False
    assert meta["key"]["label"] == "A minor"
    assert meta["bpm"] == meta["bpm_detected"] == pytest.approx(90, rel=0.01)
    assert meta["end_sample"] - meta["start_sample"] == meta["n_samples"]


def test_noise_has_no_reliable_tempo(rng: np.random.Generator) -> None:
    noise = (0.3 * rng.standard_normal(10 * SR)).astype(np.float32)
    with pytest.raises(AudioParameterError, match="no reliable tempo"):
        make_loop(noise, sr=SR)


def _base() -> Render:
    return render_beat(bpm=120, bars=4, jitter_ms=3, rng=np.random.default_rng(440))  # 8.5 s


def _with(audio: Callable[[Render], Any], **kwargs: Any) -> Callable[[Render], dict[str, Any]]:
    return lambda r: {"y": audio(r), "sr": SR, **kwargs}


def _nan(r: Render) -> np.ndarray:
    y = r.samples.copy()
    y[0, 1234] = np.nan
    return y


@pytest.mark.parametrize(
    ("call", "expectation"),
    [
        (_with(lambda r: r.samples), dnr()),
        (_with(lambda r: r.mono.astype(np.float64), bars=2, crossfade_ms=0), dnr()),
        (_with(lambda r: r.samples, beats_per_bar=3, min_duration=1, max_duration=4), dnr()),
        (_with(lambda r: np.zeros((2, 4 * SR), np.float32)), pytest.raises(AudioParameterError, match="silent")),
        (_with(lambda r: r.samples[:, : int(1.5 * SR)]), pytest.raises(AudioParameterError, match="too short")),
        (_with(lambda r: r.samples, bars=8), pytest.raises(AudioParameterError, match="shorter than the requested 8")),
        (_with(lambda r: r.samples, bars=3, max_duration=4), pytest.raises(AudioParameterError, match="bars=3")),
        (
            _with(lambda r: r.samples, min_duration=9, max_duration=5),
            pytest.raises(AudioParameterError, match="min_duration=9 s is greater than max_duration=5 s"),
        ),
        (
            _with(lambda r: r.samples, min_duration=5, max_duration=6),
            pytest.raises(AudioParameterError, match="no power-of-two bar count"),
        ),
        (_with(lambda r: r.samples, min_duration=-1), pytest.raises(AudioParameterError, match="min_duration=-1")),
        (_with(_nan), pytest.raises(AudioParameterError, match=r"1 non-finite samples.*sample 1234")),
        (_with(lambda r: r.samples[None]), pytest.raises(AudioParameterError, match=r"shape \(1, 1, \d+\)")),
        (_with(lambda r: r.samples.T.copy()), pytest.raises(AudioParameterError, match=r"not \(n, channels\)")),
        (_with(lambda r: (r.samples * 3e4).astype(np.int16)), pytest.raises(AudioParameterError, match="int16")),
        (_with(lambda r: np.zeros(0, np.float32)), pytest.raises(AudioParameterError, match="empty")),
        (_with(lambda r: r.samples.tolist()), pytest.raises(AudioParameterError, match="numpy array")),
        (
            _with(lambda r: r.samples, target_bpm=30),
            pytest.raises(AudioParameterError, match="target_bpm=30 is outside"),
        ),
        (_with(lambda r: r.samples, target_bpm=301.5), pytest.raises(AudioParameterError, match=r"target_bpm=301\.5")),
        (_with(lambda r: r.samples, stretch=True), pytest.raises(AudioParameterError, match="needs a target_bpm")),
        (
            _with(lambda r: r.samples, target_bpm=50, stretch=True),  # not near an octave of 120: no octave hint
            pytest.raises(AudioParameterError, match=r"factor of 0\.42"),
        ),
        (_with(lambda r: r.samples, target_bpm=250, stretch=True), dnr()),  # 250 is near 240: double time, +4 %
        (_with(lambda r: r.samples, bars=0), pytest.raises(AudioParameterError, match="bars=0")),
        (_with(lambda r: r.samples, bars=2.5), pytest.raises(AudioParameterError, match=r"bars=2\.5")),
        (_with(lambda r: r.samples, beats_per_bar=0), pytest.raises(AudioParameterError, match="beats_per_bar=0")),
        (_with(lambda r: r.samples, crossfade_ms=-5), pytest.raises(AudioParameterError, match="crossfade_ms=-5")),
        (_with(lambda r: r.samples, sr=0), pytest.raises(AudioParameterError, match="sr=0")),
    ],
)
def test_make_loop_validates_its_input(
    call: Callable[[Render], dict[str, Any]], expectation: AbstractContextManager[Any]
) -> None:
    kwargs = call(_base())
    with expectation:
        loop = make_loop(kwargs.pop("y"), **kwargs)
        assert loop.samples.shape[-1] > 0 and loop.seam_score > 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: detect_tempo(np.zeros(3 * SR, np.float32), sr=SR), "silent"),
        (lambda: detect_tempo(np.ones((2, 3 * SR), np.float32), sr=SR, bpm_hint=500), "bpm_hint=500"),
        (lambda: detect_tempo(np.ones(3 * SR, np.float32), sr=SR, beats_per_bar=13), "beats_per_bar=13"),
        (lambda: detect_key(np.full(SR, np.inf, np.float32), sr=SR), "non-finite"),
        (lambda: detect_key(np.ones(SR, np.float32), sr=22_050.0), "sr=22050.0"),
        (lambda: seam_score(np.ones(SR // 4, np.float32), sr=SR), "0.250 s long"),
        (lambda: naive_loop(np.ones(SR, np.float32), sr=SR, seconds=2), "seconds=2 is longer"),
        (lambda: naive_loop(np.ones(SR, np.float32), sr=SR, seconds=0), "seconds=0"),
    ],
)
def test_analysis_functions_validate_their_input(call: Callable[[], object], match: str) -> None:
    with pytest.raises(AudioParameterError, match=match):
        call()
