"""Cover art for every beat: a diffusion model when one is available, a procedural cover when not.

The diffusers pipeline and the safety checker load once per worker, on the same device as
MusicGen. Whatever fails (no weights, out of memory, a flagged image), the beat still gets a
cover, and the result says which kind it got and why.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from beatforge.config import Settings
from beatforge.presets import MOODS
from generation.cover.painting import procedural_cover
from generation.cover.prompt import CoverPrompt, build_cover_prompt, write_cover_prompt
from generation.cover.typography import draw_title
from generation.errors import GenerationCancelled, GenerationError, ModelUnavailable
from generation.hf import evaluating, on_device
from generation.music.tiny import DEBUG_MODEL
from generation.prompts.llm import ChatClient, LLMError

log = logging.getLogger(__name__)

_NEUTRAL_PALETTE = ("#111827", "#6d28d9", "#db2777", "#f59e0b", "#f3f4f6")
StopCheck = Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Cover:
    image: Image.Image
    source: Literal["diffusion", "procedural"]
    model: str | None
    note: str | None = None  # why the fallback was used, shown to the user
    prompt: str | None = None  # what the diffusion model was asked, stored so a cover can be reproduced
    prompt_source: Literal["template", "llm"] | None = None


def _source(name: str) -> str:
    path = Path(name).expanduser()
    return str(path) if path.is_dir() else name


class DiffusionCover:
    """Thin adapter over a diffusers text-to-image pipeline."""

    def __init__(self, pipeline: Any, *, name: str, device: str) -> None:
        self.pipeline, self.name, self.device = pipeline, name, device

    @classmethod
    def load(
        cls,
        name: str,
        *,
        device: str,
        lora: str | None = None,
        lora_scale: float = 0.8,
        attention_slicing: bool = False,
        cpu_offload: bool = False,
    ) -> DiffusionCover:
        """Load from a Hugging Face id, a local directory, or ``debug`` (tiny random pipeline).

        Raises:
            ModelUnavailable: weights missing or unreadable.
        """
        started = time.perf_counter()
        # The class AutoPipelineForText2Image picks from the checkpoint (SD, SDXL, ...): no one static type, and
        # diffusers' pipeline methods are mostly unannotated.
        pipeline: Any
        try:
            if name == DEBUG_MODEL:
                from generation.cover.tiny import build_tiny_sd_pipeline

                pipeline = build_tiny_sd_pipeline()
            else:
                from diffusers import AutoPipelineForText2Image

                dtype = torch.float16 if device.startswith("cuda") else torch.float32
                pipeline = AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]  # unannotated
                    _source(name), torch_dtype=dtype
                )
            if lora:
                pipeline.load_lora_weights(_source(lora))
                pipeline.fuse_lora(lora_scale=lora_scale)
            if attention_slicing:
                pipeline.enable_attention_slicing()
            if cpu_offload and device.startswith("cuda"):
                pipeline.enable_model_cpu_offload()
            else:
                pipeline = pipeline.to(device)
            pipeline.set_progress_bar_config(disable=True)
        except (OSError, ValueError, RuntimeError, KeyError, ImportError) as exc:
            raise ModelUnavailable(f"cover model {name!r} could not be loaded: {exc}".splitlines()[0][:300]) from exc
        log.info(
            "cover model loaded", extra={"model": name, "lora": lora, "load_s": round(time.perf_counter() - started, 2)}
        )
        return cls(pipeline, name=name, device=device)

    def render(
        self,
        prompt: str,
        *,
        negative: str,
        seed: int,
        size: int,
        steps: int,
        guidance: float,
        should_stop: StopCheck | None = None,
    ) -> Image.Image:
        def on_step(_pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if should_stop is not None and should_stop():
                raise GenerationCancelled(f"cover cancelled at step {step}")
            return kwargs

        generator = torch.Generator(device="cpu").manual_seed(seed)
        try:
            result = self.pipeline(
                prompt=prompt,
                # Without guidance (turbo models) the negative prompt has no effect: don't pay to encode it.
                negative_prompt=negative if guidance > 1 else None,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generator,
                callback_on_step_end=on_step,
            )
        except torch.OutOfMemoryError as exc:
            raise GenerationError("the GPU ran out of memory while drawing the cover") from exc
        image: Image.Image = result.images[0]
        return image.convert("RGB")


class SafetyCheck:
    """diffusers' Stable Diffusion safety checker, run on our images whatever pipeline drew them."""

    def __init__(self, checker: Any, processor: Any, *, device: str) -> None:
        self.checker, self.processor, self.device = checker, processor, device

    @classmethod
    def load(cls, name: str, *, device: str) -> SafetyCheck:
        try:
            if name == DEBUG_MODEL:
                from generation.cover.tiny import build_tiny_safety_checker

                checker, processor = build_tiny_safety_checker()
            else:
                from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
                from transformers import CLIPImageProcessor

                checker = StableDiffusionSafetyChecker.from_pretrained(_source(name))
                processor = CLIPImageProcessor.from_pretrained(_source(name))
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelUnavailable(f"safety checker {name!r} could not be loaded: {exc}".splitlines()[0][:300]) from exc
        return cls(evaluating(on_device(checker, device)), processor, device=device)

    @torch.inference_mode()
    def flagged(self, image: Image.Image) -> bool:
        clip_input = self.processor(image, return_tensors="pt").pixel_values.to(self.device, self.checker.dtype)
        pixels = np.asarray(image, dtype=np.float32)[None] / 255.0
        _, has_nsfw = self.checker(images=pixels, clip_input=clip_input)
        return bool(has_nsfw[0])


