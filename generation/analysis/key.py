"""The musical key of audio, by the Krumhansl-Schmuckler method: loop and MIDI file names carry it.

Pure functions: numpy in, numpy out; analysis runs on the channel mean resampled to 22.05 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import librosa
import numpy as np
import numpy.typing as npt

from generation.analysis.checks import as_channels, check_not_silent, check_sr, to_mono
from generation.analysis.tempo import ANALYSIS_SR

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl-Kessler probe-tone profiles, C major / C minor
_KS_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KS_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class KeyInfo:
    """A musical key.

    Attributes:
        tonic: pitch class of the tonic, e.g. "A" or "F#".
        mode: "major" or "minor".
        confidence: Pearson correlation (0..1) between the audio's mean chroma and the winning key profile.
    """

    tonic: str
    mode: str
    confidence: float

    @property
    def label(self) -> str:
        """E.g. "A minor"."""
        return f"{self.tonic} {self.mode}"

    def to_metadata(self) -> dict[str, Any]:
        return {"tonic": self.tonic, "mode": self.mode, "label": self.label, "confidence": round(self.confidence, 4)}


def key_of(mono: npt.NDArray[np.float32], *, sr: int) -> KeyInfo:
    """:func:`detect_key` of a mono mix its caller has already checked."""
    y = mono if sr == ANALYSIS_SR else librosa.resample(mono, orig_sr=sr, target_sr=ANALYSIS_SR)
    chroma = librosa.feature.chroma_cqt(y=y, sr=ANALYSIS_SR, hop_length=512)
    profile = chroma.mean(axis=1)
    best = (-2.0, "C", "major")
    if np.ptp(profile) > 0:
        for tonic in range(12):
            for mode, template in (("major", _KS_MAJOR), ("minor", _KS_MINOR)):
                r = float(np.corrcoef(profile, np.roll(template, tonic))[0, 1])
                if r > best[0]:
                    best = (r, NOTE_NAMES[tonic], mode)
    return KeyInfo(tonic=best[1], mode=best[2], confidence=max(0.0, best[0]))


def detect_key(y: npt.NDArray[np.floating], *, sr: int) -> KeyInfo:
    """Estimate the key with the Krumhansl-Schmuckler method.

    The constant-Q chroma of the mono mix (librosa ``chroma_cqt``, C1 upward) is averaged over time and
    correlated with the Krumhansl-Kessler major and minor profiles in all 12 rotations; the best of the 24 wins.

    Args:
        y: float audio, shape (n,) or (channels, n).
        sr: sample rate in Hz.

    Returns:
        The key, e.g. ``KeyInfo("A", "minor", 0.87)`` (``label`` "A minor").

    Raises:
        AudioParameterError: bad shape, dtype, sample rate or non-finite samples; silence.
    """
    x = as_channels(y)
    sr = check_sr(sr)
    mono = to_mono(x)
    check_not_silent(mono)
    return key_of(mono, sr=sr)
