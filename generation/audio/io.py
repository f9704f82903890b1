"""The one place audio files are read and written (libsndfile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from generation.audio.signal import Samples, clock
from generation.errors import AudioParameterError


def read_audio(path: Path, *, max_seconds: float | None = None) -> tuple[Samples, int]:
    """Any file libsndfile reads (wav, flac, ogg, mp3) as float32 (channels, n) and its sample rate.

    ``max_seconds`` refuses long files from the header, before decoding a 20-minute upload into memory.

    Raises:
        AudioParameterError: the file is missing, empty, corrupt, not audio, or longer than ``max_seconds``.
    """
    if not path.is_file():
        raise AudioParameterError(f"{path.name} does not exist")
    if path.stat().st_size == 0:
        raise AudioParameterError(f"{path.name} is empty (0 bytes)")
    try:
        if max_seconds is not None:
            length = sf.info(path).duration
            if length > max_seconds:
                raise AudioParameterError(f"{path.name} is {clock(length)} long; the limit is {clock(max_seconds)}")
        data, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioParameterError(
            f"{path.name} is not a readable audio file (wav, flac, ogg or mp3 expected: {exc})"
        ) from exc
    if data.shape[0] == 0:
        raise AudioParameterError(f"{path.name} contains no audio")
    return np.ascontiguousarray(data.T), int(sample_rate)


def write_wav(path: Path, samples: Samples, *, sample_rate: int) -> None:
    """16-bit PCM WAV: what every DAW and Discord's player open without question."""
    sf.write(path, samples.T, sample_rate, subtype="PCM_16", format="WAV")
