"""Pure signal helpers: numpy in, numpy out."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from generation.errors import AudioParameterError

Samples = npt.NDArray[np.float32]


def fit_length(samples: Samples, n_samples: int) -> Samples:
    """Trim or zero-pad ``samples`` (shape (channels, n)) to exactly ``n_samples`` along time."""
    if samples.ndim != 2:
        raise AudioParameterError(f"expected (channels, samples), got shape {samples.shape}")
    if n_samples < 0:
        raise AudioParameterError(f"n_samples={n_samples} must be >= 0")
    have = samples.shape[1]
    if have >= n_samples:
        return samples[:, :n_samples]
    return np.pad(samples, ((0, 0), (0, n_samples - have)))


def fade_out(samples: Samples, *, sample_rate: int, seconds: float) -> Samples:
    """Apply an equal-power (cosine) fade over the last ``seconds``.

    MusicGen often ends on an abrupt cut or a burst of noise; a short fade makes every
    beat end cleanly. Returns a new array; the input is not modified.
    """
    if seconds < 0:
        raise AudioParameterError(f"fade seconds={seconds} must be >= 0")
    n = min(samples.shape[-1], round(seconds * sample_rate))
    out = samples.astype(np.float32, copy=True)
    if n > 0:
        ramp = np.cos(np.linspace(0.0, np.pi / 2, n, dtype=np.float32))
        out[..., -n:] *= ramp
    return out


def peak_normalize(samples: Samples, *, peak: float = 0.98) -> Samples:
    """Scale so the loudest sample sits at ``peak``; silence is returned unchanged (no divide by zero)."""
    top = float(np.max(np.abs(samples))) if samples.size else 0.0
    if top == 0.0 or not np.isfinite(top):
        return np.nan_to_num(samples).astype(np.float32)
    return (samples * (peak / top)).astype(np.float32)


def resample(samples: Samples, orig_sr: int, target_sr: int) -> Samples:
    """Every channel to ``target_sr`` (soxr through librosa): uploads come at any rate, models want theirs."""
    import librosa

    if orig_sr == target_sr:
        return samples
    return np.ascontiguousarray(librosa.resample(samples, orig_sr=orig_sr, target_sr=target_sr), dtype=np.float32)


def clock(seconds: float) -> str:
    """``m:ss``, how people read lengths of music."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"
