"""The closed vocabularies both sides share: kinds of job and of file, how a job came from its parent, job states.

They are ``StrEnum``s, so they travel as plain strings (JSON, database columns, custom ids) and compare equal
to them, while the code names each value once.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class JobKind(StrEnum):
    """What a job makes. Each kind has its own parameters (``beatforge.contract.params``) and arq function."""

    BEAT = "beat"  # audio (one file per take), then its cover
    COVER = "cover"  # a new cover for an existing beat
    LOOP = "loop"  # a seamless loop cut from a take of an existing beat
    MIDI = "midi"  # MIDI files (and stems) from a take of a beat or from an uploaded file
    PACK = "pack"  # a zip of loops for a use case, each from its own written prompt
    TRAIN = "train"  # a model fine-tuned on a server's uploaded clips (/admin train), on the training queue

    @property
    def function(self) -> str:
        """The arq function that runs this kind: the bot enqueues by this name, never by import."""
        return JOB_FUNCTIONS[self]


#: The one table of arq function names: the bot enqueues by it, the worker registers its functions by it.
JOB_FUNCTIONS: Final[Mapping[JobKind, str]] = MappingProxyType(
    {
        JobKind.BEAT: "generate_beat",
        JobKind.COVER: "draw_cover",
        JobKind.LOOP: "cut_loop",
        JobKind.MIDI: "transcribe_midi",
        JobKind.PACK: "make_pack",
        JobKind.TRAIN: "train_model",
    }
)


class Relation(StrEnum):
    """How a job was made from its parent, for /history's lineage ("re-roll of #5")."""

    REROLL = "reroll"
    EXTEND = "extend"
    EDIT = "edit"
    LOOP = "loop"
    MIDI = "midi"
    COVER = "cover"
    REMIX = "remix"


class ArtifactKind(StrEnum):
    """What a stored file is. The ones with metadata have a model in ``beatforge.contract.artifacts``."""

    AUDIO = "audio"  # one take of a beat, WAV
    AUDIO_COMPACT = "audio_compact"  # a smaller copy of a take over Discord's upload limit
    COVER = "cover"
    LOOP = "loop"
    METADATA = "metadata"  # the loop's JSON sidecar
    PREVIEW = "preview"  # a smaller copy of a loop over the upload limit
    MIDI = "midi"  # the zip of MIDI files
    STEMS = "stems"  # the zip of separated stems
    STEMS_PREVIEW = "stems_preview"  # a smaller copy of the stems over the upload limit
    PACK = "pack"  # the zip of a pack's loops, their metadata and prompts
    PACK_PREVIEW = "pack_preview"  # the same pack with MP3 loops, when its zip is over the upload limit


class ErrorCode(StrEnum):
    """Why a job failed, as a stable code the bot maps to a user-facing sentence."""

    INVALID_REQUEST = "invalid_request"
    MODEL_UNAVAILABLE = "model_unavailable"
    GENERATION_FAILED = "generation_failed"
    CANCELLED = "cancelled"
    #: The worker died (killed, out of memory) while running it, as many times as a job may be tried.
    WORKER_LOST = "worker_lost"
    INTERNAL = "internal"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
