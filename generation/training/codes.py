"""EnCodec codes of the training windows, computed once and kept on disk.

Decoding audio and running EnCodec cost more than a LoRA step on a small model, and they give the same answer every
epoch, every resume and every re-run with other hyper-parameters. So each clip's codes are stored under a key made of
the file's content hash, the codec's identity (a hash of its weights and the decoder's codebook layout) and the
window length: a later run with the same data never decodes audio, and a changed file, codec or window never reuses
stale codes.

This is also where a clip's audio is checked (unreadable, silent, shorter than a window), since it is the one place
that decodes it.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import torch
from transformers import EncodecModel, MusicgenForConditionalGeneration
from transformers.models.encodec.modeling_encodec import EncodecEncoderOutput

from generation.audio.io import read_audio
from generation.audio.signal import Samples, resample
from generation.errors import AudioParameterError
from generation.hf import sub_config
from generation.training.data import Clip
from storage.files import atomic_write_bytes

log = logging.getLogger(__name__)

#: Peak below which a clip counts as silent (-80 dBFS): nothing for the model to learn from.
SILENCE_PEAK = 1e-4
#: Windows EnCodec encodes at once.
_ENCODE_BATCH = 8
Codes = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ClipCodes:
    """One clip's windows as codes, shape (windows, codebooks, frames), as the decoder predicts them (undelayed)."""

    clip: Clip
    codes: Codes
    seconds: float


def codec_identity(model: MusicgenForConditionalGeneration) -> str:
    """A hash of what decides a clip's codes: EnCodec's weights and the decoder's codebooks and channels."""
    digest = hashlib.sha256()
    decoder = model.decoder.config
    digest.update(f"{decoder.num_codebooks}:{decoder.audio_channels}:".encode())
    for name, tensor in sorted(model.audio_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


class CodeCache:
    """Codes of clips for one model and window length, read from ``directory`` or computed and written there."""

    def __init__(self, model: MusicgenForConditionalGeneration, *, window_s: float, directory: Path) -> None:
        self.model, self.window_s, self.directory = model, window_s, directory
        audio = sub_config(model.config.audio_encoder, part="audio encoder")
        self.sample_rate = int(audio.sampling_rate)
        self.channels = int(model.decoder.config.audio_channels)
        self.window_samples = round(window_s * self.sample_rate)
        self.identity = codec_identity(model)
        self.hits = self.misses = 0

    def key(self, clip: Clip) -> str:
        return hashlib.sha256(f"{clip.sha256}|{self.identity}|{self.window_s!r}".encode()).hexdigest()[:40]

    def codes(self, clips: list[Clip]) -> tuple[list[ClipCodes], list[str]]:
        """Every clip's codes, and the problems of the clips that have none (each problem names its clip)."""
        done, problems = [], []
        for clip in clips:
            try:
                done.append(self._codes(clip))
            except AudioParameterError as exc:
                problems.append(f"{clip.path.name}: {exc}")
        return done, problems

    def _codes(self, clip: Clip) -> ClipCodes:
        path = self.directory / f"{self.key(clip)}.npz"
        if path.is_file():
            with np.load(path) as stored:
                self.hits += 1
                return ClipCodes(clip, stored["codes"].astype(np.int64), float(stored["seconds"]))
        self.misses += 1
        samples, seconds = self._audio(clip)
        codes = self._encode(samples)
        buffer = io.BytesIO()
        np.savez(buffer, codes=codes.astype(np.int16), seconds=np.float64(seconds))
        atomic_write_bytes(path, buffer.getvalue())
        return ClipCodes(clip, codes, seconds)

    def _audio(self, clip: Clip) -> tuple[Samples, float]:
        """The clip at the model's rate and channels, checked; raises AudioParameterError in the user's words."""
        samples, rate = read_audio(clip.path, name=clip.path.name)
        seconds = samples.shape[-1] / rate
        if not np.all(np.isfinite(samples)) or float(np.max(np.abs(samples))) < SILENCE_PEAK:
            raise AudioParameterError("silent (no sample above -80 dBFS)")
        if seconds < self.window_s:
            raise AudioParameterError(f"{seconds:.2f} s long, shorter than one {self.window_s:g} s window")
        samples = resample(samples, rate, self.sample_rate)
        if samples.shape[0] != self.channels:
            samples = np.repeat(samples.mean(axis=0, keepdims=True), self.channels, axis=0)
        return samples, seconds

    @torch.no_grad()
    def _encode(self, samples: Samples) -> Codes:
        """Whole windows only (a clip's last partial window is dropped), as (windows, codebooks, frames)."""
        count = samples.shape[-1] // self.window_samples
        windows = samples[:, : count * self.window_samples].reshape(self.channels, count, self.window_samples)
        windows = windows.transpose(1, 0, 2)  # (windows, channels, samples)
        parts = [self._encode_batch(windows[i : i + _ENCODE_BATCH]) for i in range(0, count, _ENCODE_BATCH)]
        return np.concatenate(parts)

    def _encode_batch(self, windows: Samples) -> Codes:
        codec = cast(EncodecModel, self.model.audio_encoder)
        values = torch.from_numpy(np.ascontiguousarray(windows)).to(codec.device, codec.dtype)

        def encode(audio: torch.Tensor) -> torch.Tensor:
            out = cast(EncodecEncoderOutput, codec.encode(audio))
            return cast(torch.Tensor, out.audio_codes)[0]

        if self.channels == 1:
            codes = encode(values)
        else:  # stereo MusicGen interleaves the left and right codebooks, as the engine's prompts do
            left, right = encode(values[:, :1]), encode(values[:, 1:])
            codes = torch.stack([left, right], dim=2).reshape(left.shape[0], -1, left.shape[-1])
        return cast(Codes, codes.cpu().numpy().astype(np.int64))
