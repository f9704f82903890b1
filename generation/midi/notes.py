"""What a transcription produces: notes and drum hits in seconds, independent of any MIDI library."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Drum = Literal["kick", "snare", "hat"]
#: General MIDI percussion keys (channel 10): bass drum 1, acoustic snare, closed hi-hat.
GM_DRUM_KEYS: dict[Drum, int] = {"kick": 36, "snare": 38, "hat": 42}


@dataclass(frozen=True, slots=True)
class Note:
    start_s: float
    end_s: float
    pitch: int  # MIDI note number
    velocity: int  # 1..127


@dataclass(frozen=True, slots=True)
class DrumHit:
    time_s: float
    drum: Drum
    velocity: int  # 1..127


@dataclass(frozen=True)
class Transcription:
    """A beat as parts a producer can load into a DAW, plus what a summary should tell them.

    Attributes:
        drums, bass, melody: the parts, each sorted by time.
        bpm: the tempo written into the MIDI files (None when the audio has no steady beat; the
            files then use 120 bpm so seconds still line up).
        key: estimated key, e.g. "A minor", or None when there are too few notes to tell.
        separation: how the mix was split into stems, in words (shown to the user).
        quantized: whether drum hits were snapped to the beat grid (only when the beat is steady).
        duration_s: length of the transcribed audio.
    """

    drums: tuple[DrumHit, ...]
    bass: tuple[Note, ...]
    melody: tuple[Note, ...]
    bpm: float | None
    key: str | None
    separation: str
    quantized: bool
    duration_s: float
