from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from generation.audio.io import write_wav
from generation.audio.signal import fade_out, fit_length, peak_normalize
from generation.errors import AudioParameterError


def test_fade_out_silences_the_end_and_keeps_the_start(rng: np.random.Generator) -> None:
    x = rng.uniform(-1, 1, (2, 32_000)).astype(np.float32)
    y = fade_out(x, sample_rate=32_000, seconds=0.5)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y[:, :16_000], x[:, :16_000])
    assert np.abs(y[:, -1]).max() < 1e-3  # cos(pi/2) at the last sample
    assert np.abs(y[:, -100:]).max() < np.abs(x[:, -100:]).max()
    assert not np.shares_memory(x, y)


def test_fade_longer_than_the_audio_fades_all_of_it() -> None:
    y = fade_out(np.ones((1, 10), np.float32), sample_rate=10, seconds=5)
    assert y[0, 0] == pytest.approx(1.0) and y[0, -1] < 1e-6


@pytest.mark.parametrize(("n", "expected"), [(5, [1, 2, 3, 0, 0]), (2, [1, 2]), (0, [])])
def test_fit_length(n: int, expected: list[float]) -> None:
    out = fit_length(np.array([[1, 2, 3]], np.float32), n)
    assert out.tolist() == [expected]


def test_bad_shapes_and_values_raise_with_the_value_named() -> None:
    with pytest.raises(AudioParameterError, match=r"\(3,\)"):
        fit_length(np.zeros(3, np.float32), 2)
    with pytest.raises(AudioParameterError, match="-1"):
        fade_out(np.zeros((1, 3), np.float32), sample_rate=10, seconds=-1)


def test_peak_normalize_leaves_silence_alone() -> None:
    assert not peak_normalize(np.zeros((1, 4), np.float32)).any()
    assert np.abs(peak_normalize(np.array([[0.1, -0.5]], np.float32))).max() == pytest.approx(0.98)


def test_write_wav_is_16_bit_pcm_with_the_right_shape(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.uniform(-0.5, 0.5, (2, 8000)).astype(np.float32)
    write_wav(tmp_path / "a.wav", x, sample_rate=16_000)
    info = sf.info(tmp_path / "a.wav")
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16_000, 2, 8000, "PCM_16")
    back, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    np.testing.assert_allclose(back.T, x, atol=1 / 2**15)
