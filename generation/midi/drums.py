"""Drum hits from a percussive stem: onsets, each sorted into kick / snare / hi-hat by where its energy rises.

Pure numpy/librosa (audio in, hits out). Onsets come from the whole spectrum and, separately, from the kick's
band (a clean sine kick barely moves the rest). Each onset is described by how much the level of four bands
grows over the next ~50 ms: below 120 Hz (kick), 120-400 Hz (a snare's body), 1-6 kHz (a snare's noise) and
above 6 kHz (hi-hat). A kick is decided on its own band, so a kick under a hi-hat is two hits. A snare's
noise reaches as high as a hat's, so a hi-hat sounding together with a snare cannot be told apart from the
snare and is not reported.
"""

from __future__ import annotations

import itertools
from typing import cast

import numpy as np
import numpy.typing as npt

from generation.midi.notes import Drum, DrumHit

N_FFT = 1024
HOP = 256
BANDS = {"kick": (30.0, 120.0), "body": (120.0, 400.0), "snare": (1000.0, 6000.0), "hat": (6000.0, 16000.0)}
#: Frames after an onset whose peak level is compared with the level just before it (5 x 11.6 ms).
RISE_FRAMES = 5
#: A kick: its band grows by at least this share of the track's strong kicks (90th percentile), and by at
#: least this share of the 120-400 Hz band's growth (a snare's body spills below 120 Hz, but less than that);
#: under a snare, a kick must stand out more.
KICK_PRESENT = 0.35
KICK_OVER_BODY = 0.3
KICK_OVER_SNARE_BODY = 0.6
#: A snare: the 1-6 kHz band grows by half the track's strong snares, and well above its quiet onsets.
SNARE_PRESENT = 0.5
SNARE_OVER_QUIET = 2.5
#: A hi-hat (where there is no snare): the top band grows by this share of a typical hat-only onset.
HAT_PRESENT = 0.3
#: Quietest onset kept, relative to the loudest (-30 dB); for onsets found in the kick band alone, relative to
#: the kick band's loudest.
MIN_ONSET = 0.03
KICK_ONSET = 0.2
#: Onsets found by both detectors closer than this (seconds) are one event.
MERGE_S = 0.03


def _flux(spec: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Summed positive change from frame to frame (spectral flux)."""
    return cast(npt.NDArray[np.float32], np.maximum(0.0, np.diff(spec, axis=1, prepend=spec[:, :1])).sum(axis=0))


def _onsets(envelope: npt.NDArray[np.float32], sr: int, *, floor: float) -> npt.NDArray[np.intp]:
    import librosa

    if float(envelope.max()) <= 0:
        return np.zeros(0, dtype=np.intp)
    frames = librosa.onset.onset_detect(onset_envelope=envelope, sr=sr, hop_length=HOP, units="frames")
    return cast(npt.NDArray[np.intp], frames[envelope[frames] >= floor])


def _merge(groups: list[npt.NDArray[np.intp]], *, within: int) -> npt.NDArray[np.intp]:
    """One onset per event: frames from several detectors closer than ``within`` frames count once."""
    merged: list[int] = []
    for frame in np.sort(np.concatenate(groups)):
        if not merged or frame - merged[-1] >= within:
            merged.append(int(frame))
    return np.asarray(merged, dtype=np.intp)


def _rises(level: npt.NDArray[np.float32], frames: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
    n = level.size
    after = np.stack([level[np.clip(frames + k, 0, n - 1)] for k in range(RISE_FRAMES)]).max(axis=0)
    before = np.stack([level[np.clip(frames - k, 0, n - 1)] for k in (1, 2, 3)]).min(axis=0)
    return cast(npt.NDArray[np.float32], np.maximum(0.0, after - before))


def detect_drums(percussive: npt.NDArray[np.floating], sr: int) -> list[DrumHit]:
    """Hits in the mono percussive stem ``percussive`` (shape (n,)), in time order."""
    import librosa

    y = np.asarray(percussive, dtype=np.float32)
    if y.size == 0 or not np.any(y):
        return []
    lead = N_FFT  # lead-in silence, so a hit on the very first sample still shows as a rise
    spec = np.abs(librosa.stft(np.concatenate([np.zeros(lead, np.float32), y]), n_fft=N_FFT, hop_length=HOP))
    freqs = librosa.fft_frequencies(sr=sr, n_fft=N_FFT)
    # onsets are found on compressed magnitudes (quiet hits count), classes on linear ones (leakage does not)
    compressed = np.log1p(100.0 * spec / max(float(spec.max()), 1e-9))
    strength = _flux(compressed)
    low = (freqs >= BANDS["kick"][0]) & (freqs < BANDS["kick"][1])
    kick_flux = _flux(compressed[low])
    frames = _merge(
        [
            _onsets(strength, sr, floor=MIN_ONSET * float(strength.max())),
            _onsets(kick_flux, sr, floor=KICK_ONSET * float(kick_flux.max())),
        ],
        within=round(MERGE_S * sr / HOP),
    )
    if frames.size == 0:
        return []
    rise = {name: _rises(spec[(freqs >= lo) & (freqs < hi)].sum(axis=0), frames) for name, (lo, hi) in BANDS.items()}

    mid = rise["snare"]
    snare = (mid >= SNARE_PRESENT * float(np.percentile(mid, 90))) & (
        mid >= SNARE_OVER_QUIET * float(np.percentile(mid, 25))
    )
    body_ratio = np.where(snare, KICK_OVER_SNARE_BODY, KICK_OVER_BODY)
    kick = (rise["kick"] >= KICK_PRESENT * max(float(np.percentile(rise["kick"], 90)), 1e-9)) & (
        rise["kick"] >= body_ratio * rise["body"]
    )
    plain = ~kick & ~snare
    hat_level = float(np.median(rise["hat"][plain])) if plain.any() else float(np.percentile(rise["hat"], 90))
    hat = ~snare & (rise["hat"] >= HAT_PRESENT * max(hat_level, 1e-9))

    times = np.maximum(0.0, librosa.frames_to_time(frames, sr=sr, hop_length=HOP) - lead / sr)
    velocity = np.clip(np.round(40 + 87 * strength[frames] / float(strength[frames].max())), 1, 127).astype(int)
    found: tuple[tuple[Drum, npt.NDArray[np.bool_]], ...] = (("kick", kick), ("snare", snare), ("hat", hat))
    return [
        DrumHit(float(times[i]), name, int(velocity[i]))
        for i in range(frames.size)
        for name, present in found
        if present[i]
    ]


def quantize(hits: list[DrumHit], beat_times: npt.NDArray[np.float64], *, subdivisions: int = 4) -> list[DrumHit]:
    """Snap hits to the nearest sixteenth of the beat grid (``subdivisions`` per beat); drops exact duplicates."""
    if len(beat_times) < 2:
        return hits
    beats = np.asarray(beat_times, dtype=np.float64)
    period = float(np.median(np.diff(beats)))
    # extend the grid a beat either side, so hits before the first or after the last tracked beat snap too
    beats = np.concatenate([[beats[0] - period], beats, [beats[-1] + period]])
    grid = np.concatenate([np.linspace(a, b, subdivisions, endpoint=False) for a, b in itertools.pairwise(beats)])
    grid = np.append(grid, beats[-1])
    seen: set[tuple[int, str]] = set()
    out: list[DrumHit] = []
    for hit in hits:
        slot = int(np.argmin(np.abs(grid - hit.time_s)))
        if (slot, hit.drum) in seen:
            continue
        seen.add((slot, hit.drum))
        out.append(DrumHit(max(0.0, float(grid[slot])), hit.drum, hit.velocity))
    return out
