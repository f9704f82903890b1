"""What a job asks for: one parameter model per job kind, each with only the fields that kind uses.

A beat is generated from words; a cover, a loop and MIDI are made from an existing beat (the job's parent)
or, for MIDI, from an uploaded file. The three follow-up kinds still carry the words, presets and title of
what they were made from: they are shown with the result, and a cover is drawn from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, ClassVar, Final, Literal

from pydantic import AfterValidator, Field, model_validator

from beatforge.bounds import (
    LOOP_MAX_S,
    LOOP_MIN_S,
    LOOP_SOURCE_MAX_S,
    MAX_BEST_OF,
    MAX_BPM,
    MAX_DURATION_S,
    MAX_LOOP_BARS,
    MAX_PACK_LOOPS,
    MAX_SEED,
    MAX_TAKES,
    MIN_BEST_OF,
    MIN_BPM,
    MIN_DURATION_S,
    WINDOW_S,
)
from beatforge.contract.base import Frozen
from beatforge.contract.kinds import JobKind
from beatforge.contract.text import MoodKey, Prompt, StyleKey, Title
from beatforge.presets import describe_music
from beatforge.prompt_words import normalize_key

AudioFormat = Literal["wav", "flac", "ogg", "mp3"]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Take = Annotated[int, Field(ge=1, le=MAX_TAKES)]
TimeSignature = Literal[2, 3, 4, 6]
#: A key ("A minor"), spelled one way whatever the user typed ("a min", "Am": ``normalize_key``).
Key = Annotated[str, Field(max_length=12), AfterValidator(normalize_key)]
UploadPath = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^uploads/[\w.-]+$")]
ArtifactPath = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^(uploads|\d+)/[\w.-]+$")]


class LoopParams(Frozen):
    """How to cut a loop: a whole number of bars, either given or chosen to fit a duration range."""

    bars: int | None = Field(default=None, ge=1, le=MAX_LOOP_BARS)
    min_duration_s: float | None = Field(default=None, ge=LOOP_MIN_S, le=LOOP_MAX_S)
    max_duration_s: float | None = Field(default=None, ge=LOOP_MIN_S, le=LOOP_MAX_S)
    #: The tempo asked for: steers generation, and with ``stretch`` the loop is time-stretched to it exactly.
    target_bpm: float | None = Field(default=None, ge=MIN_BPM, le=MAX_BPM)
    stretch: bool = False
    format: AudioFormat = "wav"

    def generation_seconds(self, bpm: int | None) -> float:
        """How much audio to generate so this loop fits (one MusicGen window unless the bars need more).

        The loop needs room around it: a bar of lead-in for the downbeat search, and the seam's tail.
        """
        margin = 4.0
        if self.bars and bpm:
            wanted = self.bars * 4 * 60 / bpm + margin
        elif self.max_duration_s:
            wanted = self.max_duration_s + margin
        else:
            wanted = WINDOW_S
        return min(LOOP_SOURCE_MAX_S, max(MIN_DURATION_S, wanted))

    @model_validator(mode="after")
    def _consistent(self) -> LoopParams:
        lo, hi = self.min_duration_s, self.max_duration_s
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_duration ({lo:g} s) is longer than max_duration ({hi:g} s)")
        if self.stretch and self.target_bpm is None:
            raise ValueError("stretching needs a target bpm")
        return self


class SamplingParams(Frozen):
    """How MusicGen picks each token. Defaults are audiocraft's: top-k 250, no top-p, temperature 1, guidance 3."""

    top_k: int = Field(default=250, ge=0, le=2048)  # 0: no top-k
    top_p: float = Field(default=0.0, ge=0.0, le=1.0)  # 0: no top-p
    temperature: float = Field(default=1.0, ge=0.05, le=4.0)
    #: Classifier-free guidance: how strongly the text steers (1: not at all; doubles the batch when above 1).
    guidance_scale: float = Field(default=3.0, ge=1.0, le=20.0)


