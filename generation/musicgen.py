"""The MusicGen engine: load once, generate many times, report progress, stop when asked.

Backed by transformers' ``MusicgenForConditionalGeneration``, which loads the same
``facebook/musicgen-*`` checkpoints audiocraft publishes (audiocraft itself pins torch 2.1).
Generation parameters travel with each call; nothing is set as state on the shared model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import MusicgenForConditionalGeneration, MusicgenProcessor, StoppingCriteria, StoppingCriteriaList

from beatforge.contract import BeatParams
from generation.audio import Samples, fade_out, fit_length
from generation.errors import GenerationCancelled, GenerationError, ModelUnavailable
from generation.tiny import DEBUG_MODEL, build_tiny_musicgen

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True, slots=True)
class GeneratedAudio:
    samples: Samples  # float32, shape (channels, n), in [-1, 1]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate


class _StepHook(StoppingCriteria):
    """Called by ``generate`` once per decoding step: the one place to report progress and to stop early.

    Stopping raises instead of returning True: transformers' MusicGen cannot undo its delay
    pattern on a sequence cut shorter than the number of codebooks, and raising also skips
    the audio decode of a result nobody wants.
    """

    def __init__(self, total: int, on_progress: ProgressCallback | None, should_stop: StopCheck | None) -> None:
        self.total, self.done = total, 0
        self.on_progress, self.should_stop = on_progress, should_stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:  # noqa: ARG002
        self.done += 1
        if self.should_stop is not None and self.should_stop():
            raise GenerationCancelled(f"generation was cancelled after {self.done} of {self.total} steps")
        if self.on_progress is not None:
            self.on_progress(min(self.done, self.total), self.total)
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class MusicGenEngine:
    def __init__(
        self, model: MusicgenForConditionalGeneration, processor: MusicgenProcessor, *, name: str, device: str
    ) -> None:
        self.model, self.processor, self.name, self.device = model, processor, name, device

    @classmethod
    def load(cls, name: str, *, device: str = "cpu") -> MusicGenEngine:
        """Load from a Hugging Face id (``facebook/musicgen-small``), a local directory, or ``debug``.

        Raises:
            ModelUnavailable: the weights cannot be found, read or built.
        """
        started = time.perf_counter()
        try:
            if name == DEBUG_MODEL:
                model, processor = build_tiny_musicgen()
            else:
                source = str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
                dtype = torch.float16 if device.startswith("cuda") else torch.float32
                processor = MusicgenProcessor.from_pretrained(source)
                model = MusicgenForConditionalGeneration.from_pretrained(source, dtype=dtype)
            model = model.to(device).eval()
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelUnavailable(f"model {name!r} could not be loaded: {exc}".splitlines()[0][:300]) from exc
        log.info(
            "model loaded", extra={"model": name, "device": device, "load_s": round(time.perf_counter() - started, 2)}
        )
        return cls(model, processor, name=name, device=device)

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.model.config.audio_encoder.frame_rate)

    @property
    def audio_channels(self) -> int:
        return int(self.model.config.audio_encoder.audio_channels)

    @property
    def num_codebooks(self) -> int:
        return int(self.model.decoder.config.num_codebooks) // self.audio_channels

    def decoding_steps(self, duration_s: float) -> int:
        """Steps for ``duration_s`` of audio: the delay pattern costs ``num_codebooks - 1`` extra steps."""
        return int(np.ceil(duration_s * self.frame_rate)) + self.num_codebooks - 1

    @torch.inference_mode()
    def generate(
        self,
        params: BeatParams,
        *,
        guidance_scale: float = 3.0,
        fade_out_s: float = 0.5,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> GeneratedAudio:
        """Generate ``params.duration_s`` seconds; the same params on the same device give the same audio.

        Raises:
            GenerationCancelled: ``should_stop`` returned True between two steps.
            GenerationError: the model failed (e.g. out of memory).
        """
        steps = self.decoding_steps(params.duration_s)
        hook = _StepHook(steps, on_progress, should_stop)
        inputs = self.processor(text=[params.music_text], padding=True, return_tensors="pt").to(self.device)
        torch.manual_seed(params.seed)  # one job at a time per engine (max_jobs=1), so the global stream is ours
        try:
            output = self.model.generate(
                **inputs,
                do_sample=True,
                guidance_scale=guidance_scale or None,
                max_new_tokens=steps,
                stopping_criteria=StoppingCriteriaList([hook]),
            )
        except torch.OutOfMemoryError as exc:
            raise GenerationError("the GPU ran out of memory; try a shorter beat") from exc
        samples = output[0].float().cpu().numpy().astype(np.float32)
        samples = fit_length(np.clip(samples, -1.0, 1.0), round(params.duration_s * self.sample_rate))
        return GeneratedAudio(fade_out(samples, sample_rate=self.sample_rate, seconds=fade_out_s), self.sample_rate)
