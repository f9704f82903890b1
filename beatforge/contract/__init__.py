"""The job contract between the bot and the worker: the only thing both sides must agree on.

- ``kinds``: the vocabularies (job kinds and their arq functions, relations, artifact kinds, states, error codes);
- ``params``: what each kind of job asks for (``BeatParams``, ``CoverParams``, ``LoopJobParams``, ``MidiParams``,
  ``PackParams``);
- ``wire``: what crosses redis (``JobRequest``, ``JobProgress``);
- ``artifacts``: what the worker records about each file and the bot shows (``AudioMeta``, ``LoopMeta``, ...);
- ``text``: how user text is cleaned and a refused request explained.

Imported as ``beatforge.contract``: the names below are the contract; its modules are how it is filed.
"""

from __future__ import annotations

from beatforge.contract.artifacts import AudioMeta, CompactMeta, CoverMeta, LoopKey, LoopMeta, MidiMeta, PackMeta
from beatforge.contract.base import SCHEMA_VERSION
from beatforge.contract.kinds import JOB_FUNCTIONS, ArtifactKind, ErrorCode, JobKind, JobStatus, Relation
from beatforge.contract.params import (
    MAX_TRAIN_STEPS,
    PARAMS_BY_KIND,
    AudioFormat,
    BeatParams,
    CoverParams,
    JobParams,
    LoopJobParams,
    LoopParams,
    MidiParams,
    PackParams,
    SamplingParams,
    TrainParams,
    parse_params,
)
from beatforge.contract.text import clean_prompt, explain
from beatforge.contract.wire import PREVIEW_KEY, PROGRESS_KEY, PROGRESS_TTL_S, JobProgress, JobRequest

__all__ = [
    "JOB_FUNCTIONS",
    "MAX_TRAIN_STEPS",
    "PARAMS_BY_KIND",
    "PREVIEW_KEY",
    "PROGRESS_KEY",
    "PROGRESS_TTL_S",
    "SCHEMA_VERSION",
    "ArtifactKind",
    "AudioFormat",
    "AudioMeta",
    "BeatParams",
    "CompactMeta",
    "CoverMeta",
    "CoverParams",
    "ErrorCode",
    "JobKind",
    "JobParams",
    "JobProgress",
    "JobRequest",
    "JobStatus",
    "LoopJobParams",
    "LoopKey",
    "LoopMeta",
    "LoopParams",
    "MidiMeta",
    "MidiParams",
    "PackMeta",
    "PackParams",
    "Relation",
    "SamplingParams",
    "TrainParams",
    "clean_prompt",
    "explain",
    "parse_params",
]
