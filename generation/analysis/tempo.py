"""Tempo, beat grid and downbeats of (roughly) constant-tempo music, refined well past librosa's estimate.

The reference system (audio-loop-gen) beat-tracks with librosa and takes librosa's quantised tempo estimate at
face value; a loop sized by it ends tens of milliseconds off the bar line. Here that estimate is only the start:
the tempo is refined to a fraction of a percent by fitting a line to the tracked beats, tempo-octave errors are
resolved (or a tempo the user gave is searched at and near its simple ratios), the bar phase is found from the kick
and from where the harmony changes (with a confidence), and the grid is aligned to the attacks in the waveform.
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
from generation.analysis import beat_model
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
HINT_TOLERANCE = 1.08  # a grid seeded at a candidate tempo belongs to it if it lands within 8 % of it
# A tempo the user gives is searched at itself and at the simple ratios a listener confuses it with (octaves,
# dotted and triplet feels), each refined by beat tracking seeded there; the hint itself wins unless its grid
# fits clearly worse (below HINT_AGREES of the best fit), and then the result says so (TempoInfo.tempo_note).
HINT_RATIOS = (1.0, 2.0, 0.5, 1.5, 2 / 3, 4 / 3, 3 / 4)
# HINT_AGREES: on the loop benches no right (rounded) hint was questioned, and every hint 20 % off was (but on a
# 133-against-100 bpm cross-rhythm, where 106 is within 8 % of the 100 bpm pulse and is honoured as that).
HINT_AGREES = 0.7
# Where madmom's downbeat networks are on (generation/analysis/beat_model.py), they decide: their DBN's downbeats
# pick the bar phase, and their tempo starts the tempo search (librosa's is double on half-time grooves). The
# confidence then says whether the evidence agrees with that phase: their mean downbeat activation per phase is a
# third cue (LEARNED_WEIGHT) beside kick and harmony, and the margin is the chosen phase's score minus the best
# other's. LEARNED_WEIGHT 0.5 flags the three wrong phases of the development sets (bench/loops.py) and the drum
# loop with equal kicks on 1 and 3, and keeps 21 of 27 right ones above DOWNBEAT_CONFIDENT (weights 1-4 let the
# networks vouch for their own mistakes).
LEARNED_WEIGHT = 0.5
LEARNED_FLOOR = 0.05  # mean downbeat activation: below it the networks hear no bars
# Without the networks the bar phase is scored from two signal cues (per beat phase, relative to their mean over
# all phases): kick (low-band onset) weight, and harmonic change (chroma novelty between the bars before and after
# a beat). Tried and dropped on the tuning sets (bench/loops.py): bass-note change (novelty of the 30-260 Hz
# spectrum: bass lines move on every beat as often as at the bar line) and chroma novelty over half bars (chorales
# change chord on every beat). The downbeat confidence is 1 - exp(-margin / DOWNBEAT_SCALE), margin = the chosen phase's
# score - the best other phase's (0 when another scores higher).
CUE_WEIGHTS = {"kick": 1.0, "harmony": 1.0, "learned": LEARNED_WEIGHT}
DOWNBEAT_SCALE = 0.5
SIGNAL_CUES = "kick weight and harmonic change"
QUIET = 0.01  # beats 20 dB below the median beat are silence, not music
NOVELTY_FLOOR = 0.05  # a chord change moves the chroma by 0.1-0.5 (1 - cosine); a repeated drum loop by < 0.01
KICK_FLOOR = 1.0  # in means of the kick envelope: beats without low-end hits carry no preference


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
        downbeat_confidence: how sure the bar phase is, 0..1, from the margin between the chosen phase's score
            and the best other phase's (1.0 with one beat per bar).
        tempo_note: why the tempo is not the ``bpm_hint`` asked for (the audio's pulse clearly disagrees), else
            None.
        downbeats_from: what placed the bar lines: madmom's networks (their licence named) or the signal cues.
    """

    bpm: float
    beat_times: tuple[float, ...]
    downbeat_times: tuple[float, ...]
    confidence: float
    beats_per_bar: int
    downbeat_confidence: float = 1.0
    tempo_note: str | None = None
    downbeats_from: str = SIGNAL_CUES


