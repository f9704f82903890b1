"""The job contract between the bot and the worker: the only thing both sides must agree on.

Jobs cross redis as JSON (never pickle), so no Python class, least of all a torch exception,
travels between processes. Every model carries ``schema_version``: a bot and a worker of
different versions fail loudly on validation instead of misreading each other's fields.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from beatforge.bounds import (
    LOOP_MAX_S,
    LOOP_MIN_S,
    MAX_BPM,
    MAX_DURATION_S,
    MAX_LOOP_BARS,
    MAX_SEED,
    MAX_TAKES,
    MIN_BPM,
    MIN_DURATION_S,
    PROMPT_MAX_CHARS,
    TITLE_MAX_CHARS,
    WINDOW_S,
)
from beatforge.presets import MOODS, STYLES, describe_music

SCHEMA_VERSION: Literal[1] = 1

#: arq function names; the bot enqueues by name, never by import.
JOB_GENERATE = "generate_beat"  # audio, then its cover
JOB_COVER = "draw_cover"  # a new cover for an existing beat
JOB_LOOP = "cut_loop"  # a seamless loop cut from an existing beat
JOB_MIDI = "transcribe_midi"  # MIDI files (and stems) from an existing beat or an uploaded file
#: redis key where the worker publishes a job's progress (JSON of :class:`JobProgress`).
PROGRESS_KEY = "beatforge:progress:{job_id}"
#: How long a progress key outlives its last update, so stale keys clean themselves up.
PROGRESS_TTL_S = 3600


_MENTION = re.compile(r"@(everyone|here)|<@[!&]?\d+>|<#\d+>", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Make user text safe to feed the model and to echo back into Discord.

    Control and format characters are dropped (they confuse tokenizers and can hide text),
    mentions are defused so echoing the prompt can never ping anyone even if a message
    forgot its ``allowed_mentions``, and whitespace runs collapse to one space.
    """
    kept = "".join(" " if ch in "\t\n\r" else ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch)[0] != "C")
    # Defused with visible look-alikes, not invisible characters, so cleaning twice changes nothing.
    kept = _MENTION.sub(
        lambda m: m.group(0).replace("<", "‹") if m.group(0).startswith("<") else "＠" + m.group(1), kept
    )
    kept = _SPACES.sub(" ", kept).strip()
    if not kept:
        raise ValueError("is empty: describe the beat, e.g. 'dark trap, 808s, 140 bpm'")
    return kept


Prompt = Annotated[str, AfterValidator(clean_prompt), Field(max_length=PROMPT_MAX_CHARS)]


def _known(table: dict[str, object], what: str) -> AfterValidator:
    def check(key: str | None) -> str | None:
        if key is not None and key not in table:
            raise ValueError(f"{key!r} is not a known {what}; choose one of: {', '.join(table)}")
        return key

    return AfterValidator(check)


StyleKey = Annotated[str | None, _known(STYLES, "style")]  # type: ignore[arg-type]
MoodKey = Annotated[str | None, _known(MOODS, "mood")]  # type: ignore[arg-type]


class ErrorCode(StrEnum):
    """Why a job failed, as a stable code the bot maps to a user-facing sentence."""

    INVALID_REQUEST = "invalid_request"
    MODEL_UNAVAILABLE = "model_unavailable"
    GENERATION_FAILED = "generation_failed"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


AudioFormat = Literal["wav", "flac", "ogg", "mp3"]


class LoopParams(_Frozen):
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
        return min(MAX_DURATION_S, max(MIN_DURATION_S, wanted))

    @model_validator(mode="after")
    def _consistent(self) -> LoopParams:
        lo, hi = self.min_duration_s, self.max_duration_s
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_duration ({lo:g} s) is longer than max_duration ({hi:g} s)")
        if self.stretch and self.target_bpm is None:
            raise ValueError("stretching needs a target bpm")
        return self


UploadPath = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^uploads/[\w.-]+$")]
ArtifactPath = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^(uploads|\d+)/[\w.-]+$")]


class MidiParams(_Frozen):
    """What a MIDI job transcribes: the parent beat's audio, or a file the user uploaded."""

    #: Also deliver the separated stems (drums, bass, other) as audio.
    stems: bool = False
    #: An uploaded file, as a path relative to the artifact store (the bot saved it there).
    upload: UploadPath | None = None


