"""Splitting a mix into drums, bass and the rest, so each part is transcribed from its own stem.

Two ways, one result type: a neural separator (demucs) when its weights are on the worker, and an
offline split that always works: harmonic/percussive separation (median filtering of the spectrogram,
Fitzgerald 2010) for the drums, and a low band of the harmonic part for the bass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from generation.audio.signal import Samples, resample
from generation.errors import ModelUnavailable

log = logging.getLogger(__name__)

N_FFT = 2048
HOP = 512
#: The bass stem is the harmonic part below this crossover (a raised-cosine band, so the two halves sum back).
BASS_CROSSOVER_HZ = (180.0, 320.0)
HPSS_METHOD = "harmonic/percussive split (offline)"


@dataclass(frozen=True)
class Stems:
    """Three stems of the same shape as the mix, (channels, n) float32, that sum (approximately) back to it."""

    drums: Samples
    bass: Samples
    other: Samples
    sample_rate: int
    method: str

    def items(self) -> tuple[tuple[str, Samples], ...]:
        return (("drums", self.drums), ("bass", self.bass), ("other", self.other))


def _bass_weights(sr: int) -> npt.NDArray[np.float32]:
    freqs = np.fft.rfftfreq(N_FFT, 1 / sr)
    lo, hi = BASS_CROSSOVER_HZ
    ramp = np.clip((hi - freqs) / (hi - lo), 0.0, 1.0)
    return cast(npt.NDArray[np.float32], (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)[:, None])


def split_hpss(samples: Samples, sr: int) -> Stems:
    """The offline split, channel by channel: soft masks, so drums + bass + other is the mix again."""
    import librosa

    weights = _bass_weights(sr)
    drums, bass, other = (np.zeros_like(samples) for _ in range(3))
    n = samples.shape[-1]
    for ch, channel in enumerate(samples):
        spec = librosa.stft(channel, n_fft=N_FFT, hop_length=HOP)
        harmonic, percussive = librosa.decompose.hpss(spec, margin=1.0)
        drums[ch] = librosa.istft(percussive, hop_length=HOP, n_fft=N_FFT, length=n)
        bass[ch] = librosa.istft(harmonic * weights, hop_length=HOP, n_fft=N_FFT, length=n)
        other[ch] = librosa.istft(harmonic * (1.0 - weights), hop_length=HOP, n_fft=N_FFT, length=n)
    return Stems(drums, bass, other, sr, HPSS_METHOD)


class DemucsSeparator:
    """demucs (Hybrid Transformer Demucs) from weights already on disk; it never downloads anything.

    ``model`` is a directory holding a demucs model (``<name>.th`` or a ``<name>.yaml`` bag) and, optionally,
    ``:name`` after it (default ``htdemucs``), e.g. ``/models/demucs:htdemucs_ft``.
    """

    def __init__(self, model: str, *, device: str = "cpu") -> None:
        repo, _, name = model.partition(":")
        if not Path(repo).is_dir():
            raise ModelUnavailable(f"demucs weights not found: {repo} is not a directory")
        try:
            from demucs.pretrained import get_model
        except ImportError as exc:
            raise ModelUnavailable("demucs is not installed on this worker") from exc
        try:
            self.model = get_model(name or "htdemucs", repo=Path(repo)).to(device).eval()
        except Exception as exc:  # demucs raises bare Exceptions/ValueErrors for missing or broken files
            raise ModelUnavailable(f"demucs model {model!r} could not be loaded ({exc})") from exc
        self.device = device
        self.method = f"demucs {name or 'htdemucs'} (neural)"

    def split(self, samples: Samples, sr: int) -> Stems:
        import torch
        from demucs.apply import apply_model

        model_sr, channels = int(self.model.samplerate), int(self.model.audio_channels)
        x = resample(samples, sr, model_sr)
        x = np.repeat(x[:1], channels, axis=0) if x.shape[0] < channels else x[:channels]
        with torch.inference_mode():
            out = apply_model(self.model, torch.from_numpy(x)[None].to(self.device), device=self.device)[0]
        parts = {name: out[i].cpu().numpy() for i, name in enumerate(self.model.sources)}
        other = sum(v for k, v in parts.items() if k not in ("drums", "bass"))

        def back(stem: npt.NDArray[np.float32]) -> Samples:
            y = resample(stem, model_sr, sr)
            y = y.mean(axis=0, keepdims=True) if samples.shape[0] == 1 else y[: samples.shape[0]]
            return np.ascontiguousarray(y[:, : samples.shape[-1]], dtype=np.float32)

        return Stems(back(parts["drums"]), back(parts["bass"]), back(other), sr, self.method)


def make_separator(model: str | None, *, device: str = "cpu") -> DemucsSeparator | None:
    """The neural separator when configured and loadable, else None (callers use the offline split)."""
    if not model:
        return None
    try:
        return DemucsSeparator(model, device=device)
    except ModelUnavailable as exc:
        log.warning("stem separator unavailable; using the offline split", extra={"model": model, "error": str(exc)})
        return None


def split_stems(samples: Samples, sr: int, separator: DemucsSeparator | None = None) -> Stems:
    return separator.split(samples, sr) if separator is not None else split_hpss(samples, sr)