@dataclass(frozen=True, eq=False)
class _Analysis:
    """Onset envelopes of the mono mix at ANALYSIS_SR / HOP (frame i is at i * HOP / ANALYSIS_SR seconds)."""

    env: npt.NDArray[np.float32]  # all bands: beats
    env_low: npt.NDArray[np.float32]  # bands below 2 kHz: which metrical level is the beat
    env_kick: npt.NDArray[np.float32]  # bands below 150 Hz: which beat is the downbeat
    chroma: npt.NDArray[np.float32]  # (12, frames) pitch classes: where the harmony changes
    power: npt.NDArray[np.float32]  # (frames,) mel power: which beats are (near) silent
    duration_s: float
    learned: npt.NDArray[np.float32] | None = None  # (frames at beat_model.FPS, 2) beat / downbeat activations


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
        chroma=librosa.feature.chroma_stft(S=power, sr=ANALYSIS_SR, n_fft=N_FFT).astype(np.float32),
        power=mel.sum(axis=0).astype(np.float32),
        duration_s=len(mono) / sr,
        learned=beat_model.activations(mono, sr) if beat_model.available() else None,
    )


def _fit_grid(env: npt.NDArray[np.float32], bpm: float) -> tuple[float, float]:
    """Beat-track at ``bpm`` and fit a straight line to the beats: (period, phase) in frames, phase in [0, period).

    Beat indices come from the rounded gaps between consecutive beats (robust to a skipped or doubled beat);
    beats more than 15 % of a period off the line are dropped and the line refitted, then those more than 8 %
    (a tracker that stumbles for a few beats, as on a fill, would otherwise tilt the line by half a percent).
    """
    _, beats = librosa.beat.beat_track(onset_envelope=env, sr=ANALYSIS_SR, hop_length=HOP, bpm=bpm)
    if len(beats) < 4:
        raise AudioParameterError(f"no reliable tempo: only {len(beats)} beats found near {bpm:.1f} bpm")
    b = beats.astype(np.float64)
    p0 = 60.0 * ANALYSIS_SR / HOP / bpm
    k = np.concatenate([[0.0], np.cumsum(np.maximum(1.0, np.round(np.diff(b) / p0)))])
    keep = np.ones(len(b), dtype=bool)
    slope, icpt = p0, b[0]
    for tolerance in (0.15, 0.15, 0.15, 0.08, 0.08):  # refit until the outliers are out, then tighten
        slope, icpt = np.polyfit(k[keep], b[keep], 1)
        ok = np.abs(b - (icpt + slope * k)) < tolerance * slope
        if ok.sum() >= max(4, len(b) // 2):
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


def _learned_grid(an: _Analysis) -> tuple[float, float] | None:
    """The networks' pulse (period, phase): their DBN's median beat interval in 55-215 bpm, refined by
    :func:`_fit_grid`. None when they are off or find no beats.

    Where the doubled tempo is still under 180 bpm the line is fitted at it (twice the beats: a tracker seeded
    at a slow tempo can keep to whole frames, 0.5 % off) and every other beat kept, the ones nearer the
    networks' beats.
    """
    if an.learned is None:
        return None
    beats = beat_model.track(an.learned, beats_per_bar=4, min_bpm=55.0, max_bpm=215.0)[:, 0]
    if len(beats) < 4:
        return None
    bpm = 60.0 / float(np.median(np.diff(beats)))
    if 2 * bpm > PREFERRED_BPM[1]:
        return _fit_grid(an.env, bpm)
    period, phase = _fit_grid(an.env, 2 * bpm)
    frames = beats * ANALYSIS_SR / HOP
    off = np.abs((frames - phase + period) % (2 * period) - period)  # from the nearest of the even beats
    if float(np.median(off)) > period / 2:
        phase += period
    return 2 * period, phase % (2 * period)


def _own_grid(an: _Analysis) -> tuple[float, float]:
    """The audio's own pulse, no hint: (period, phase). The networks' tempo where they are on, unless its pulse
    fits the onsets clearly worse (below HINT_AGREES) than librosa's; else librosa's."""
    learned = _learned_grid(an)
    try:
        period, phase = _librosa_grid(an)
    except AudioParameterError:
        if learned is None:
            raise
        return learned
    if learned is not None and _periodicity(an.env, learned[0]) >= HINT_AGREES * _periodicity(an.env, period):
        return learned
    return period, phase


def _librosa_grid(an: _Analysis) -> tuple[float, float]:
    """librosa's estimate, octave-resolved towards 70-180 bpm: (period, phase)."""
    coarse = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=an.env, sr=ANALYSIS_SR, hop_length=HOP))[0])
    if not coarse > 0:
        raise AudioParameterError("no reliable tempo: the onsets show no periodicity")
    candidates = [coarse * 2.0**k for k in range(-3, 4) if MIN_BPM <= coarse * 2.0**k <= MAX_BPM]
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
    return period, phase


