"""Input checks shared by the analysis, loop and seam functions: they take audio and numbers from callers.

Each check raises :class:`~generation.errors.AudioParameterError` with a sentence that names the argument, so a
bad request fails before any librosa work starts and the user reads what was wrong with it.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import numpy.typing as npt

from beatforge.bounds import MAX_BPM, MIN_BPM
from generation.audio.signal import Samples
from generation.errors import AudioParameterError

SILENCE_PEAK = 1e-4  # -80 dBFS
MAX_CHANNELS = 8
MIN_ANALYSIS_S = 2.0  # shortest audio we try to find a tempo in


def as_channels(y: object, *, name: str = "y") -> Samples:
    """``y`` as float32 (channels, n), validated: shape, dtype, finiteness."""
    if not isinstance(y, np.ndarray):
        raise AudioParameterError(f"{name} must be a numpy array, got {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.floating):
        raise AudioParameterError(f"{name} must be floating-point audio in [-1, 1], got dtype {y.dtype}")
    if y.ndim not in (1, 2):
        raise AudioParameterError(f"{name} must have shape (n,) or (channels, n), got shape {y.shape}")
    x = y[None, :] if y.ndim == 1 else y
    if x.shape[0] > MAX_CHANNELS:
        raise AudioParameterError(
            f"{name} has shape {y.shape}: more than {MAX_CHANNELS} channels; pass (channels, n), not (n, channels)"
        )
    if x.size == 0:
        raise AudioParameterError(f"{name} is empty (shape {y.shape})")
    finite = np.isfinite(x)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=0)))
        raise AudioParameterError(
            f"{name} has {int(x.size - finite.sum())} non-finite samples (NaN or inf), the first at sample {first}"
        )
    return x.astype(np.float32, copy=False)


def check_sr(sr: object) -> int:
    if isinstance(sr, bool) or not isinstance(sr, int | np.integer) or not 8_000 <= sr <= 384_000:
        raise AudioParameterError(f"sr={sr!r} must be an integer sample rate in Hz, 8000..384000")
    return int(sr)


def check_bpm(name: str, bpm: object) -> float | None:
    if bpm is None:
        return None
    if isinstance(bpm, bool) or not isinstance(bpm, int | float | np.integer | np.floating):
        raise AudioParameterError(f"{name}={bpm!r} must be a number of beats per minute")
    if not (math.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
        raise AudioParameterError(f"{name}={bpm!r} is outside {MIN_BPM:g}-{MAX_BPM:g} bpm")
    return float(bpm)


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not lo <= value <= hi:
        raise AudioParameterError(f"{name}={value!r} must be a whole number in {lo}..{hi}")
    return int(value)


def check_seconds(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise AudioParameterError(f"{name}={value!r} must be a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise AudioParameterError(f"{name}={value!r} must be a positive, finite number of seconds")
    return float(value)


def check_not_silent(mono: npt.NDArray[np.floating]) -> None:
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        db = 20 * math.log10(peak) if peak > 0 else -math.inf
        raise AudioParameterError(f"audio is silent (peak {db:.1f} dBFS): nothing to loop")


def check_long_enough(mono: npt.NDArray[np.float32], sr: int) -> None:
    seconds = len(mono) / sr
    if seconds < MIN_ANALYSIS_S:
        raise AudioParameterError(
            f"audio is {seconds:.2f} s long: too short to find a tempo and a whole bar (need {MIN_ANALYSIS_S:g} s)"
        )


def to_mono(x: Samples) -> npt.NDArray[np.float32]:
    """The channel mean of (channels, n) audio: every analysis listens to the mix, every cut applies to all."""
    return cast(npt.NDArray[np.float32], x.mean(axis=0, dtype=np.float32))
