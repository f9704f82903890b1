"""The MusicGen engine (:class:`generation.music.engine.MusicEngine`): load once, generate many takes at a time,
any length, report progress, stop when asked.

Backed by transformers' ``MusicgenForConditionalGeneration``, which loads the same ``facebook/musicgen-*``
checkpoints audiocraft publishes (audiocraft itself pins torch 2.1). Generation parameters travel with each
call; nothing is set as state on the shared model.

* Takes are rows of one batched ``generate``; each row samples with its own seeded random numbers
  (:mod:`generation.music.sampling`), so a take's seed reproduces it alone or in any batch.
* Beyond one window (30 s), generation continues window by window with the last 10 s of codes as the prompt;
  the codes of all windows are joined and decoded once, so there is no seam to hide.
* Continuing audio (extend a take, continue a clip) encodes it with the model's own codec as the prompt.
* Melody models (``MusicgenMelodyForConditionalGeneration``) follow a melody's chroma, window by window.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    EncodecModel,
    LogitsProcessorList,
    MusicgenForCausalLM,
    MusicgenForConditionalGeneration,
    MusicgenMelodyForCausalLM,
    MusicgenMelodyForConditionalGeneration,
    MusicgenProcessor,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.models.encodec.modeling_encodec import EncodecDecoderOutput, EncodecEncoderOutput

from beatforge.bounds import WINDOW_S
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
from generation.hf import evaluating, on_device, sub_config
from generation.music.chroma import melody_chroma
from generation.music.decode import DecodeLoop
from generation.music.engine import GeneratedAudio, GenerationItem, Preview, ProgressCallback, StopCheck
from generation.music.sampling import SeededSampler
from generation.music.tiny import DEBUG_MODEL, build_tiny_musicgen

log = logging.getLogger(__name__)

#: Each window after the first starts from this much of what came before it.
CONTEXT_S = 10.0
#: Frames EnCodec decodes in one call at most (16 takes of 30 s), to bound its memory on long batches.
DECODE_FRAMES = 16 * 1500


class _WindowDone(Exception):
    """Raised at a window's last step: its codes are in the hook, and ``generate`` need not decode them."""


class _StepHook(StoppingCriteria):
    """Called once per decoding step (by our loop, or by ``generate`` as a stopping criterion): reports progress,
    stops early, and keeps the token ids.

    It ends every window by raising (:class:`_WindowDone`, or :class:`GenerationCancelled` when asked to
    stop): transformers' MusicGen always decodes its codes to audio before returning, which the engine does
    once for all windows instead (a second EnCodec decode cost up to 5 % of a call, more at large batches).
    The ids of the last step are the window's codes (still in the delay pattern).
    """

    def __init__(self, total: int, on_progress: ProgressCallback | None, should_stop: StopCheck | None) -> None:
        self.total, self.done = total, 0
        self.on_progress, self.should_stop = on_progress, should_stop
        self.ids: torch.Tensor | None = None
        self.window_end = 0  # the value of ``done`` at which the current window is complete
        #: Called with the ids once ``done`` reaches ``preview_at`` (the first window's first seconds are whole).
        self.preview: Callable[[torch.Tensor], None] | None = None
        self.preview_at = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:  # noqa: ARG002
        self.step(input_ids)
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    def step(self, input_ids: torch.Tensor) -> None:
        self.done += 1
        self.ids = input_ids
        if self.should_stop is not None and self.should_stop():
            raise GenerationCancelled(f"generation was cancelled after {self.done} of {self.total} steps")
        if self.on_progress is not None:
            self.on_progress(min(self.done, self.total), self.total)
        if self.preview is not None and self.done == self.preview_at:
            self.preview(input_ids)
        if self.done >= self.window_end:
            raise _WindowDone


#: How the engine decodes: see :attr:`MusicGenEngine.decoding`.
Decoding = Literal["loop", "static", "graphs", "generate"]


