"""One interface for every music engine: what the worker, the batcher, the model cache and the CLI call.

An engine is loaded once (:class:`generation.music.model_cache.ModelCache`) and then generates batches of
:class:`GenerationItem` — a take's words, seed and length, plus the conditioning its engine understands — with
progress and cancellation at every step. What an engine can do is declared by its ``capabilities``
(``beatforge.engines``, the table the bot reads too), so an option is offered, refused or honoured in one place.

Implementations: :class:`generation.music.musicgen.MusicGenEngine` (tokens, window by window) and
:class:`generation.music.acestep.AceStepEngine` (flow-matching diffusion over a whole song).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from beatforge.contract import BeatParams, SamplingParams
from beatforge.engines import Capabilities
from generation.audio.signal import Samples
from generation.music.sampling import take_seed

ProgressCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Preview:
    """Ask for the first ``seconds`` of every item early, while the rest is made (engines that make audio in
    order: MusicGen). ``deliver`` runs in the generating thread, once, with one :class:`GeneratedAudio` per item."""

    seconds: float
    deliver: Callable[[list[GeneratedAudio]], None]


@dataclass(frozen=True, slots=True)
class GeneratedAudio:
    samples: Samples  # float32, shape (channels, n), in [-1, 1]
    sample_rate: int
    seed: int

    @property
    def duration_s(self) -> float:
        return int(self.samples.shape[1]) / self.sample_rate


@dataclass(frozen=True, slots=True)
class Controls:
    """Musical controls an engine with ``native_controls`` takes as conditioning (MusicGen reads them as words)."""

    bpm: int | None = None
    key: str | None = None
    time_signature: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationItem:
    """One take to generate: its text, seed and new seconds, and what it starts from (all at the model's rate)."""

    text: str
    seed: int
    duration_s: float
    #: Audio to continue: the result is this audio followed by ``duration_s`` new seconds.
    prompt: Samples | None = None
    #: A melody to follow (melody models only); its chroma steers each window in turn.
    melody: Samples | None = None
    controls: Controls = Controls()
    #: Audio to re-imagine in ``text`` (engines that can remix), and how far from it to go (0 to 1).
    remix: Samples | None = None
    remix_strength: float = 0.5

    @property
    def has_audio(self) -> bool:
        """Items with audio batch only with items of the same audio length (the batcher keeps them apart)."""
        return self.prompt is not None or self.melody is not None or self.remix is not None


def items_for(
    params: BeatParams,
    *,
    prompt: Samples | None = None,
    melody: Samples | None = None,
    remix: Samples | None = None,
    text: str | None = None,
) -> list[GenerationItem]:
    """One item per take made (``best_of`` of them for a best-of-N beat), each with its derived seed (take 1 keeps
    ``params.seed``); ``text`` replaces the words the model reads (an ✨ enhanced prompt)."""
    words = params.music_text if text is None else text
    controls = Controls(params.bpm, params.key, params.time_signature)
    strength = params.remix_strength if params.remix_strength is not None else 0.5
    return [
        GenerationItem(words, take_seed(params.seed, i), params.duration_s, prompt, melody, controls, remix, strength)
        for i in range(params.generated_takes)
    ]


class MusicEngine(Protocol):
    """What every engine offers; the model cache loads one by its registry entry's ``engine``."""

    #: The registry name it was asked for (what jobs record as the model they ran).
    name: str
    device: str

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def takes_melody(self) -> bool: ...

    @property
    def sample_rate(self) -> int: ...

    @property
    def audio_channels(self) -> int: ...

    def modules(self) -> list[torch.nn.Module]:
        """Every module holding weights, for the model cache's memory accounting."""
        ...

    def apply_lora(self, adapter: str) -> None:
        """Merge a LoRA adapter (a directory) into this engine's weights, in place (the engine is a private copy).

        Raises:
            ModelUnavailable: the adapter cannot be read or does not fit this model.
        """
        ...

    def decoding_steps(self, duration_s: float) -> int:
        """The progress total of a call for ``duration_s`` seconds."""
        ...

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
        """Every item together where the engine can; each item's audio is reproducible from its seed.

        Raises:
            GenerationCancelled: ``should_stop`` returned True between two steps.
            GenerationError: the model failed, or an item asks for what the engine cannot do.
        """
        ...


def generate(
    engine: MusicEngine,
    params: BeatParams,
    *,
    fade_out_s: float = 0.5,
    prompt: Samples | None = None,
    melody: Samples | None = None,
    remix: Samples | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> list[GeneratedAudio]:
    """All of ``params``' takes in one batched call; the same params on the same device give the same audio."""
    return engine.generate_batch(
        items_for(params, prompt=prompt, melody=melody, remix=remix),
        sampling=params.sampling,
        fade_out_s=fade_out_s,
        on_progress=on_progress,
        should_stop=should_stop,
    )
