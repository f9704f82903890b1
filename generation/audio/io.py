"""The one place audio files are read and written (libsndfile)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from generation.audio.signal import Samples, clock
from generation.errors import AudioParameterError

log = logging.getLogger(__name__)


def read_audio(path: Path, *, max_seconds: float | None = None, name: str | None = None) -> tuple[Samples, int]:
    """Any file libsndfile reads (wav, flac, ogg, mp3, aiff) as float32 (channels, n) and its sample rate.

    ``max_seconds`` refuses long files from the header, before decoding a 20-minute upload into memory.
    ``name`` is what messages call the file (default: its file name): the worker's files live under names and
    folders of its own, which are nobody's business, so it passes the name the user knows (an upload's
    original name, "beat #N"). Messages never carry the path or libsndfile's words, which name the path too;
    those go to the log.

    Raises:
        AudioParameterError: the file is missing, a folder, empty, corrupt, not audio, or longer than
            ``max_seconds``.
    """
    shown = name or path.name
    if path.is_dir():
        raise AudioParameterError(f"{shown} is a folder, not an audio file")
    if not path.is_file():
        raise AudioParameterError(f"{shown} does not exist")
    if path.stat().st_size == 0:
        raise AudioParameterError(f"{shown} is empty (0 bytes)")
    try:
        length = sf.info(path).duration
        if max_seconds is not None and length > max_seconds:
            raise AudioParameterError(f"{shown} is {clock(length)} long; the limit is {clock(max_seconds)}")
        data, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except AudioParameterError:
        raise  # already in the user's words (and a ValueError, which the next clause would re-word)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        log.debug("unreadable audio", extra={"path": str(path), "error": str(exc)})
        raise AudioParameterError(
            f"{shown} is not a readable audio file (wav, flac, ogg, mp3 or aiff expected)"
        ) from exc
    if data.shape[0] == 0:
        raise AudioParameterError(f"{shown} contains no audio")
    return np.ascontiguousarray(data.T), int(sample_rate)


def write_wav(path: Path, samples: Samples, *, sample_rate: int) -> None:
    """16-bit PCM WAV: what every DAW and Discord's player open without question."""
    sf.write(path, samples.T, sample_rate, subtype="PCM_16", format="WAV")