class MusicGenEngine:
    def __init__(
        self,
        model: MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration,
        processor: Any,
        *,
        name: str,
        device: str,
    ) -> None:
        self.model, self.processor, self.name, self.device = model, processor, name, device
        #: One window's span and the context each later window starts from (tests shrink them).
        self.window_s, self.context_s = WINDOW_S, CONTEXT_S
        #: Decode with our loop (:mod:`generation.music.decode`): its shapes growing with the window ("loop", the
        #: fastest on a CPU), in static shapes ("static"), or replayed as CUDA graphs ("graphs", the default on a
        #: GPU); or with transformers' ``generate`` (the reference, and the melody models' way).
        self.decoding: Decoding = "graphs" if device.startswith("cuda") else "loop"
        self._loop: DecodeLoop | None = None

    @classmethod
    def load(cls, name: str, *, device: str = "cpu") -> MusicGenEngine:
        """Load from a Hugging Face id (``facebook/musicgen-small``), a local directory, or ``debug``.

        On CUDA the weights are half precision; attention uses PyTorch's SDPA kernels (transformers' default).

        Raises:
            ModelUnavailable: the weights cannot be found, read or built.
        """
        started = time.perf_counter()
        model: MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration
        processor: MusicgenProcessor | PreTrainedTokenizerBase
        try:
            if name == DEBUG_MODEL:
                model, processor = build_tiny_musicgen()
            else:
                source = str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
                dtype = torch.float16 if device.startswith("cuda") else torch.float32
                if AutoConfig.from_pretrained(source).model_type == "musicgen_melody":
                    # its processor's chroma extractor needs torchaudio: text goes through the tokenizer alone
                    processor = AutoTokenizer.from_pretrained(source)
                    model = MusicgenMelodyForConditionalGeneration.from_pretrained(source, dtype=dtype)
                else:
                    processor = MusicgenProcessor.from_pretrained(source)
                    model = MusicgenForConditionalGeneration.from_pretrained(source, dtype=dtype)
            model = evaluating(on_device(model, device))
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelUnavailable(f"model {name!r} could not be loaded: {exc}".splitlines()[0][:300]) from exc
        log.info(
            "model loaded", extra={"model": name, "device": device, "load_s": round(time.perf_counter() - started, 2)}
        )
        return cls(model, processor, name=name, device=device)

    @property
    def capabilities(self) -> Capabilities:
        return ENGINES["musicgen"]

    @property
    def takes_melody(self) -> bool:
        return isinstance(self.model, MusicgenMelodyForConditionalGeneration)

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def apply_lora(self, adapter: str) -> None:
        """Merge a peft adapter (``save_pretrained`` from the decoder or the whole model) into the weights.

        Merged (``merge_and_unload``), generation runs at the base model's speed with no adapter layers.
        """
        from peft import PeftModel
        from peft.utils import load_peft_weights

        try:
            keys = load_peft_weights(adapter, device="cpu").keys()
            # Saved from the decoder, keys start "base_model.model.model.decoder."; from the whole model,
            # "base_model.model.decoder." (or text_encoder.).
            whole = any(k.startswith(("base_model.model.decoder.", "base_model.model.text_encoder.")) for k in keys)
            target = self.model if whole else self.model.decoder
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                merged = PeftModel.from_pretrained(target, adapter).merge_and_unload()
            missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
            if missing:
                raise ValueError(
                    f"the adapter does not fit this model's {'' if whole else 'decoder '}modules: {missing[0]}"
                )
            if whole:
                self.model = merged
            else:
                self.model.decoder = merged
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
            message = f"LoRA adapter {adapter!r} could not be applied: {exc}".splitlines()[0][:300]
            raise ModelUnavailable(message) from exc
        evaluating(self.model)
        self._loop = None  # laid out from the weights before the merge

    @property
    def _codec(self) -> EncodecModel:
        """The model's EnCodec (transformers types a composite model's parts as any ``PreTrainedModel``)."""
        return cast(EncodecModel, self.model.audio_encoder)

    @property
    def _decoder(self) -> MusicgenForCausalLM | MusicgenMelodyForCausalLM:
        return cast(MusicgenForCausalLM | MusicgenMelodyForCausalLM, self.model.decoder)

    @property
    def sample_rate(self) -> int:
        return int(sub_config(self.model.config.audio_encoder, part="audio encoder").sampling_rate)

    @property
    def frame_rate(self) -> float:
        return float(sub_config(self.model.config.audio_encoder, part="audio encoder").frame_rate)

    @property
    def audio_channels(self) -> int:
        """1, or 2 for the stereo models (whose mono EnCodec codes each channel on its own codebooks)."""
        return int(self.model.decoder.config.audio_channels)

    @property
    def num_codebooks(self) -> int:
        """Codebooks the decoder predicts per frame (stereo models interleave left and right ones)."""
        return int(self.model.decoder.config.num_codebooks)

    @property
    def delay(self) -> int:
        """Extra steps a window costs: each channel's codebook k is predicted k steps late (the delay pattern)."""
        return self.num_codebooks // self.audio_channels - 1

    @property
    def window_frames(self) -> int:
        """Frames one ``generate`` call may hold: 30 s, or less where the model's positions run out."""
        positions = int(self.model.decoder.config.max_position_embeddings) - self.delay - 1
        if self.takes_melody:  # the chroma (and text) are prepended to the decoder's sequence
            positions -= int(self.model.config.chroma_length) + 64
        return min(round(self.window_s * self.frame_rate), positions)

    def frames(self, seconds: float) -> int:
        return int(np.ceil(seconds * self.frame_rate - 1e-9))

    def _window_plan(self, new_frames: int, prompt_frames: int) -> list[tuple[int, int]]:
        """(context frames, new frames) per window: each window starts from up to 10 s of what came before."""
        context = min(self.frames(self.context_s), self.window_frames // 2)
        plan, have, left = [], prompt_frames, new_frames
        while left > 0:
            tail = min(have, context)
            step = min(left, self.window_frames - tail)
            plan.append((tail, step))
            have, left = have + step, left - step
        return plan

    def decoding_steps(self, duration_s: float) -> int:
        """Decoding steps for ``duration_s`` new seconds, over all windows."""
        return sum(new + self.delay for _, new in self._window_plan(self.frames(duration_s), 0))

    @torch.inference_mode()
    def generate_batch(
        self,
        items: Sequence[GenerationItem],
        *,
        sampling: SamplingParams,
        fade_out_s: float = 0.5,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        preview: Preview | None = None,
    ) -> list[GeneratedAudio]:
        """Generate every item together: to the longest duration, each then cut at its own length.

        Items with audio prompts batch only with prompts of the same length (the caller groups them). A
        ``preview`` is delivered once the first window holds its seconds of every item (not when continuing
        audio, which the listener has already, nor for a beat no longer than the preview).

        Raises:
            GenerationCancelled: ``should_stop`` returned True between two steps.
            GenerationError: the model failed (e.g. out of memory), or the prompts differ in length.
        """
        if not items:
            return []
        if any(i.remix is not None for i in items):
            raise GenerationError(f"model {self.name!r} (MusicGen) cannot remix audio; choose an ACE-Step model")
        if any(i.melody is not None for i in items) and not self.takes_melody:
            raise MelodyUnsupported(
                f"model {self.name!r} cannot follow a melody; choose a melody model (e.g. `melody`, `stereo-melody`)"
            )
        codes = self._encode_prompts(items)  # (batch, codebooks, frames) or None
        prompt_frames = codes.shape[-1] if codes is not None else 0
        plan = self._window_plan(self.frames(max(i.duration_s for i in items)), prompt_frames)
        hook = _StepHook(sum(new + self.delay for _, new in plan), on_progress, should_stop)
        preview_frames = self.frames(preview.seconds) if preview is not None else 0
        if preview is not None and prompt_frames == 0 and 0 < preview_frames < plan[0][1]:
            hook.preview_at = preview_frames + self.delay
            hook.preview = lambda ids: preview.deliver(self._preview(items, ids, preview_frames))
        sampler = SeededSampler(
            [i.seed for i in items],
            num_codebooks=self.num_codebooks,
            guidance_scale=sampling.guidance_scale,
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            device=self.device,
        )
        text = self.processor(text=[i.text for i in items], padding=True, return_tensors="pt").to(self.device)
        try:
            for tail_frames, new_frames in plan:
                tail = codes[..., codes.shape[-1] - tail_frames :] if codes is not None and tail_frames else None
                start_s = (
                    (codes.shape[-1] if codes is not None else 0) - tail_frames - prompt_frames
                ) / self.frame_rate
                chroma = self._chroma(items, max(0.0, start_s))
                window = self._window(text, tail, new_frames, sampler, sampling, hook, chroma)[..., tail_frames:]
                codes = window if codes is None else torch.cat([codes, window], dim=-1)
        except torch.OutOfMemoryError as exc:
            raise GenerationError("the GPU ran out of memory; try a shorter beat or fewer takes") from exc
        assert codes is not None  # every item asks for at least one frame
        audio = self._decode(codes)
        out = []
        for row, item in enumerate(items):
            n = round((prompt_frames / self.frame_rate + item.duration_s) * self.sample_rate)
            samples = fade_out(
                fit_length(np.clip(audio[row], -1.0, 1.0), n), sample_rate=self.sample_rate, seconds=fade_out_s
            )
            out.append(GeneratedAudio(samples, self.sample_rate, item.seed))
        return out

    def _window(
        self,
        text: Any,
        tail: torch.Tensor | None,
        new_frames: int,
        sampler: SeededSampler,
        sampling: SamplingParams,
        hook: _StepHook,
        chroma: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One window: ``new_frames`` frames after ``tail`` (codes, (batch, codebooks, frames)).

        Returns the window's codes, ``tail`` included, shape (batch, codebooks, frames).
        """
        batch, k = text["input_ids"].shape[0], self.num_codebooks
        start = torch.full((batch * k, 1), int(self.model.generation_config.decoder_start_token_id), device=self.device)
        initial = start if tail is None else torch.cat([start, tail.reshape(batch * k, -1)], dim=-1)
        hook.ids, hook.window_end = None, hook.done + new_frames + self.delay
        extra: dict[str, Any] = {"input_features": chroma} if chroma is not None else {}
        loop = self._decode_loop() if chroma is None else None
        with contextlib.suppress(_WindowDone):  # the normal end of a window, raised by the hook
            if loop is not None:
                guided = sampling.guidance_scale > 1
                loop.run(text, initial, new_frames + self.delay, sampler, guidance=guided, on_step=hook.step)
            else:
                self.model.generate(
                    **text,
                    **extra,
                    decoder_input_ids=initial,
                    do_sample=False,
                    guidance_scale=sampling.guidance_scale if sampling.guidance_scale > 1 else None,
                    max_new_tokens=new_frames + self.delay,
                    logits_processor=LogitsProcessorList([sampler]),
                    stopping_criteria=StoppingCriteriaList([hook]),
                )
        assert hook.ids is not None and hook.done == hook.window_end  # every step of the window ran
        return self._codes(initial, hook.ids)

    def _codes(self, initial: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """What generate does before decoding: undo the delay pattern, drop the start/pad tokens. ``ids`` may stop
        short of the window's end: the codebooks' last, still incomplete frames are dropped with the pads.

        Returns codes (batch, codebooks, frames).
        """
        start = int(self.model.generation_config.decoder_start_token_id)
        _, mask = self._decoder.build_delay_pattern_mask(
            cast(torch.LongTensor, initial), pad_token_id=start, max_length=ids.shape[-1]
        )
        ids = cast(torch.Tensor, self._decoder.apply_delay_pattern_mask(ids, mask))  # type: ignore[no-untyped-call]
        codes = ids[ids != self.model.generation_config.pad_token_id]
        return codes.reshape(initial.shape[0] // self.num_codebooks, self.num_codebooks, -1)

    def _preview(self, items: Sequence[GenerationItem], ids: torch.Tensor, frames: int) -> list[GeneratedAudio]:
        """The first ``frames`` of every item, decoded, from the first window's ids so far."""
        start = ids[:, :1]  # the decoder start token, the window's only start when it continues nothing
        audio = self._decode(self._codes(start, ids)[..., :frames])
        return [
            GeneratedAudio(np.clip(a, -1.0, 1.0), self.sample_rate, i.seed) for a, i in zip(audio, items, strict=True)
        ]

    def _decode_loop(self) -> DecodeLoop | None:
        """Our loop for this model, built at its first use (and again after a LoRA merge replaced weights)."""
        if self.decoding == "generate" or not isinstance(self.model, MusicgenForConditionalGeneration):
            return None
        mode = "dynamic" if self.decoding == "loop" else self.decoding
        loop = self._loop
        if loop is None or loop.model is not self.model or loop.lm is not self.model.decoder or loop.mode != mode:
            self._loop = DecodeLoop(self.model, mode)
        return self._loop

    def _chroma(self, items: Sequence[GenerationItem], start_s: float) -> torch.Tensor | None:
        """Each item's melody chroma for the window starting ``start_s`` into the new audio (None: no melodies).

        Items without a melody get the model's own "no melody" condition (one-hot C throughout, as transformers).
        """
        if not any(i.melody is not None for i in items):
            return None
        length = int(self.model.config.chroma_length)
        out = np.zeros((len(items), length, 12), dtype=np.float32)
        out[:, :, 0] = 1.0
        for row, item in enumerate(items):
            if item.melody is None:
                continue
            part = item.melody[:, round(start_s * self.sample_rate) :]
            if part.shape[-1] == 0:  # the melody ended: follow its last window's chroma again
                part = item.melody[:, -round(self.window_s * self.sample_rate) :]
            chroma = melody_chroma(part, self.sample_rate)[:length]
            out[row] = np.resize(chroma, (length, 12))  # shorter melodies repeat, as transformers does
        return torch.from_numpy(out).to(self.device, dtype=self.model.dtype)

    def _encode_prompts(self, items: Sequence[GenerationItem]) -> torch.Tensor | None:
        prompts = [i.prompt for i in items]
        if all(p is None for p in prompts):
            return None
        if any(p is None for p in prompts) or len({p.shape for p in prompts if p is not None}) != 1:
            raise GenerationError("takes continuing audio must all continue audio of the same length")
        audio = np.stack([fit_length(self._channels(p), p.shape[-1]) for p in prompts if p is not None])
        values = torch.from_numpy(audio).to(self.device, dtype=self._codec.dtype)
        if self.audio_channels == 1:
            codes = self._encode(values)
        else:  # stereo MusicGen interleaves the left and right codebooks
            left, right = self._encode(values[:, :1]), self._encode(values[:, 1:])
            codes = torch.stack([left, right], dim=2).reshape(left.shape[0], -1, left.shape[-1])
        return codes

    def _encode(self, values: torch.Tensor) -> torch.Tensor:
        """EnCodec codes (batch, codebooks, frames) of audio (batch, channels, samples) at the model's rate."""
        out = cast(EncodecEncoderOutput, self._codec.encode(values))  # a ModelOutput: return_dict is on by default
        return cast(torch.Tensor, out.audio_codes)[0]

    def _channels(self, samples: Samples) -> Samples:
        if samples.ndim != 2 or samples.shape[-1] == 0:
            raise AudioParameterError("audio to continue must be shaped (channels, samples) and not empty")
        if samples.shape[0] == self.audio_channels:
            return samples
        mono = samples.mean(axis=0, keepdims=True)
        return np.repeat(mono, self.audio_channels, axis=0)

    def _decode(self, codes: torch.Tensor) -> npt.NDArray[np.float32]:
        """Codes (batch, codebooks, frames) to audio (batch, channels, samples), float32.

        Rows are decoded in groups of at most :data:`DECODE_FRAMES` frames in all: EnCodec's activations for
        16 takes of 120 s at once would take gigabytes of GPU memory.
        """
        rows = max(1, DECODE_FRAMES // max(1, codes.shape[-1]))
        return np.concatenate([self._decode_rows(codes[i : i + rows]) for i in range(0, codes.shape[0], rows)])

    def _decode_rows(self, codes: torch.Tensor) -> npt.NDArray[np.float32]:
        if self.audio_channels == 1:
            audio = self._decode_codes(codes[None])
        else:
            audio = torch.cat(
                [self._decode_codes(codes[None, :, ::2]), self._decode_codes(codes[None, :, 1::2])], dim=1
            )
        return audio.float().cpu().numpy().astype(np.float32)

    def _decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Audio (batch, channels, samples) of codes (1, batch, codebooks, frames), without EnCodec's scales."""
        scales = [None] * codes.shape[1]
        # transformers annotates audio_scales as one Tensor; it is a list per frame, None for unscaled codes
        out = self._codec.decode(cast(torch.LongTensor, codes), audio_scales=scales)  # type: ignore[arg-type]
        return cast(torch.Tensor, cast(EncodecDecoderOutput, out).audio_values)
