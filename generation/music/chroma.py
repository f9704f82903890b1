"""The melody condition MusicGen-melody reads: one dominant pitch class per 128 ms frame (pure torch/numpy).

transformers' feature extractor for it needs torchaudio, which cannot be installed beside our torch; this is
the same computation (power spectrogram, n_fft 16384, hop 4096 at 32 kHz, librosa's chroma filters, the
strongest pitch class one-hot per frame).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from transformers.audio_utils import chroma_filter_bank

from generation.audio.signal import Samples, resample

CHROMA_SR = 32_000
N_FFT = 16_384
HOP = 4_096


def melody_chroma(samples: Samples, sr: int) -> npt.NDArray[np.float32]:
    """(frames, 12) one-hot chroma of ``samples`` (channels, n) at ``sr`` (resampled to 32 kHz when needed)."""
    mono = resample(samples, sr, CHROMA_SR).mean(axis=0)
    wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    if wave.shape[-1] < N_FFT:
        pad = N_FFT - wave.shape[-1]
        wave = torch.nn.functional.pad(wave, (pad // 2, pad - pad // 2))
    spec = (
        torch.stft(
            wave,
            N_FFT,
            hop_length=HOP,
            window=torch.hann_window(N_FFT),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        ** 2
    )
    filters = torch.from_numpy(
        chroma_filter_bank(sampling_rate=CHROMA_SR, num_frequency_bins=N_FFT, tuning=0, num_chroma=12)
    ).float()
    chroma = filters @ spec  # (12, frames)
    one_hot = np.zeros((chroma.shape[1], 12), dtype=np.float32)
    one_hot[np.arange(chroma.shape[1]), chroma.argmax(dim=0).numpy()] = 1.0
    return one_hot
