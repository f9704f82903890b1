"""The ACE-Step 1.5 engine (:class:`generation.music.engine.MusicEngine`), through diffusers' ``AceStepPipeline``.

ACE-Step's weights are MIT-licensed: beats made with it may be sold. It makes a whole song in one flow-matching
pass (8 steps for the turbo checkpoint), 48 kHz stereo, and takes tempo, key and time signature as conditioning.

* Takes are rows of one pipeline call, each with its own seeded generator. The pipeline takes tempo, key and
  metre (and the length) per call, not per row, so items are grouped by them and each group is one call; a
  take's audio thus depends only on its words, seed, length and controls, not on its company.
* Instrumental by default: the lyrics are ``[Instrumental]``.
* ⏩ Extend is a repaint: the take, padded with silence to its new length, is the source, and everything after
  its end is regenerated; the take itself is copied back unchanged (the pipeline re-decodes the kept part too).
* /remix is SDEdit: the audio's latents are noised to the strength's point on the flow and denoised from
  there in the new words (the pipeline's ``cover`` task needs ACE-Step's audio tokenizer, which not every
  diffusers checkpoint ships).
* The pipeline peak-normalises every row to -1 dBFS and rounds the length up to whole latent frames (1920
  samples); each row is cut to its own length here.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from beatforge.contract import SamplingParams
from beatforge.engines import ENGINES, Capabilities
from generation.audio.signal import Samples, fade_out, fit_length
from generation.errors import (
    AudioParameterError,
    GenerationCancelled,
    GenerationError,
    MelodyUnsupported,
    ModelUnavailable,
)
from generation.music.engine import Controls, GeneratedAudio, GenerationItem, Preview, ProgressCallback, StopCheck

log = logging.getLogger(__name__)

#: ACE-Step writes songs with vocals unless told otherwise; a beat is instrumental.
INSTRUMENTAL = "[Instrumental]"
#: The seam between a take and what ⏩ Extend adds is crossfaded over this long.
SEAM_S = 0.02


@dataclass(frozen=True, slots=True)
class AceStepSampler:
    """How ACE-Step denoises (``BEATFORGE_ACESTEP_*``): ACE-Step 1.5's own defaults."""

    steps: int = 8
    #: Ignored by the guidance-distilled turbo checkpoints.
    guidance: float = 7.0
    shift: float = 3.0


