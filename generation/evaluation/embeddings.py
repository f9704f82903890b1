"""Audio embeddings for FAD: the back ends (CLAP in :mod:`generation.evaluation.clap`, a MusicGen's EnCodec here)
and an on-disk cache keyed by what a file holds, so a reference set is embedded once however often it is scored.

**EnCodec** needs no weights beyond the music model's own: the continuous latents of its encoder (before the
quantizer), one row per frame (50 a second for MusicGen's 32 kHz codec). fadtk (microsoft/fadtk,
``fadtk/model_loader.py``, ``EncodecEmbModel``) uses these per-frame rows too: a clip of 8 s gives 400
embeddings, so even a few clips give a full-rank covariance in EnCodec's 128 dimensions, where one mean per clip
would need 129 clips. FAD∞'s subsets are then subsets of frames, as in fadtk. The embeddings only mean
something relative to one codec, so every model in a run is measured with the same one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt
import torch
from transformers import EncodecModel

from generation.audio.io import read_audio
from generation.audio.signal import Samples, resample
from generation.errors import ModelUnavailable
from generation.music.engine import MusicEngine
from generation.music.musicgen import MusicGenEngine
from storage.artifacts import sha256_of
from storage.files import atomic_write_bytes

log = logging.getLogger(__name__)

Embeddings = npt.NDArray[np.float32]  # (rows, dim): one row per clip (CLAP) or per frame (EnCodec)

#: Clips embedded in one forward pass.
BATCH = 16


class Embedder(Protocol):
    """Turns clips at its own rate into rows of embeddings. ``name`` keys the cache: two embedders with the same
    name must give the same rows for the same audio."""

    @property
    def name(self) -> str: ...

    @property
    def sample_rate(self) -> int: ...

    def embed(self, clips: Sequence[Samples]) -> list[Embeddings]:
        """One (rows, dim) array per clip; clips are (channels, n) at :attr:`sample_rate`."""
        ...


def mono(samples: Samples) -> Samples:
    """(1, n): the channels averaged, as both CLAP and MusicGen's mono EnCodec hear them."""
    return samples if samples.shape[0] == 1 else samples.mean(axis=0, keepdims=True, dtype=np.float32)


class EncodecEmbedder:
    """Per-frame latents of a MusicGen's EnCodec encoder (see the module docstring)."""

    def __init__(self, codec: EncodecModel, *, name: str, device: str) -> None:
        self.codec, self._name, self.device = codec, name, device

    @classmethod
    def of(cls, engine: MusicEngine) -> EncodecEmbedder:
        """The EnCodec inside a loaded MusicGen engine (no second copy of the weights).

        Raises:
            ModelUnavailable: the engine is not a MusicGen (ACE-Step has no EnCodec).
        """
        if not isinstance(engine, MusicGenEngine):
            raise ModelUnavailable(f"model {engine.name!r} has no EnCodec; give a MusicGen model for the embeddings")
        return cls(cast(EncodecModel, engine.model.audio_encoder), name=f"encodec:{engine.name}", device=engine.device)

    @property
    def name(self) -> str:
        return self._name

    @property
    def sample_rate(self) -> int:
        return int(self.codec.config.sampling_rate)

    @torch.inference_mode()
    def embed(self, clips: Sequence[Samples]) -> list[Embeddings]:
        out = []
        for clip in clips:  # one at a time: clips differ in length, and padding would add frames of silence
            values = torch.from_numpy(mono(clip)[None]).to(self.device, dtype=self.codec.dtype)
            latents = self.codec.encoder(values)  # (1, dim, frames)
            out.append(latents[0].T.float().cpu().numpy().astype(np.float32))
        return out


class EmbeddingCache:
    """Embeddings on disk as ``<dir>/<embedder>/<sha256 of the audio file>.npy``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.hits = self.misses = 0

    def folder(self, embedder: Embedder) -> Path:
        """The embedder's folder: its name made safe for a file system, plus a hash so that names never collide."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", embedder.name).strip("_")[:60]
        return self.directory / f"{slug}-{hashlib.sha256(embedder.name.encode()).hexdigest()[:10]}"

    def embed_files(self, embedder: Embedder, paths: Sequence[Path], *, batch: int = BATCH) -> list[Embeddings]:
        """Each file's embeddings, from the cache or computed (in batches) and stored.

        Raises:
            AudioParameterError: a file is missing or not readable audio (the message names the file).
        """
        folder = self.folder(embedder)
        keys = [folder / f"{sha256_of(p)}.npy" for p in paths]
        found: dict[int, Embeddings] = {i: np.load(k) for i, k in enumerate(keys) if k.is_file()}
        missing = [i for i in range(len(paths)) if i not in found]
        self.hits, self.misses = self.hits + len(found), self.misses + len(missing)
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            clips = [resample(*read_audio(paths[i]), embedder.sample_rate) for i in chunk]
            for i, rows in zip(chunk, embedder.embed(clips), strict=True):
                buffer = io.BytesIO()
                np.save(buffer, rows)
                atomic_write_bytes(keys[i], buffer.getvalue())  # a run reading it meanwhile sees all or nothing
                found[i] = rows
        log.info("embedded", extra={"embedder": embedder.name, "files": len(paths), "computed": len(missing)})
        return [found[i] for i in range(len(paths))]
