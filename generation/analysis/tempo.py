"""Tempo, beat grid and downbeats of (roughly) constant-tempo music, refined well past librosa's estimate.

The reference system (audio-loop-gen) beat-tracks with librosa and takes librosa's quantised tempo estimate at
face value; a loop sized by it ends tens of milliseconds off the bar line. Here that estimate is only the start:
the tempo is refined to a fraction of a percent by fitting a line to the tracked beats, tempo-octave errors are
resolved, the downbeat is found from the low-band onsets, and the grid is aligned to the attacks in the waveform.
Loops cut on this grid (:mod:`generation.loops.cut`) and drum hits are quantised to it (:mod:`generation.midi`).

Pure functions: numpy in, numpy out. All analysis runs on the channel mean resampled to 22.05 kHz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import librosa
import numpy as np
import numpy.typing as npt

from beatforge.bounds import MAX_BPM, MIN_BPM
from generation.analysis.checks import (
    as_channels,
    check_bpm,
    check_int,
    check_long_enough,
    check_not_silent,
    check_sr,
    to_mono,
)
from generation.analysis.transients import transient
from generation.errors import AudioParameterError

ANALYSIS_SR = 22_050  # Hz: all detection runs at this rate
HOP = 256  # analysis hop: 11.6 ms
N_FFT = 2048
PREFERRED_BPM = (70.0, 180.0)  # octave errors are resolved towards this range
MIN_CONFIDENCE = 0.25  # below this the onsets are not periodic enough to call it a tempo
HINT_TOLERANCE = 1.08  # a bpm hint picks an octave candidate within 8 % of it


@dataclass(frozen=True)
class TempoInfo:
    """A constant-tempo beat grid.

    Attributes:
        bpm: tempo in beats per minute (refined, not librosa's quantised estimate).
        beat_times: every beat of the grid inside the audio, in seconds, ascending.
        downbeat_times: the first beat of every bar, in seconds (a subset of ``beat_times``).
        confidence: periodicity of the onset envelope at the beat or bar period, 0..1 (normalised
            autocorrelation); drum-driven music scores well above 0.5, noise near 0.
        beats_per_bar: beats in one bar.
    """

    bpm: float
    beat_times: tuple[float, ...]
    downbeat_times: tuple[float, ...]
    confidence: float
    beats_per_bar: int


@dataclass(frozen=True, eq=False)
class _Analysis:
    """Onset envelopes of the mono mix at ANALYSIS_SR / HOP (frame i is at i * HOP / ANALYSIS_SR seconds)."""

    env: npt.NDArray[np.float32]  # all bands: beats
    env_low: npt.NDArray[np.float32]  # bands below 2 kHz: which metrical level is the beat
    env_kick: npt.NDArray[np.float32]  # bands below 150 Hz: which beat is the downbeat
    duration_s: float


def _analyse(mono: npt.NDArray[np.float32], sr: int) -> _Analysis:
    y = mono if sr == ANALYSIS_SR else librosa.resample(mono, orig_sr=sr, target_sr=ANALYSIS_SR)
    power = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=ANALYSIS_SR, n_fft=N_FFT, n_mels=128)
    db = librosa.power_to_db(mel, ref=np.max).astype(np.float32)
    centres = librosa.mel_frequencies(n_mels=130, fmax=ANALYSIS_SR / 2)[1:-1]

    def onsets(spec: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return librosa.onset.onset_strength(S=spec, sr=ANALYSIS_SR, hop_length=HOP, n_fft=N_FFT)

    return _Analysis(
        env=onsets(db),
        env_low=onsets(db[centres < 2000]),
        # linear amplitude, not dB: a kick adds a lot of low-frequency energy; a snare only a little, which in dB
        # can look as big when the low end was quiet just before
        env_kick=onsets(np.sqrt(mel[centres < 150])),
        duration_s=len(mono) / sr,
    )


def _fit_grid(env: npt.NDArray[np.float32], bpm: float) -> tuple[float, float]:
    """Beat-track at ``bpm`` and fit a straight line to the beats: (period, phase) in frames, phase in [0, period).

    Beat indices come from the rounded gaps between consecutive beats (robust to a skipped or doubled beat);
    beats more than 15 % of a period off the line are dropped and the line refitted.
    """
    _, beats = librosa.beat.beat_track(onset_envelope=env, sr=ANALYSIS_SR, hop_length=HOP, bpm=bpm)
    if len(beats) < 4:
        raise AudioParameterError(f"no reliable tempo: only {len(beats)} beats found near {bpm:.1f} bpm")
    b = beats.astype(np.float64)
    p0 = 60.0 * ANALYSIS_SR / HOP / bpm
    k = np.concatenate([[0.0], np.cumsum(np.maximum(1.0, np.round(np.diff(b) / p0)))])
    keep = np.ones(len(b), dtype=bool)
    slope, icpt = p0, b[0]
    for _ in range(3):
        slope, icpt = np.polyfit(k[keep], b[keep], 1)
        ok = np.abs(b - (icpt + slope * k)) < 0.15 * slope
        if ok.sum() < 4 or (ok == keep).all():
            break
        keep = ok
    return float(slope), float(icpt % slope)


def _grid_values(env: npt.NDArray[np.float32], period: float, phase: float) -> npt.NDArray[np.float32]:
    """The envelope's maximum within ±1 frame of every grid point phase + k * period inside it."""
    pos = np.round(phase + period * np.arange(int((len(env) - 1 - phase) // period) + 1)).astype(int)
    padded = np.pad(env, 1)
    return cast(npt.NDArray[np.float32], np.max(np.stack([padded[pos], padded[pos + 1], padded[pos + 2]]), axis=0))


def _periodicity(env: npt.NDArray[np.float32], lag: float) -> float:
    """Normalised autocorrelation of the (smoothed, mean-removed) envelope, best within ±1 frame of ``lag``."""
    e = np.convolve(env, np.ones(3) / 3, mode="same")
    e = e - e.mean()
    energy = float(np.dot(e, e))
    if energy <= 0:
        return 0.0
    best = 0.0
    for tau in range(max(1, math.floor(lag) - 1), math.ceil(lag) + 2):
        if tau < len(e):
            best = max(best, float(np.dot(e[:-tau], e[tau:])) / energy)
    return best


def _tempo(
    an: _Analysis, mono: npt.NDArray[np.float32], sr: int, *, beats_per_bar: int, bpm_hint: float | None
) -> TempoInfo:
    coarse = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=an.env, sr=ANALYSIS_SR, hop_length=HOP))[0])
    if not coarse > 0:
        raise AudioParameterError("no reliable tempo: the onsets show no periodicity")
    candidates = [coarse * 2.0**k for k in range(-3, 4) if MIN_BPM <= coarse * 2.0**k <= MAX_BPM]
    near_hint = [c for c in candidates if bpm_hint and abs(math.log(c / bpm_hint)) <= math.log(HINT_TOLERANCE)]
    if near_hint:
        period, phase = _fit_grid(an.env, near_hint[0])
    else:
        preferred = sorted(c for c in candidates if PREFERRED_BPM[0] <= c <= PREFERRED_BPM[1])
        if not preferred:
            raise AudioParameterError(f"no reliable tempo: librosa's estimate {coarse:.1f} bpm has no octave in 70-180")
        # one or two candidates (the range spans 1.4 octaves). With two, the faster grid is the beat if the
        # low-band onsets on its off-beats are at least half as strong as on its on-beats (kick/snare on every
        # beat); otherwise its off-beats are subdivisions (hats) and the slower grid is the beat.
        period, phase = _fit_grid(an.env, preferred[-1])
        if len(preferred) == 2:
            low = _grid_values(an.env_low, period, phase)
            even, odd = float(low[0::2].mean()), float(low[1::2].mean())
            if min(even, odd) < 0.5 * max(even, odd):
                phase += period * (odd > even)
                period *= 2
    confidence = max(_periodicity(an.env, m * period) for m in {1, 2, beats_per_bar})
    if confidence < MIN_CONFIDENCE:
        raise AudioParameterError(
            f"no reliable tempo (confidence {confidence:.2f} < {MIN_CONFIDENCE}): is this noise rather than music?"
        )
    kick = _grid_values(an.env_kick, period, phase)
    first = int(np.argmax([kick[p::beats_per_bar].mean() if len(kick) > p else -1.0 for p in range(beats_per_bar)]))
    # The onset envelope peaks a couple of frames after the attack (how many depends on the sound): move the
    # grid by the median offset from its beats to the attacks found in the waveform near them.
    grid = (phase + period * np.arange(int((an.duration_s * ANALYSIS_SR / HOP - phase) // period) + 1)) * HOP
    at = np.round(grid / ANALYSIS_SR * sr).astype(np.int64)
    attacks = [(a, transient(mono, int(a), sr=sr, radius_s=0.05)) for a in at[at < len(mono)]]
    offsets = [o - a for a, o in attacks if o is not None]
    shift = float(np.median(offsets)) / sr if len(offsets) >= max(4, len(attacks) // 4) else 0.0
    times = grid / ANALYSIS_SR + shift
    keep = (times >= 0) & (times < an.duration_s)
    first = (first - int(np.argmax(keep))) % beats_per_bar  # the beats dropped at the start shift the bar phase
    times = times[keep]
    return TempoInfo(
        bpm=60.0 * ANALYSIS_SR / HOP / period,
        beat_times=tuple(float(t) for t in times),
        downbeat_times=tuple(float(t) for t in times[first::beats_per_bar]),
        confidence=min(1.0, confidence),
        beats_per_bar=beats_per_bar,
    )


def detect_tempo(
    y: npt.NDArray[np.floating], *, sr: int, beats_per_bar: int = 4, bpm_hint: float | None = None
) -> TempoInfo:
    """Find the tempo, beat grid and downbeats of (roughly) constant-tempo music.

    librosa's tempo estimate is quantised to whole onset-envelope frames (about 2 % at 120 bpm), so it is only
    the starting point: librosa's dynamic-programming beat tracker runs at that tempo, and a straight line
    fitted to the tracked beats (outliers dropped) gives the period to a small fraction of a percent. Octave
    errors (half or double tempo) are resolved towards 70-180 bpm; when both an octave and its double fall in
    that range, the faster one is taken only if its off-beats carry at least half the low-band (< 2 kHz) onset
    energy of its on-beats. The downbeat is the beat phase (of ``beats_per_bar``) with the most onset energy
    below 150 Hz (kick drum, bass notes).

    Args:
        y: float audio, shape (n,) or (channels, n); analysed as the channel mean.
        sr: sample rate of ``y`` in Hz.
        beats_per_bar: beats in one bar, 1..12.
        bpm_hint: tempo the music was asked for (e.g. the generation prompt's), 40-300: an octave candidate
            within 8 % of it wins over the 70-180 preference.

    Returns:
        The tempo, the beat grid and the downbeats, in seconds from the first sample.

    Raises:
        AudioParameterError: bad shape, dtype, sample rate or non-finite samples; silence; audio shorter than
            2 s; no periodic onsets (e.g. noise: confidence below 0.25).
    """
    x = as_channels(y)
    sr = check_sr(sr)
    beats_per_bar = check_int("beats_per_bar", beats_per_bar, 1, 12)
    bpm_hint = check_bpm("bpm_hint", bpm_hint)
    mono = to_mono(x)
    check_not_silent(mono)
    check_long_enough(mono, sr)
    return tempo_of(mono, sr=sr, beats_per_bar=beats_per_bar, bpm_hint=bpm_hint)


def tempo_of(mono: npt.NDArray[np.float32], *, sr: int, beats_per_bar: int, bpm_hint: float | None) -> TempoInfo:
    """:func:`detect_tempo` of a mono mix its caller has already checked (as ``make_loop`` has)."""
    return _tempo(_analyse(mono, sr), mono, sr, beats_per_bar=beats_per_bar, bpm_hint=bpm_hint)