class SamplingParams(_Frozen):
    """How MusicGen picks each token. Defaults are audiocraft's: top-k 250, no top-p, temperature 1, guidance 3."""

    top_k: int = Field(default=250, ge=0, le=2048)  # 0: no top-k
    top_p: float = Field(default=0.0, ge=0.0, le=1.0)  # 0: no top-p
    temperature: float = Field(default=1.0, ge=0.05, le=4.0)
    #: Classifier-free guidance: how strongly the text steers (1: not at all; doubles the batch when above 1).
    guidance_scale: float = Field(default=3.0, ge=1.0, le=20.0)


class BeatParams(_Frozen):
    """What the user asked for, validated before anything slow happens.

    ``seed`` is always set (the bot draws one when the user gives none), so every job can be
    reproduced from its row. ``model`` None means the worker's configured default.
    """

    prompt: Prompt
    duration_s: float = Field(ge=MIN_DURATION_S, le=MAX_DURATION_S)
    seed: int = Field(ge=0, le=MAX_SEED)
    model: str | None = Field(default=None, min_length=1, max_length=300)
    style: StyleKey = None
    mood: MoodKey = None
    #: Set on the cover as typography.
    title: Annotated[str, AfterValidator(clean_prompt), Field(max_length=TITLE_MAX_CHARS)] | None = None
    #: Target tempo, written into the model's prompt (and the loop's target).
    bpm: int | None = Field(default=None, ge=MIN_BPM, le=MAX_BPM)
    #: Set when the job should end in a seamless loop (``/loop``, the Loop button).
    loop: LoopParams | None = None
    #: Set on MIDI jobs (``/midi``, the MIDI button). For an upload, ``prompt`` names the file.
    midi: MidiParams | None = None
    #: How many takes to generate together, each with its own seed derived from ``seed`` (take 1 uses ``seed``).
    takes: int = Field(default=1, ge=1, le=MAX_TAKES)
    sampling: SamplingParams = SamplingParams()
    #: Audio to continue (a finished take, or an upload), relative to the artifact store: the result is that
    #: audio followed by ``duration_s`` new seconds.
    continue_from: ArtifactPath | None = None
    #: An uploaded melody to follow (melody models only).
    melody: UploadPath | None = None
    #: Which take of the parent beat a loop or MIDI job works on (the per-take buttons).
    take: int = Field(default=1, ge=1, le=MAX_TAKES)

    @property
    def music_text(self) -> str:
        """What MusicGen reads: the user's words plus the preset words."""
        return describe_music(prompt=self.prompt, style=self.style, mood=self.mood, bpm=self.bpm)


class GenerateRequest(_Frozen):
    """The payload of every job (:data:`JOB_GENERATE`, :data:`JOB_COVER`, ...): a stored job and its parameters."""

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: int = Field(ge=1)
    params: BeatParams


class JobProgress(_Frozen):
    """A progress snapshot the worker writes to redis and the bot turns into message edits."""

    schema_version: Literal[1] = SCHEMA_VERSION
    stage: Literal["loading", "generating", "looping", "transcribing", "drawing", "saving"]
    done: int = Field(ge=0)
    total: int = Field(ge=1)
    eta_s: float | None = Field(default=None, ge=0)

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.done / self.total))


class JobOutcome(_Frozen):
    """What a job returns to arq. Failures are data (a code and a sentence), never exceptions."""

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: int
    status: Literal[JobStatus.DONE, JobStatus.FAILED]
    error_code: ErrorCode | None = None
    message: str | None = None
    audio_path: str | None = None


_FIELD_NAMES = {
    "duration_s": "duration",
    "params": "parameters",
    "cover_size": "size",
    "min_duration_s": "min_duration",
    "max_duration_s": "max_duration",
    "target_bpm": "bpm",
}


def explain(exc: ValidationError) -> str:
    """One short sentence per problem, in the words of the command's options, for users to read."""
    parts = []
    for error in exc.errors():
        field = ".".join(_FIELD_NAMES.get(str(loc), str(loc)) for loc in error["loc"])
        ctx = error.get("ctx", {})
        match error["type"]:
            case "too_long" | "string_too_long":
                message = f"is {len(error['input'])} characters long; the limit is {ctx['max_length']}"
            case "less_than_equal":
                message = f"must be at most {ctx['le']}"
            case "greater_than_equal":
                message = f"must be at least {ctx['ge']}"
            case _:
                message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{field} {message}" if field else message)
    return "; ".join(parts)