class CoverMaker:
    """Everything a job needs to get a cover; loads lazily once, and remembers why loading failed."""

    def __init__(
        self,
        settings: Settings,
        *,
        device: str,
        diffusion: DiffusionCover | None = None,
        safety: SafetyCheck | None = None,
    ) -> None:
        """``diffusion``/``safety`` may be passed ready-made (benchmarks build real-size random models)."""
        self.settings, self.device = settings, device
        self.llm = ChatClient.from_settings(settings)
        self._diffusion: DiffusionCover | None = diffusion
        self._safety: SafetyCheck | None = safety
        self._unavailable: str | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.cover_mode != "off"

    def warm_up(self) -> None:
        """Load the models now (worker start-up) so the first job does not pay for it."""
        if self.settings.cover_mode == "diffusion":
            self.models()

    def models(self) -> tuple[DiffusionCover, SafetyCheck | None] | None:
        """The loaded pipeline and safety check (loading them on first use), or None if they cannot load."""
        s = self.settings
        with self._lock:
            if self._diffusion is None and self._unavailable is None:
                try:
                    self._diffusion = DiffusionCover.load(
                        s.cover_model,
                        device=self.device,
                        lora=s.cover_lora,
                        lora_scale=s.cover_lora_scale,
                        attention_slicing=s.cover_attention_slicing,
                        cpu_offload=s.cover_cpu_offload,
                    )
                    if s.cover_safety_check:
                        self._safety = SafetyCheck.load(s.cover_safety_model, device=self.device)
                except ModelUnavailable as exc:
                    # Without its safety check a public server gets no drawn covers at all.
                    self._diffusion, self._unavailable = None, str(exc)
                    log.warning("cover model unavailable; using procedural covers", extra={"reason": str(exc)})
            return (self._diffusion, self._safety) if self._diffusion is not None else None

    @property
    def unavailable_reason(self) -> str | None:
        return self._unavailable

    def make(
        self,
        *,
        description: str,
        seed: int,
        style: str | None = None,
        mood: str | None = None,
        title: str | None = None,
        should_stop: StopCheck | None = None,
    ) -> Cover:
        s = self.settings
        cover: Cover | None = None
        note = None
        models = self.models() if s.cover_mode == "diffusion" else None
        if models is not None:
            diffusion, safety = models
            spec, prompt_source = self._prompt(description=description, style=style, mood=mood)
            try:
                image = diffusion.render(
                    spec.prompt,
                    negative=spec.negative,
                    seed=seed,
                    size=s.cover_size,
                    steps=s.cover_steps,
                    guidance=s.cover_guidance,
                    should_stop=should_stop,
                )
            except GenerationCancelled:
                raise
            except GenerationError as exc:  # the beat is done; a failed drawing must not cost the user the beat
                log.warning("cover drawing failed; using the fallback", extra={"reason": str(exc)})
                note = "drawing the cover failed; this is the fallback cover"
            else:
                if safety is not None and safety.flagged(image):
                    note = "the drawn cover was withheld by the safety check; this is the fallback cover"
                    log.info("cover flagged by the safety check", extra={"model": diffusion.name})
                else:
                    cover = Cover(image, "diffusion", diffusion.name, prompt=spec.prompt, prompt_source=prompt_source)
        elif s.cover_mode == "diffusion":
            note = "the cover model (or its safety check) is not available; this is the fallback cover"
        if cover is None:
            palette = MOODS[mood].palette if mood else _NEUTRAL_PALETTE
            image = procedural_cover(description=description, palette=palette, seed=seed, size=s.cover_size)
            cover = Cover(image, "procedural", None, note)
        if title and title.strip():
            cover = dataclasses.replace(cover, image=draw_title(cover.image, title))
        return cover

    def _prompt(
        self, *, description: str, style: str | None, mood: str | None
    ) -> tuple[CoverPrompt, Literal["template", "llm"]]:
        if self.llm is not None:
            try:
                return write_cover_prompt(self.llm, description=description, style=style, mood=mood), "llm"
            except LLMError as exc:
                log.warning("LLM cover prompt failed; using the template", extra={"reason": str(exc)})
        return build_cover_prompt(description=description, style=style, mood=mood), "template"