def _bpm(period: float) -> float:
    return 60.0 * ANALYSIS_SR / HOP / period


def _hinted_grid(an: _Analysis, hint: float) -> tuple[float, float, str | None]:
    """The best grid near a tempo the user gave: (period, phase, note), note None unless the audio disagrees.

    Beat tracking is seeded at the hint and at each of HINT_RATIOS of it; a seed whose refined grid drifts
    more than HINT_TOLERANCE away found some other tempo and is dropped. The hint's own grid wins unless its
    pulse fit is below HINT_AGREES of the best of all grids (the ratios' and the audio's own); then the best
    wins (the audio's own when it is within HINT_AGREES of the best) and the note says so. The fit is the onset
    envelope's periodicity at one beat's lag: phase-free, so it compares tempi whose tracked grids differ, and at
    one lag only, since at multiples of it the two pulses of a cross-rhythm (133 and 100 bpm meet every 1.8 s)
    line up and would favour a slow grid that is neither.
    """
    grids: list[tuple[float, float, float, float]] = []  # (ratio, period, phase, fit); ratio 0: the audio's own
    for ratio in HINT_RATIOS:
        seed = hint * ratio
        if not MIN_BPM <= seed <= MAX_BPM:
            continue
        try:
            period, phase = _fit_grid(an.env, seed)
        except AudioParameterError:
            continue
        if abs(math.log(_bpm(period) / seed)) <= math.log(HINT_TOLERANCE):
            grids.append((ratio, period, phase, _periodicity(an.env, period)))
    try:
        period, phase = _own_grid(an)
        grids.append((0.0, period, phase, _periodicity(an.env, period)))
    except AudioParameterError:
        if not grids:
            raise
    best = max(fit for *_, fit in grids)
    for ratio, period, phase, fit in grids:
        if ratio == 1.0 and fit >= HINT_AGREES * best:
            # the audio's own grid, where it is the same tempo, is the more precise: it was line-fitted to more
            # beats (tracked at the faster octave), where the tracker seeded at the hint can keep to whole frames
            same = [g for g in grids if g[0] == 0.0 and abs(math.log(g[1] / period)) < math.log(1.02)]
            return (same[0][1], same[0][2], None) if same else (period, phase, None)
    own = [g for g in grids if g[0] == 0.0 and g[3] >= HINT_AGREES * best]
    _, period, phase, _ = own[0] if own else max(grids, key=lambda g: g[3])
    return period, phase, f"the audio's pulse is {_bpm(period):.1f} bpm, not the {hint:g} asked for"


def _novelty(
    feature: npt.NDArray[np.float32],
    bounds: npt.NDArray[np.int64],
    width: int,
    quiet: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.float64]:
    """Change of a feature at each beat: 1 - cosine of its means over the ``width`` beats before and after.

    ``bounds`` are the beats' first frames (one more at the end); entry k is for beat k, NaN where a side
    has fewer than ``width`` beats or holds a ``quiet`` beat (silence before the music or decay after it changes
    more than any bar line). Harmony changes at bar lines more than inside bars, so with ``width`` a bar
    the downbeat phase has the most change (chorales change chord on every beat, but less inside a bar).
    """
    sync = np.add.reduceat(feature.astype(np.float64), bounds[:-1], axis=1) / np.diff(bounds)
    n = sync.shape[1]
    out = np.full(n, np.nan)
    if n < 2 * width:
        return out
    csum = np.concatenate([np.zeros((sync.shape[0], 1)), np.cumsum(sync, axis=1)], axis=1)
    k = np.arange(width, n - width + 1)
    before, after = csum[:, k] - csum[:, k - width], csum[:, k + width] - csum[:, k]
    norm = np.linalg.norm(before, axis=0) * np.linalg.norm(after, axis=0)
    cos = np.where(norm > 0, np.sum(before * after, axis=0) / np.maximum(norm, 1e-12), 1.0)
    out[k] = 1.0 - cos
    if quiet is not None and quiet.any():
        near = np.convolve(quiet.astype(float), np.ones(2 * width), mode="full")[width - 1 : width - 1 + n] > 0
        out[near] = np.nan
    return out


