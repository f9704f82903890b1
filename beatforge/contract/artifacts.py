"""What the worker records about each file it makes, and the bot shows: one model per kind of file with metadata.

The worker writes ``Meta(...).model_dump(mode="json")`` into the artifact's row; the bot reads it back with
``Meta.model_validate``. Unlike requests, these are read long after they were written: a row outlives the
worker version that wrote it, so keys a later version dropped (a take's ``model``, now the job's
``resolved_model``) are ignored rather than failing a whole /history page, and what older workers did not
record is optional. The worker builds them with keyword arguments, so a misspelt field fails type-checking.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Meta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class AudioMeta(_Meta):
    """One take of a beat (``ArtifactKind.AUDIO``)."""

    take: int = Field(default=1, ge=1)
    #: The take's own seed (take 1 uses the job's; the others are derived from it).
    seed: int | None = None
    #: The licence of the model's weights, as the registry states it (None: not recorded).
    licence: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    #: Seconds of earlier audio this take continues (an extend), or None.
    continued_s: float | None = None
    #: Tempo and key detected in the take (None: no steady beat, no clear key).
    bpm: float | None = None
    key: str | None = None
    #: Why ``/loop`` has no loop for this beat (the beat itself is delivered).
    loop_error: str | None = None
    #: Why a take over the upload limit has no compact copy.
    compact_error: str | None = None
    #: ✨ The prompt MusicGen read when the beat asked for an enhanced one, who wrote it, and why the
    #: templates did (no LLM, or it failed). None for a beat made from the user's own words.
    prompt_used: str | None = None
    prompt_source: Literal["llm", "template"] | None = None
    prompt_note: str | None = None
    #: How well the take matches its words: the cosine of CLAP's text and audio embeddings, in [-1, 1] (higher
    #: is closer). None: no CLAP model was configured (or it failed), or recorded before scores existed.
    text_match: float | None = Field(default=None, ge=-1, le=1)
    #: Best of N: how many takes were made for this beat, of which the best were kept (None: all were kept).
    best_of: int | None = None


class CompactMeta(_Meta):
    """A smaller copy of a take over Discord's upload limit (``ArtifactKind.AUDIO_COMPACT``)."""

    take: int = Field(default=1, ge=1)
    format: str
    bitrate_kbps: int | None = None
    #: The file name of the take it is a copy of.
    of: str
    seed: int | None = None


class CoverMeta(_Meta):
    """A cover image (``ArtifactKind.COVER``): how it was drawn, and why a fallback was used."""

    source: Literal["diffusion", "procedural"]
    #: The image model, None for a procedural cover.
    model: str | None = None
    #: Why the fallback was used, shown to the user.
    note: str | None = None
    #: What the diffusion model was asked, so a cover can be reproduced.
    prompt: str | None = None
    prompt_source: Literal["template", "llm"] | None = None


class LoopKey(_Meta):
    label: str
    tonic: str | None = None
    mode: str | None = None
    confidence: float | None = None


#: Below this ``LoopMeta.downbeat_confidence`` the loop may not start on beat 1 (it still starts on a bar line of
#: the best bar phase), and the user is told to check. The confidence is 1 - exp(-margin / 0.5), margin = the
#: chosen bar phase's score minus the best other's (generation/analysis/tempo.py). On the development sets
#: (bench/loops.py: GM renders, kick-on-1-and-3 grooves, annotated game music) all 3 wrong phases scored below
#: 0.3 and 21 of 27 right ones above 0.55; a drum loop with nothing but equal kicks on 1 and 3 (no way to tell)
#: scores below it.
DOWNBEAT_CONFIDENT = 0.55


class LoopMeta(_Meta):
    """A loop (``ArtifactKind.LOOP``): what its JSON sidecar says, and whether it reached the S3 bucket.

    The words, seed and model are the beat's it was cut from, written for producers who open the sidecar.
    """

    bars: int
    bpm: float
    seam_score: float
    key: LoopKey
    stretched: bool = False
    bpm_detected: float | None = None
    bpm_target: float | None = None
    beats_per_bar: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    n_samples: int | None = None
    duration_s: float | None = None
    start_sample: int | None = None
    end_sample: int | None = None
    format: str | None = None
    file: str | None = None
    prompt: str | None = None
    model: str | None = None
    seed: int | None = None
    style: str | None = None
    mood: str | None = None
    #: How sure the loop starts on beat 1 of a bar, 0..1 (None: recorded before it was measured).
    downbeat_confidence: float | None = Field(default=None, ge=0, le=1)
    #: Why the tempo is not the one asked for (the audio's pulse disagrees), or None.
    tempo_note: str | None = None
    #: What placed the bar lines: madmom's downbeat networks (named with their licence) or the signal cues.
    downbeats_from: str | None = None
    #: Where the loop and its sidecar were uploaded, or why they were not (S3 configured only).
    s3_keys: list[str] | None = None
    s3_error: str | None = None

    @property
    def downbeat_uncertain(self) -> bool:
        """Whether the first beat may not be the one (unknown for loops recorded before it was measured)."""
        return self.downbeat_confidence is not None and self.downbeat_confidence < DOWNBEAT_CONFIDENT


class PackMeta(_Meta):
    """A pack's zip (``ArtifactKind.PACK``): how many loops it holds of those asked for, and who wrote the prompts."""

    loops: int
    asked: int
    bpm: int
    key: str | None = None
    prompt_source: Literal["llm", "templates"]
    #: Why the templates wrote the prompts (no LLM, or it failed).
    prompt_note: str | None = None
    #: The licence of the model's weights, as the registry states it.
    licence: str | None = None
    #: One line per loop that could not be made ("3: no steady beat ..."), also in the zip's README.
    failed: list[str] = Field(default_factory=list)


class MidiMeta(_Meta):
    """A MIDI pack (``ArtifactKind.MIDI``): what was transcribed, and how many notes each part got."""

    drum_hits: int
    bass_notes: int
    melody_notes: int
    #: How the stems were separated (a model, or the offline fallback).
    separation: str
    #: What was transcribed: "beat #N" or the upload's name.
    source: str | None = None
    bpm: float | None = None
    key: str | None = None
    quantized: bool | None = None
    duration_s: float | None = None