class AceStepEngine:
    def __init__(self, pipeline: Any, *, name: str, device: str, sampler: AceStepSampler) -> None:
        self.pipeline, self.name, self.device, self.sampler = pipeline, name, device, sampler

    @classmethod
    def load(cls, name: str, *, device: str = "cpu", settings: AceStepSampler | None = None) -> AceStepEngine:
        """Load from a Hugging Face id (``ACE-Step/acestep-v15-xl-turbo-diffusers``), a diffusers directory, or
        ``debug-acestep``. On CUDA the weights are bfloat16, as ACE-Step runs them.

        Raises:
            ModelUnavailable: the weights cannot be found, read or built.
        """
        from diffusers import AceStepPipeline

        from generation.music.acestep_tiny import DEBUG_ACESTEP, build_tiny_acestep

        started = time.perf_counter()
        try:
            if name == DEBUG_ACESTEP:
                pipeline = build_tiny_acestep()
            else:
                source = str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
                dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
                pipeline = AceStepPipeline.from_pretrained(source, torch_dtype=dtype)  # type: ignore[no-untyped-call]
            pipeline.to(device)
            pipeline.set_progress_bar_config(disable=True)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise ModelUnavailable(f"model {name!r} could not be loaded: {exc}".splitlines()[0][:300]) from exc
        log.info(
            "model loaded", extra={"model": name, "device": device, "load_s": round(time.perf_counter() - started, 2)}
        )
        return cls(pipeline, name=name, device=device, sampler=settings or AceStepSampler())

    @property
    def capabilities(self) -> Capabilities:
        return ENGINES["acestep"]

    @property
    def takes_melody(self) -> bool:
        return False

    @property
    def sample_rate(self) -> int:
        return int(self.pipeline.sample_rate)

    @property
    def audio_channels(self) -> int:
        return int(self.pipeline.vae.config.audio_channels)

    def modules(self) -> list[torch.nn.Module]:
        return [c for c in self.pipeline.components.values() if isinstance(c, torch.nn.Module)]

    def apply_lora(self, adapter: str) -> None:
        """Fuse a diffusers LoRA (``save_lora_weights``, transformer only) into the transformer's weights."""
        try:
            self.pipeline.load_lora_weights(adapter, adapter_name="registry")
            self.pipeline.fuse_lora(adapter_names=["registry"])
            self.pipeline.unload_lora_weights()  # the fused weights stay; the adapter layers go
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
            message = f"LoRA adapter {adapter!r} could not be applied: {exc}".splitlines()[0][:300]
            raise ModelUnavailable(message) from exc

    def decoding_steps(self, duration_s: float) -> int:  # noqa: ARG002 - one pass over the whole song
        return self.sampler.steps

    @torch.inference_mode()
    def generate_batch(
        self,
        items: Sequence[GenerationItem],
        *,
        sampling: SamplingParams,  # noqa: ARG002 - MusicGen's token sampling; ACE-Step samples by self.sampler
        fade_out_s: float = 0.5,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        preview: Preview | None = None,  # noqa: ARG002 - a diffusion's audio appears all at once, at its end
    ) -> list[GeneratedAudio]:
        """Every item, one pipeline call per group of items that share length, controls and source audio shape.

        Raises:
            GenerationCancelled: ``should_stop`` returned True between two steps.
            GenerationError: the model failed (e.g. out of memory), or an item asks for a melody.
        """
        if any(i.melody is not None for i in items):
            raise MelodyUnsupported(f"model {self.name!r} (ACE-Step) cannot follow a melody; choose a melody model")
        order = sorted(range(len(items)), key=lambda i: _group(items[i]))
        groups = [list(g) for _, g in itertools.groupby(order, key=lambda i: _group(items[i]))]
        progress = _Progress(sum(self._steps(items[g[0]]) for g in groups), on_progress, should_stop)
        out: dict[int, GeneratedAudio] = {}
        try:
            for group in groups:
                rows = [items[i] for i in group]
                for index, samples in zip(group, self._call(rows, progress), strict=True):
                    out[index] = GeneratedAudio(
                        fade_out(samples, sample_rate=self.sample_rate, seconds=fade_out_s),
                        self.sample_rate,
                        items[index].seed,
                    )
        except torch.OutOfMemoryError as exc:
            raise GenerationError("the GPU ran out of memory; try a shorter beat or fewer takes") from exc
        return [out[i] for i in range(len(items))]

    def _call(self, rows: list[GenerationItem], progress: _Progress) -> list[Samples]:
        """One pipeline call for rows sharing length, controls and source shape: each row's audio, cut to length."""
        first = rows[0]
        kwargs: dict[str, Any] = {}
        new_s = first.duration_s
        if first.prompt is not None:  # ⏩ extend: repaint everything after the take
            sources = [self._channels(r.prompt) for r in rows if r.prompt is not None]
            kept = sources[0].shape[-1]
            new_s = kept / self.sample_rate + first.duration_s
            padded = [fit_length(s, kept + round(first.duration_s * self.sample_rate)) for s in sources]
            kwargs |= {
                "task_type": "repaint",
                "src_audio": self._tensor(np.stack(padded)),
                "repainting_start": kept / self.sample_rate,
                "repainting_end": -1,
            }
        elif first.remix is not None:
            kwargs |= self._remix(rows)
            new_s = first.remix.shape[-1] / self.sample_rate
        # the pipeline makes ceil(seconds x 25) latent frames: a remix's latents already have their count
        frames = kwargs["latents"].shape[1] if "latents" in kwargs else None
        seconds = (frames - 0.5) / self.pipeline.latents_per_second if frames else new_s
        audio = self._pipeline(rows, first.controls, seconds, progress, kwargs)
        n = round(new_s * self.sample_rate)
        out = [fit_length(np.clip(a, -1.0, 1.0), n) for a in audio]
        if first.prompt is not None:
            out = [_splice(s, a, self.sample_rate) for s, a in zip(sources, out, strict=True)]
        return out

    def _pipeline(
        self, rows: list[GenerationItem], controls: Controls, seconds: float, progress: _Progress, extra: dict[str, Any]
    ) -> list[Samples]:
        generators = [torch.Generator(device=self.device).manual_seed(r.seed) for r in rows]
        # turbo checkpoints have guidance distilled in: asking for it only logs a warning
        guidance = 1.0 if getattr(self.pipeline, "is_turbo", False) else self.sampler.guidance
        if "timesteps" not in extra:
            extra = {**extra, "num_inference_steps": self.sampler.steps}
        result = self.pipeline(
            prompt=[r.text for r in rows],
            lyrics=[INSTRUMENTAL] * len(rows),
            audio_duration=seconds,
            guidance_scale=guidance,
            shift=self.sampler.shift,
            generator=generators,
            bpm=controls.bpm,
            keyscale=controls.key,
            timesignature=str(controls.time_signature) if controls.time_signature else None,
            callback_on_step_end=progress.step,
            output_type="pt",
            **extra,
        )
        progress.call_start += self._steps(rows[0])
        return [a.float().cpu().numpy().astype(np.float32) for a in result.audios]

    def _remix(self, rows: list[GenerationItem]) -> dict[str, Any]:
        """SDEdit: each row's audio latents, noised (its own seed) to ``remix_strength`` on the flow, and the
        sampler's schedule from that point on."""
        strength = float(rows[0].remix_strength)
        sources = [self._channels(r.remix) for r in rows if r.remix is not None]
        hop = round(self.sample_rate / self.pipeline.latents_per_second)  # samples per latent frame
        whole = -(-sources[0].shape[-1] // hop) * hop  # the VAE encodes whole frames only
        audio = self._tensor(np.stack([fit_length(s, whole) for s in sources]))
        vae = self.pipeline.vae
        clean = vae.encode(audio.to(vae.dtype)).latent_dist.mean.transpose(1, 2)
        noise = torch.stack(
            [
                torch.randn(clean.shape[1:], generator=torch.Generator(device=self.device).manual_seed(r.seed))
                for r in rows
            ]
        ).to(clean)
        dtype = self.pipeline.transformer.dtype
        latents = ((1 - strength) * clean + strength * noise).to(dtype)
        return {"latents": latents, "timesteps": self._schedule_from(strength)}

    def _steps(self, item: GenerationItem) -> int:
        return len(self._schedule_from(item.remix_strength)) if item.remix is not None else self.sampler.steps

    def _schedule_from(self, strength: float) -> list[float]:
        """The sampler's shifted schedule (as the pipeline makes it), from ``strength`` down."""
        steps, shift = self.sampler.steps, self.sampler.shift
        full = np.linspace(1.0, 0.0, steps + 1)[:-1]
        full = shift * full / (1 + (shift - 1) * full)
        below = [float(t) for t in full if t < strength - 1e-6]
        return [strength, *below]

    def _channels(self, samples: Samples | None) -> Samples:
        if samples is None or samples.ndim != 2 or samples.shape[-1] == 0:
            raise AudioParameterError("audio to start from must be shaped (channels, samples) and not empty")
        if samples.shape[0] == self.audio_channels:
            return samples
        return np.repeat(samples.mean(axis=0, keepdims=True), self.audio_channels, axis=0)

    def _tensor(self, audio: np.ndarray[Any, Any]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)


def _group(item: GenerationItem) -> tuple[Any, ...]:
    """Items that may share one pipeline call: same length, controls, kind and shape of source audio."""
    source = item.prompt if item.prompt is not None else item.remix
    return (
        item.duration_s,
        item.controls.bpm or 0,
        item.controls.key or "",
        item.controls.time_signature or 0,
        "extend" if item.prompt is not None else "remix" if item.remix is not None else "",
        source.shape[-1] if source is not None else 0,
        item.remix_strength if item.remix is not None else 0.0,
    )


def _splice(kept: Samples, generated: Samples, sample_rate: int) -> Samples:
    """The take unchanged, then what was generated after it, crossfaded over :data:`SEAM_S`."""
    out = generated.copy()
    n = kept.shape[-1]
    fade = min(round(SEAM_S * sample_rate), n, out.shape[-1] - n)
    out[:, : n - fade] = kept[:, : n - fade]
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        out[:, n - fade : n] = kept[:, n - fade :] * (1 - ramp) + generated[:, n - fade : n] * ramp
    return out


class _Progress:
    """The pipeline's per-step callback: reports progress over every call of a batch, stops when asked.

    Raising from the callback is how a call stops between two steps: the pipeline has no cancel of its own
    (its ``_interrupt`` flag would still decode the half-denoised latents).
    """

    def __init__(self, total: int, on_progress: ProgressCallback | None, should_stop: StopCheck | None) -> None:
        self.total, self.done, self.call_start = total, 0, 0
        self.on_progress, self.should_stop = on_progress, should_stop

    def step(self, pipeline: Any, step: int, timestep: float, kwargs: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG002
        self.done = self.call_start + step + 1
        if self.should_stop is not None and self.should_stop():
            raise GenerationCancelled(f"generation was cancelled after {self.done} of {self.total} steps")
        if self.on_progress is not None:
            self.on_progress(min(self.done, self.total), self.total)
        return kwargs