def _phase_profile(
    values: npt.NDArray[np.float64], beats_per_bar: int, floor: float, stat: str = "median"
) -> npt.NDArray[np.float64]:
    """Median (or mean) of per-beat values at each bar phase, relative to their mean over phases (all 0: none).

    The median suits a cue present on every bar (the kick); the mean one that is zero for long stretches and
    speaks at phrase changes (harmony over a repeated one-bar figure), with the beats next to silence masked
    out (:func:`_novelty`). ``floor`` bounds the divisor, so that a cue with next to nothing in it (chroma of a
    drum loop) does not turn its noise into a preference.
    """
    medians = []
    for p in range(beats_per_bar):
        v = values[p::beats_per_bar]
        v = v[np.isfinite(v)]
        medians.append((float(np.median(v)) if stat == "median" else float(np.mean(v))) if len(v) else math.nan)
    m = np.array(medians)
    if not np.isfinite(m).all():
        return np.zeros(beats_per_bar)
    return cast(npt.NDArray[np.float64], (m - m.mean()) / max(float(m.mean()), floor, 1e-12))


def _learned_profile(an: _Analysis, starts: npt.NDArray[np.int64], beats_per_bar: int) -> npt.NDArray[np.float64]:
    """The networks' downbeat activation (its maximum within ±20 ms) at each beat, as a phase profile (all 0 when
    they are off)."""
    if an.learned is None:
        return np.zeros(beats_per_bar)
    down = np.pad(an.learned[:, 1].astype(np.float64), 2)
    at = np.round(starts * HOP / ANALYSIS_SR * beat_model.FPS).astype(np.int64)
    at = at[at < len(an.learned)]
    values = np.max(np.stack([down[at + k] for k in range(5)]), axis=0)
    return _phase_profile(values, beats_per_bar, LEARNED_FLOOR, stat="mean")


def _learned_track(an: _Analysis, period: float, beats_per_bar: int) -> npt.NDArray[np.float64] | None:
    """The networks' beats at this grid's tempo (within 4 %): (beats, 2) of (time in s, position in the bar from
    1); None when they are off or find too few."""
    if an.learned is None:
        return None
    bpm = _bpm(period)
    tracked = beat_model.track(an.learned, beats_per_bar=beats_per_bar, min_bpm=bpm / 1.04, max_bpm=bpm * 1.04)
    return tracked if len(tracked) >= 2 * beats_per_bar else None


