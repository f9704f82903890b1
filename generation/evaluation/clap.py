"""CLAP (LAION's contrastive language–audio model, through transformers' ``ClapModel``): how well a clip matches
its words, and clip embeddings for FAD.

One :class:`ClapScorer` is loaded once and asked many times: ``beatforge eval`` scores every clip against its
prompt, and the worker can rank the takes of a beat (best-of-N) with :func:`clap_scores`. Audio is resampled
to the feature extractor's rate (48 kHz) and mixed to mono, which is what CLAP was trained on.

The feature extractor crops clips longer than its window (10 s) at a random place, from numpy's global generator.
Clips are cut to their middle window here first, so the same clip always gets the same score and scoring never
touches a generator anyone else uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import ClapModel, ClapProcessor

from generation.audio.signal import Samples, resample
from generation.errors import ModelUnavailable
from generation.evaluation.embeddings import Embeddings, mono
from generation.hf import evaluating, on_device

log = logging.getLogger(__name__)

#: LAION's CLAP trained on music as well as speech and sounds (``beatforge eval --clap``'s default).
DEFAULT_CLAP = "laion/larger_clap_music"
#: ``--clap debug``: a tiny random CLAP built in code (:mod:`generation.evaluation.clap_tiny`).
DEBUG_CLAP = "debug"


def _middle(wave: npt.NDArray[np.float32], length: int) -> npt.NDArray[np.float32]:
    """The middle ``length`` samples (all of a shorter clip)."""
    start = max(0, (wave.shape[-1] - length) // 2)
    return wave[start : start + length]


def _features(output: Any) -> torch.Tensor:
    """The projected embeddings: transformers 5 returns an output whose ``pooler_output`` holds them, 4 a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClapScorer:
    """A loaded CLAP model and its processor. Also an :class:`generation.evaluation.embeddings.Embedder`."""

    def __init__(self, model: ClapModel, processor: ClapProcessor, *, name: str, device: str) -> None:
        self.model, self.processor, self._name, self.device = model, processor, name, device

    @classmethod
    def load(cls, source: str = DEFAULT_CLAP, *, device: str = "cpu") -> ClapScorer:
        """Load a Hugging Face id, a local directory (``save_pretrained`` of model and processor), or ``debug``.

        Raises:
            ModelUnavailable: it cannot be found, read or built.
        """
        try:
            if source == DEBUG_CLAP:
                from generation.evaluation.clap_tiny import build_tiny_clap

                model, processor = build_tiny_clap()
            else:
                path = Path(source).expanduser()
                source = str(path.resolve()) if path.is_dir() else source  # the cache's key: never a relative path
                model = ClapModel.from_pretrained(source)
                processor = ClapProcessor.from_pretrained(source)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelUnavailable(f"CLAP model {source!r} could not be loaded: {exc}".splitlines()[0][:300]) from exc
        return cls(evaluating(on_device(model, device)), processor, name=source, device=device)

    @property
    def name(self) -> str:
        return f"clap:{self._name}"

    @property
    def sample_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @torch.inference_mode()
    def audio_embeddings(self, audios: Sequence[Samples], sample_rate: int) -> Embeddings:
        """Unit-length embeddings (clips, dim) of clips (channels, n) at ``sample_rate``."""
        if not audios:
            return np.zeros((0, self.dim), dtype=np.float32)
        window = int(self.processor.feature_extractor.nb_max_samples)
        waves = [_middle(mono(resample(a, sample_rate, self.sample_rate))[0], window) for a in audios]
        inputs = self.processor(audio=waves, sampling_rate=self.sample_rate, return_tensors="pt")
        features = _features(self.model.get_audio_features(**inputs.to(self.device)))
        return self._unit(features)

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str]) -> Embeddings:
        """Unit-length embeddings (texts, dim)."""
        inputs = self.processor(text=list(texts), padding=True, truncation=True, return_tensors="pt")
        return self._unit(_features(self.model.get_text_features(**inputs.to(self.device))))

    def scores(self, texts: Sequence[str], audios: Sequence[Samples], sample_rate: int) -> list[float]:
        """Cosine similarity in [-1, 1] of each clip with its text (one text: the same for every clip)."""
        if len(texts) not in (1, len(audios)):
            raise ValueError(f"{len(texts)} texts for {len(audios)} clips; give one text, or one per clip")
        audio = self.audio_embeddings(audios, sample_rate)
        text = self.text_embeddings(texts)
        return [float(np.clip(s, -1.0, 1.0)) for s in np.sum(audio * text, axis=1)]

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def embed(self, clips: Sequence[Samples]) -> list[Embeddings]:
        """The Embedder interface: one row per clip (at :attr:`sample_rate`)."""
        return list(self.audio_embeddings(clips, self.sample_rate)[:, None, :])

    @staticmethod
    def _unit(features: torch.Tensor) -> Embeddings:
        rows: Embeddings = features.float().cpu().numpy().astype(np.float32)
        norms = np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12).astype(np.float32)
        unit: Embeddings = rows / norms
        return unit


def best_first(scores: Sequence[float], keep: int) -> list[int]:
    """The indices of the ``keep`` highest scores, highest first; ties keep their order (best of N takes)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])[:keep]


def clap_scores(model: ClapScorer, texts: Sequence[str], audios: Sequence[Samples], sample_rate: int) -> list[float]:
    """How well each clip matches its words (cosine of CLAP embeddings, in [-1, 1]); higher is a better match.

    ``texts``: one per clip, or one for all of them (the takes of one beat). Load ``model`` once with
    :meth:`ClapScorer.load` and keep it: loading takes seconds, scoring a few clips milliseconds on a GPU.
    """
    return model.scores(texts, audios, sample_rate)
