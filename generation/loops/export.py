"""From audio to loop files: analyse, cut, encode, and describe — shared by the worker and the CLI.

Producers need the tempo and key before they drag a file into a project, so both go into every
file name and into the metadata JSON that travels next to the audio.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beatforge.contract import BeatParams, LoopParams
from generation.analysis import beat_model
from generation.analysis.key import KeyInfo, detect_key
from generation.analysis.tempo import TempoInfo, detect_tempo
from generation.audio.formats import encode, encode_to_fit, write_metadata
from generation.audio.signal import Samples
from generation.errors import AudioParameterError
from generation.loops.cut import LoopResult, make_loop
from storage.files import atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BeatAnalysis:
    """Tempo and key of a finished beat; None where the audio has no steady beat or clear key."""

    bpm: float | None
    key: str | None

    def tag(self) -> str:
        """File-name fragment, e.g. ``140bpm-A-minor`` (empty when nothing was detected)."""
        parts = [f"{round(self.bpm)}bpm"] if self.bpm else []
        if self.key:
            parts.append(self.key.replace(" ", "-").replace("#", "sharp"))
        return "-".join(parts)

    def to_metadata(self) -> dict[str, Any]:
        return {"bpm": round(self.bpm, 2) if self.bpm else None, "key": self.key}


def analyse(samples: Samples, *, sample_rate: int, bpm_hint: float | None = None) -> BeatAnalysis:
    """Best-effort tempo and key: a beat without a steady pulse (ambient, noise) is still a beat."""
    tempo: TempoInfo | None = None
    key: KeyInfo | None = None
    try:
        tempo = detect_tempo(samples, sr=sample_rate, bpm_hint=bpm_hint)
    except AudioParameterError as exc:
        log.info("no tempo detected", extra={"reason": str(exc)})
    try:
        key = detect_key(samples, sr=sample_rate)
    except AudioParameterError as exc:
        log.info("no key detected", extra={"reason": str(exc)})
    return BeatAnalysis(bpm=tempo.bpm if tempo else None, key=key.label if key else None)


def warm_up(*, learned_downbeats: bool = True) -> None:
    """Switch madmom's downbeat networks on or off, and run the analysis once on a click track: librosa compiles
    its numba kernels and the networks load on first use (seconds), which must happen at worker start-up, not
    inside a user's job."""
    beat_model.use(learned_downbeats)
    sample_rate = 22_050
    clicks = np.zeros(sample_rate * 4, np.float32)
    clicks[:: sample_rate // 2] = 1.0
    analyse(clicks[None, :], sample_rate=sample_rate)


def safe_stem(text: str, *, limit: int = 40) -> str:
    """A file-name-safe slug of user text (prompts become prefixes)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "beat"


@dataclass(frozen=True, slots=True)
class LoopFiles:
    audio: Path
    metadata: Path | None
    #: A smaller copy for chat uploads, only when ``audio`` is over ``preview_limit``.
    preview: Path | None
    result: LoopResult
    info: dict[str, Any]


def cut_loop(
    samples: Samples,
    *,
    sample_rate: int,
    params: BeatParams,
    loop: LoopParams,
    model: str | None,
    out_dir: Path,
    stem: str,
    keep_metadata: bool = True,
    preview_limit: int | None = None,
) -> LoopFiles:
    """Cut a loop, write ``<stem>-<bars>bars-<bpm>bpm-<key>.<fmt>`` (and its ``.json``) into ``out_dir``.

    Raises:
        AudioParameterError: no loop can be cut (silence, no steady beat, too short, impossible durations).
    """
    result = make_loop(
        samples,
        sr=sample_rate,
        bars=loop.bars,
        min_duration=loop.min_duration_s,
        max_duration=loop.max_duration_s,
        target_bpm=loop.target_bpm or (float(params.bpm) if params.bpm else None),
        stretch=loop.stretch,
    )
    data = encode(np.atleast_2d(result.samples), sample_rate=sample_rate, fmt=loop.format)
    name = f"{stem}-{result.bars}bars-{round(result.bpm)}bpm-{result.key.label.replace(' ', '-').replace('#', 'sharp')}"
    audio_path = atomic_write_bytes(out_dir / f"{name}.{loop.format}", data)
    info = {
        "prompt": params.prompt,
        "model": model,
        "seed": params.seed,
        "style": params.style,
        "mood": params.mood,
        "bpm_target": loop.target_bpm or params.bpm,
        "format": loop.format,
        "file": audio_path.name,
        **result.to_metadata(),
    }
    metadata = write_metadata(audio_path, info) if keep_metadata else None
    preview = None
    if preview_limit is not None and len(data) > preview_limit:  # e.g. a long stereo wav for Discord's 10 MiB
        small, fmt, _ = encode_to_fit(np.atleast_2d(result.samples), sample_rate=sample_rate, limit_bytes=preview_limit)
        preview = atomic_write_bytes(out_dir / f"{name}-preview.{fmt}", small)
    return LoopFiles(audio=audio_path, metadata=metadata, preview=preview, result=result, info=info)