def _with_learned_period(tracked: npt.NDArray[np.float64], period: float, phase: float) -> tuple[float, float]:
    """The grid (period, phase) with its period averaged with that of a line through the networks' beats.

    Two independent measurements of the same pulse: on the loop benches the line fitted to librosa's beats was
    0.11 % off on one recorded excerpt where the networks' line was 0.03 % off, and the mean of the two was never
    further off than 0.07 %. Beats more than 30 ms off the line are dropped and it is refitted; a line more than
    1 % away from the grid's period found another pulse and is ignored. The new grid keeps the old one's phase at
    its middle beat, where a small change of period moves it least.
    """
    times = tracked[:, 0] * ANALYSIS_SR / HOP  # in frames
    k = np.concatenate([[0.0], np.cumsum(np.maximum(1.0, np.round(np.diff(times) / period)))])
    keep = np.ones(len(times), dtype=bool)
    for _ in range(3):
        slope, icpt = np.polyfit(k[keep], times[keep], 1)
        ok = np.abs(times - (icpt + slope * k)) < 0.03 * ANALYSIS_SR / HOP
        if ok.sum() < max(4, len(times) // 2):
            break
        keep = ok
    if abs(math.log(slope / period)) > math.log(1.01):
        return period, phase
    blended = (period + float(slope)) / 2
    middle = round((float(np.median(times)) - phase) / period)
    return blended, (phase + (period - blended) * middle) % blended


def _learned_votes(
    tracked: npt.NDArray[np.float64] | None, starts: npt.NDArray[np.int64], period: float, beats_per_bar: int
) -> npt.NDArray[np.int64] | None:
    """How many of the networks' downbeats fall on each bar phase of the grid (None: the networks are off).

    Their DBN reads the activations as a sequence of bars, so it keeps to the phase that most of the piece
    supports where a phase-by-phase average of the activations can be swayed by a strong accent on beat 3.
    """
    if tracked is None or len(starts) < 2 * beats_per_bar:
        return None
    times = starts * HOP / ANALYSIS_SR
    downbeats = tracked[tracked[:, 1] == 1, 0]
    nearest = np.abs(downbeats[:, None] - times[None, :]).argmin(axis=1)
    close = np.abs(times[nearest] - downbeats) < 0.25 * period * HOP / ANALYSIS_SR
    votes = np.bincount(nearest[close] % beats_per_bar, minlength=beats_per_bar)
    return votes if votes.sum() > 0 else None


def _bar_phase(
    an: _Analysis, period: float, phase: float, beats_per_bar: int, tracked: npt.NDArray[np.float64] | None
) -> tuple[int, float, str]:
    """Which beat of the grid (index mod ``beats_per_bar``) starts a bar, how sure, and what said so.

    A musician finds the one by the kick's weight and by where the chords change (a bar's harmony against the
    previous bar's); each cue gives every phase a score relative to the others, and the weighted sum
    (CUE_WEIGHTS) picks the phase, unless the networks are on: then their downbeats pick it. The margin between
    the chosen phase's score and the best other's gives the confidence.
    """
    if beats_per_bar == 1:
        return 0, 1.0, SIGNAL_CUES
    frames = an.env.shape[-1]
    starts = np.round(phase + period * np.arange(int((frames - 1 - phase) // period) + 1)).astype(np.int64)
    bounds = np.unique(np.clip(np.concatenate([starts, [frames]]), 0, frames))
    kick = _grid_values(an.env_kick, period, phase).astype(np.float64)
    loud = np.add.reduceat(an.power.astype(np.float64), bounds[:-1]) / np.diff(bounds)
    quiet = loud < QUIET * float(np.median(loud))
    cues = {
        "learned": _learned_profile(an, starts, beats_per_bar),
        "kick": _phase_profile(kick, beats_per_bar, KICK_FLOOR * float(an.env_kick.mean())),
        "harmony": _phase_profile(
            _novelty(an.chroma, bounds, beats_per_bar, quiet), beats_per_bar, NOVELTY_FLOOR, stat="mean"
        ),
    }
    score = np.sum([CUE_WEIGHTS[name] * cue for name, cue in cues.items()], axis=0)
    votes = _learned_votes(tracked, starts, period, beats_per_bar)
    best = int(np.argmax(votes)) if votes is not None else int(np.argmax(score))
    margin = float(score[best] - np.max(np.delete(score, best)))
    source = beat_model.LICENCE if votes is not None else SIGNAL_CUES
    return best, max(0.0, 1.0 - math.exp(-margin / DOWNBEAT_SCALE)), source


def _tempo(
    an: _Analysis, mono: npt.NDArray[np.float32], sr: int, *, beats_per_bar: int, bpm_hint: float | None
) -> TempoInfo:
    note = None
    if bpm_hint:
        period, phase, note = _hinted_grid(an, bpm_hint)
    else:
        period, phase = _own_grid(an)
    confidence = max(_periodicity(an.env, m * period) for m in {1, 2, beats_per_bar})
    if confidence < MIN_CONFIDENCE:
        raise AudioParameterError(
            f"no reliable tempo (confidence {confidence:.2f} < {MIN_CONFIDENCE}): is this noise rather than music?"
        )
    tracked = _learned_track(an, period, beats_per_bar)
    if tracked is not None:
        period, phase = _with_learned_period(tracked, period, phase)
    first, downbeat_confidence, downbeats_from = _bar_phase(an, period, phase, beats_per_bar, tracked)
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
        downbeat_confidence=downbeat_confidence,
        tempo_note=note,
        downbeats_from=downbeats_from,
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
    energy of its on-beats. With ``bpm_hint``, the grid is searched near the hint and its simple ratios instead
    (``tempo_note`` says when the audio's pulse disagrees). The downbeat is the beat phase (of ``beats_per_bar``)
    with the most onset energy below 150 Hz (kick drum) and the most harmonic change from bar to bar;
    ``downbeat_confidence`` says how clearly it beats the second-best phase.

    Args:
        y: float audio, shape (n,) or (channels, n); analysed as the channel mean.
        sr: sample rate of ``y`` in Hz.
        beats_per_bar: beats in one bar, 1..12.
        bpm_hint: tempo the music was asked for (e.g. the generation prompt's, or the user's), 40-300: beat
            tracking is seeded at it and at x2, x1/2, x3/2, x2/3, x4/3, x3/4 of it; its own grid wins over the
            70-180 preference unless it fits the onsets clearly worse than another (then ``tempo_note``).

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