class _Described(Frozen):
    """What a result is about, shown with it (and drawn on its cover): the words, the presets, the title."""

    prompt: Prompt
    style: StyleKey = None
    mood: MoodKey = None
    title: Title | None = None


class BeatParams(_Described):
    """A beat (/beat, /loop, re-roll, extend, edit), validated before anything slow happens.

    ``seed`` is always set (the bot draws one when the user gives none), so every job can be
    reproduced from its row. ``model`` None means the worker's configured default.
    """

    kind: ClassVar[JobKind] = JobKind.BEAT

    duration_s: float = Field(ge=MIN_DURATION_S, le=MAX_DURATION_S)
    seed: Seed
    model: str | None = Field(default=None, min_length=1, max_length=300)
    #: Target tempo, written into the model's prompt (and the loop's target).
    bpm: int | None = Field(default=None, ge=MIN_BPM, le=MAX_BPM)
    #: How many takes to generate together, each with its own seed derived from ``seed`` (take 1 uses ``seed``).
    takes: int = Field(default=1, ge=1, le=MAX_TAKES)
    #: Best of N: make this many takes in the one batched call (seeds as for ``takes``), score each against the
    #: words with CLAP, and keep the ``takes`` that match best, best first. None: every take made is kept.
    best_of: int | None = Field(default=None, ge=MIN_BEST_OF, le=MAX_BEST_OF)
    sampling: SamplingParams = SamplingParams()
    #: Audio to continue (a finished take, or an upload), relative to the artifact store: the result is that
    #: audio followed by ``duration_s`` new seconds.
    continue_from: ArtifactPath | None = None
    #: An uploaded melody to follow (melody models only).
    melody: UploadPath | None = None
    #: Set by ``/loop``: once generated, a seamless loop is cut from the first take and delivered with the beat.
    loop: LoopParams | None = None
    #: ✨ Have the LLM (or, without one, the presets) turn the words into a detailed prompt before generating;
    #: the prompt used is recorded with each take (``AudioMeta.prompt_used``).
    enhance: bool = False
    #: Conditioning on ACE-Step, words for MusicGen.
    key: Key | None = None
    #: Beats per bar (2, 3, 4 or 6): conditioning on ACE-Step, words for MusicGen.
    time_signature: TimeSignature | None = None
    #: /remix: audio (a finished take) re-imagined in this beat's words, keeping ``remix_strength`` of it away
    #: from the original (0: unchanged, 1: only the words count). Engines that can remix only.
    remix_from: ArtifactPath | None = None
    remix_strength: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_source_audio(self) -> BeatParams:
        if self.remix_from is not None and (self.continue_from is not None or self.melody is not None):
            raise ValueError("a remix starts from one beat: it cannot also continue audio or follow a melody")
        if (self.remix_from is None) != (self.remix_strength is None):
            raise ValueError("a remix needs both the audio to remix and a strength")
        return self

    @model_validator(mode="after")
    def _best_of_covers_the_takes(self) -> BeatParams:
        if self.best_of is not None and self.best_of < self.takes:
            raise ValueError(f"best_of ({self.best_of}) must be at least takes ({self.takes}): the best are kept")
        return self

    @property
    def generated_takes(self) -> int:
        """How many takes are made: ``best_of`` when set (the best ``takes`` of them are kept), else ``takes``."""
        return max(self.best_of or 0, self.takes)

    @property
    def music_text(self) -> str:
        """The words the model reads: the user's, the presets', and the tempo, key and metre asked for."""
        return describe_music(
            prompt=self.prompt,
            style=self.style,
            mood=self.mood,
            bpm=self.bpm,
            key=self.key,
            time_signature=self.time_signature,
        )


class CoverParams(_Described):
    """A new cover for the job's parent beat (/cover, the New cover button): its words, drawn with a new seed."""

    kind: ClassVar[JobKind] = JobKind.COVER

    seed: Seed


class LoopJobParams(_Described):
    """A loop cut from one take of the job's parent beat (the Loop button); the words are the beat's."""

    kind: ClassVar[JobKind] = JobKind.LOOP

    #: The parent beat's seed, shown with the loop (the loop itself is cut, not generated).
    seed: Seed
    take: Take = 1
    loop: LoopParams = LoopParams()


class MidiParams(_Described):
    """MIDI files (and stems) from one take of the job's parent beat, or from a file the user uploaded.

    For an upload, ``prompt`` is the file's name: that is what the result is about.
    """

    kind: ClassVar[JobKind] = JobKind.MIDI

    #: The parent beat's seed, shown with the result (None for an upload).
    seed: Seed | None = None
    take: Take = 1
    #: Also deliver the separated stems (drums, bass, other) as audio.
    stems: bool = False
    #: An uploaded file, as a path relative to the artifact store (the bot saved it there).
    upload: UploadPath | None = None


class PackParams(_Described):
    """A pack (/pack): ``count`` loops for a use case (the ``prompt``), each generated from its own prompt.

    The prompts are written by the LLM, or by templates without one, all at ``bpm`` (and in ``key``). Loop
    ``i`` (from 0) is generated with seed ``seed + i``, so any loop of a pack can be made again on its own.
    """

    kind: ClassVar[JobKind] = JobKind.PACK

    count: int = Field(ge=1, le=MAX_PACK_LOOPS)
    bpm: int = Field(ge=MIN_BPM, le=MAX_BPM)
    #: A key every prompt names.
    key: Key | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED - MAX_PACK_LOOPS)]
    model: str | None = Field(default=None, min_length=1, max_length=300)
    #: Four bars by default: a loop a producer can drop into a song, generated with a short margin around it.
    loop: LoopParams = LoopParams(bars=4)

    @model_validator(mode="after")
    def _loops_at_the_pack_tempo(self) -> PackParams:
        if self.loop.target_bpm not in (None, self.bpm):
            raise ValueError(f"the loops' target bpm ({self.loop.target_bpm:g}) is not the pack's ({self.bpm})")
        return self

    def beat(self, index: int, prompt: str) -> BeatParams:
        """Loop ``index``'s beat: its written prompt at the pack's tempo, long enough for the loop to fit."""
        return BeatParams(
            prompt=prompt,
            bpm=self.bpm,
            seed=self.seed + index,
            model=self.model,
            duration_s=self.loop.generation_seconds(self.bpm),
            loop=self.loop.model_copy(update={"target_bpm": self.bpm}),
        )


#: Optimizer steps one /admin train run may ask for.
MAX_TRAIN_STEPS: Final = 5000
#: A registry name (``generation.music.registry.NAME_PATTERN``, repeated here: the bot never imports generation).
ModelName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class TrainParams(_Described):
    """A training run (/admin train): a LoRA named ``name`` on ``base``, from the clips and captions of an uploaded
    zip the bot checked and stored (``upload``). ``prompt`` says what it is ("model <name>"), for the shared views.
    """

    kind: ClassVar[JobKind] = JobKind.TRAIN

    name: ModelName
    base: str = Field(min_length=1, max_length=300)
    steps: int = Field(ge=1, le=MAX_TRAIN_STEPS)
    #: Seeds the adapter's first weights, the batches and the caption dropout.
    seed: Seed = 0
    #: The zip, as a path relative to the artifact store (the bot saved it there, like /midi's upload).
    upload: UploadPath


JobParams = BeatParams | CoverParams | LoopJobParams | MidiParams | PackParams | TrainParams

#: Which model a stored job's parameters are, by the job's kind.
PARAMS_BY_KIND: Final[Mapping[JobKind, type[JobParams]]] = MappingProxyType(
    {model.kind: model for model in (BeatParams, CoverParams, LoopJobParams, MidiParams, PackParams, TrainParams)}
)


def parse_params(kind: JobKind, data: object) -> JobParams:
    """A job's parameters from their JSON form, validated as the model of its kind.

    Raises:
        pydantic.ValidationError: they are not parameters of that kind.
    """
    return PARAMS_BY_KIND[kind].model_validate(data)
