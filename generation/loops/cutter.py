"""Seamless loops at a known tempo: tempo, downbeat and key detection, loop cutting, time-stretching, seam scoring.

Pure functions: numpy in, numpy out. Nothing here reads or writes files or touches torch. Audio is float
(channels, n) or mono (n,); all analysis runs on the channel mean resampled to 22.05 kHz, and every cut is
applied to all channels alike, so stereo is kept.

The reference system (audio-loop-gen) beat-tracks with librosa, takes librosa's quantised tempo estimate at face
value and hard-cuts from the first tracked beat; :func:`naive_loop` is that kind of cut, for the benchmark.
:func:`make_loop` instead refines the tempo to a fraction of a percent, resolves tempo-octave errors, cuts whole
bars on downbeats just before the downbeat's transient, and closes the seam with a correlation-aware equal-power
crossfade, so that the loop's length is exact and its seam sounds like the rest of the music
(:func:`seam_score`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import librosa
import numpy as np
import numpy.typing as npt

from beatforge.bounds import MAX_BPM, MIN_BPM, POWER_OF_TWO_BARS
from generation.errors import AudioParameterError

Samples = npt.NDArray[np.float32]

ANALYSIS_SR = 22_050  # Hz: all detection runs at this rate
HOP = 256  # analysis hop: 11.6 ms
N_FFT = 2048
PREFERRED_BPM = (70.0, 180.0)  # octave errors are resolved towards this range
MIN_ANALYSIS_S = 2.0  # shortest audio we try to find a tempo in
MIN_CONFIDENCE = 0.25  # below this the onsets are not periodic enough to call it a tempo
SILENCE_PEAK = 1e-4  # -80 dBFS
MAX_CHANNELS = 8
MAX_STRETCH = 2.0  # time-stretch factors beyond 0.5x..2x sound like a different piece
PRE_ONSET_S = 0.002  # cut this long before the downbeat's transient
HINT_TOLERANCE = 1.08  # a bpm hint picks an octave candidate within 8 % of it
SEAM_RANGE_DB = 60.0  # seam_score ignores what is more than this far below the loop's loudest
SEAM_CONTEXT_S = 1.0  # seam_score compares the seam with the moments whose preceding this-long context is closest
SEAM_MIN_S = 0.5  # shortest loop seam_score rates
SHORTLIST = 3  # make_loop scores this many candidate cuts in full

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl-Kessler probe-tone profiles, C major / C minor
_KS_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KS_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


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


@dataclass(frozen=True)
class KeyInfo:
    """A musical key.

    Attributes:
        tonic: pitch class of the tonic, e.g. "A" or "F#".
        mode: "major" or "minor".
        confidence: Pearson correlation (0..1) between the audio's mean chroma and the winning key profile.
    """

    tonic: str
    mode: str
    confidence: float

    @property
    def label(self) -> str:
        """E.g. "A minor"."""
        return f"{self.tonic} {self.mode}"

    def to_metadata(self) -> dict[str, Any]:
        return {"tonic": self.tonic, "mode": self.mode, "label": self.label, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True, eq=False)
class LoopResult:
    """A loop cut by :func:`make_loop`.

    Attributes:
        samples: float32 audio with the input's layout: (channels, n) or (n,); ``n`` is exactly
            ``round(bars * beats_per_bar * 60 / bpm * sample_rate)``.
        sample_rate: Hz (the input's).
        bpm_detected: tempo found in the input.
        bpm: the loop's tempo: ``bpm_detected``, or the target when ``stretched``.
        bars: whole bars in the loop.
        beats_per_bar: beats in one bar.
        start_sample: first input sample of the loop (on a downbeat, just before its attack); for a stretched
            loop, the input sample its first sample was stretched from.
        end_sample: ``start_sample`` + the loop's length at ``bpm_detected``, in input samples (exclusive).
        seam_score: :func:`seam_score` of ``samples`` (1.0: the seam is as smooth as the music; higher is worse).
        key: detected key of the looped audio.
        stretched: whether the loop was time-stretched to a target tempo.
    """

    samples: Samples
    sample_rate: int
    bpm_detected: float
    bpm: float
    bars: int
    beats_per_bar: int
    start_sample: int
    end_sample: int
    seam_score: float
    key: KeyInfo
    stretched: bool

    @property
    def duration_s(self) -> float:
        return self.samples.shape[-1] / self.sample_rate

    def to_metadata(self) -> dict[str, Any]:
        """JSON-safe summary (plain ints, floats, strings, bools), for the job's metadata file."""
        return {
            "sample_rate": int(self.sample_rate),
            "channels": 1 if self.samples.ndim == 1 else int(self.samples.shape[0]),
            "n_samples": int(self.samples.shape[-1]),
            "duration_s": round(self.duration_s, 6),
            "bpm_detected": round(float(self.bpm_detected), 4),
            "bpm": round(float(self.bpm), 4),
            "bars": int(self.bars),
            "beats_per_bar": int(self.beats_per_bar),
            "start_sample": int(self.start_sample),
            "end_sample": int(self.end_sample),
            "seam_score": round(float(self.seam_score), 4),
            "key": self.key.to_metadata(),
            "stretched": bool(self.stretched),
        }


# ---------------------------------------------------------------------------------------------------------------
# validation


def _as_channels(y: object, *, name: str = "y") -> Samples:
    """``y`` as float32 (channels, n), validated: shape, dtype, finiteness."""
    if not isinstance(y, np.ndarray):
        raise AudioParameterError(f"{name} must be a numpy array, got {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.floating):
        raise AudioParameterError(f"{name} must be floating-point audio in [-1, 1], got dtype {y.dtype}")
    if y.ndim not in (1, 2):
        raise AudioParameterError(f"{name} must have shape (n,) or (channels, n), got shape {y.shape}")
    x = y[None, :] if y.ndim == 1 else y
    if x.shape[0] > MAX_CHANNELS:
        raise AudioParameterError(
            f"{name} has shape {y.shape}: more than {MAX_CHANNELS} channels; pass (channels, n), not (n, channels)"
        )
    if x.size == 0:
        raise AudioParameterError(f"{name} is empty (shape {y.shape})")
    finite = np.isfinite(x)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=0)))
        raise AudioParameterError(
            f"{name} has {int(x.size - finite.sum())} non-finite samples (NaN or inf), the first at sample {first}"
        )
    return x.astype(np.float32, copy=False)


def _check_sr(sr: object) -> int:
    if isinstance(sr, bool) or not isinstance(sr, int | np.integer) or not 8_000 <= sr <= 384_000:
        raise AudioParameterError(f"sr={sr!r} must be an integer sample rate in Hz, 8000..384000")
    return int(sr)


def _check_bpm(name: str, bpm: object) -> float | None:
    if bpm is None:
        return None
    if isinstance(bpm, bool) or not isinstance(bpm, int | float | np.integer | np.floating):
        raise AudioParameterError(f"{name}={bpm!r} must be a number of beats per minute")
    if not (math.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
        raise AudioParameterError(f"{name}={bpm!r} is outside {MIN_BPM:g}-{MAX_BPM:g} bpm")
    return float(bpm)


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not lo <= value <= hi:
        raise AudioParameterError(f"{name}={value!r} must be a whole number in {lo}..{hi}")
    return int(value)


def _check_seconds(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise AudioParameterError(f"{name}={value!r} must be a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise AudioParameterError(f"{name}={value!r} must be a positive, finite number of seconds")
    return float(value)


def _check_not_silent(mono: npt.NDArray[np.floating]) -> None:
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        db = 20 * math.log10(peak) if peak > 0 else -math.inf
        raise AudioParameterError(f"audio is silent (peak {db:.1f} dBFS): nothing to loop")


# ---------------------------------------------------------------------------------------------------------------
# analysis


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
    return np.max(np.stack([padded[pos], padded[pos + 1], padded[pos + 2]]), axis=0)


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
    attacks = [(a, _transient(mono, int(a), sr, radius_s=0.05)) for a in at[at < len(mono)]]
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


def _mono(x: Samples) -> npt.NDArray[np.float32]:
    return x.mean(axis=0, dtype=np.float32)


def _check_long_enough(mono: npt.NDArray[np.float32], sr: int) -> None:
    seconds = len(mono) / sr
    if seconds < MIN_ANALYSIS_S:
        raise AudioParameterError(
            f"audio is {seconds:.2f} s long: too short to find a tempo and a whole bar (need {MIN_ANALYSIS_S:g} s)"
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
    x = _as_channels(y)
    sr = _check_sr(sr)
    beats_per_bar = _check_int("beats_per_bar", beats_per_bar, 1, 12)
    bpm_hint = _check_bpm("bpm_hint", bpm_hint)
    mono = _mono(x)
    _check_not_silent(mono)
    _check_long_enough(mono, sr)
    return _tempo(_analyse(mono, sr), mono, sr, beats_per_bar=beats_per_bar, bpm_hint=bpm_hint)


def _key(mono: npt.NDArray[np.float32], sr: int) -> KeyInfo:
    y = mono if sr == ANALYSIS_SR else librosa.resample(mono, orig_sr=sr, target_sr=ANALYSIS_SR)
    chroma = librosa.feature.chroma_cqt(y=y, sr=ANALYSIS_SR, hop_length=512)
    profile = chroma.mean(axis=1)
    best = (-2.0, "C", "major")
    if np.ptp(profile) > 0:
        for tonic in range(12):
            for mode, template in (("major", _KS_MAJOR), ("minor", _KS_MINOR)):
                r = float(np.corrcoef(profile, np.roll(template, tonic))[0, 1])
                if r > best[0]:
                    best = (r, NOTE_NAMES[tonic], mode)
    return KeyInfo(tonic=best[1], mode=best[2], confidence=max(0.0, best[0]))


def detect_key(y: npt.NDArray[np.floating], *, sr: int) -> KeyInfo:
    """Estimate the key with the Krumhansl-Schmuckler method.

    The constant-Q chroma of the mono mix (librosa ``chroma_cqt``, C1 upward) is averaged over time and
    correlated with the Krumhansl-Kessler major and minor profiles in all 12 rotations; the best of the 24 wins.

    Args:
        y: float audio, shape (n,) or (channels, n).
        sr: sample rate in Hz.

    Returns:
        The key, e.g. ``KeyInfo("A", "minor", 0.87)`` (``label`` "A minor").

    Raises:
        AudioParameterError: bad shape, dtype, sample rate or non-finite samples; silence.
    """
    x = _as_channels(y)
    sr = _check_sr(sr)
    mono = _mono(x)
    _check_not_silent(mono)
    return _key(mono, sr)


# ---------------------------------------------------------------------------------------------------------------
# the seam score


@functools.lru_cache(maxsize=8)
def _seam_filters(sr: int) -> tuple[int, npt.NDArray[np.float64]]:
    """seam_score's frame length (the power of two nearest 23 ms, at least 512) and its 40-band mel filters."""
    n_fft = 1 << max(9, round(math.log2(0.023 * sr)))
    return n_fft, librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=40, dtype=np.float64)


def _circular_frames(m: npt.NDArray[np.float64], step: int, sr: int) -> tuple[npt.NDArray[np.float64], ...]:
    """Mel power (40, frames) and mean-square level (frames,) of Hann frames centred every ``step`` samples from
    sample 0, with the audio wrapping around (frames = n // step)."""
    n_fft, mel = _seam_filters(sr)
    ext = np.concatenate([m[len(m) - n_fft // 2 :], m, m[: n_fft // 2]])
    spec = np.abs(librosa.stft(ext, n_fft=n_fft, hop_length=step, center=False)[:, : len(m) // step]) ** 2
    # Parseval: the windowed frame's mean square from its one-sided spectrum
    level = (2 * spec.sum(axis=0) - spec[0] - spec[-1]) / n_fft**2
    return mel @ spec, level


def seam_score(loop: npt.NDArray[np.floating], *, sr: int) -> float:
    """How much a loop's seam changes the sound, relative to how the music itself changes at the same kind of moment.

    Definition. The loop's mono mix is played circularly (back to back with itself, seam at sample 0) and cut
    into Hann frames of ``N`` samples (the power of two nearest 23 ms, at least 512), one centred every
    ``N / 16`` samples from the seam on. Per frame ``t``: ``L_t``, the 40-band mel power spectrum in dB, and
    ``R_t``, the frame's RMS level in dB, both floored 60 dB below the loop's loudest (``SEAM_RANGE_DB``). The
    change into frame ``t`` is the spectral flux plus the RMS jump against the frame ``N / 4`` earlier::

        c_t = mean over bands |L_t - L_(t-4)| + |R_t - R_(t-4)|          (dB)

    and the change around instant ``p`` (a frame centre) is ``g_p = max(c_t for t in p-7 .. p+11)``, every
    frame pair in which a frame overlaps ``p``. ``g_0`` is the seam's change. The music's own change at the
    same kind of moment is ``median(g_q)`` over three moments ``q`` (at least half a context apart, with all
    their frames clear of the seam) whose context (the spectra ``L`` sampled every ``N / 4`` over the 1 s,
    ``SEAM_CONTEXT_S``, or a quarter of a shorter loop, that ends where ``q``'s frames begin) is closest, in
    summed squared dB, to the same span before the seam. In bar-periodic music those are the same spot in
    other bars: the other downbeats, for a loop cut on a downbeat. Then::

        seam_score = (g_0 + 1 dB) / (median(g_q) + 1 dB)

    1.0: the seam changes the sound as much as the music does after the same musical context (whole bars cut
    cleanly from steady music score about 1 although the seam falls on a kick drum); below 1, less; a click, a
    level jump or a bar cut short score well above 1 (a hard cut a few percent off the bar line: 5-50). The
    1 dB terms keep near-static audio from turning tiny differences into large ratios. A one-bar loop has no
    other downbeat to compare with, so its seam is judged against weaker beats and tends to score higher.

    Args:
        loop: float audio, shape (n,) or (channels, n), at least 0.5 s.
        sr: sample rate in Hz.

    Returns:
        The score, > 0; lower is smoother.

    Raises:
        AudioParameterError: bad shape, dtype, sample rate or non-finite samples; a loop shorter than 0.5 s.
    """
    x = _as_channels(loop, name="loop")
    sr = _check_sr(sr)
    m = _mono(x).astype(np.float64)
    n = len(m)
    n_fft = _seam_filters(sr)[0]
    step, lag = n_fft // 16, 4  # frame step and flux lag (in steps)
    half = n_fft // 2 // step  # steps from a frame's centre to its edge
    frames = n // step
    if n < SEAM_MIN_S * sr:
        raise AudioParameterError(f"loop is {n / sr:.3f} s long: too short to score its seam (need {SEAM_MIN_S:g} s)")
    # context frames, one every `lag` steps: 1 s, or a quarter of a shorter loop
    context = max(2, round(min(SEAM_CONTEXT_S * sr, n / 4) / (lag * step)))
    first, last = 2 * half + lag * context, frames - 2 * half - lag + 1  # moments whose frames stay clear of the seam
    power, level = _circular_frames(m, step, sr)
    floor = 10.0 ** (-SEAM_RANGE_DB / 10)
    spec_db = 10 * np.log10(np.maximum(power, max(float(power.max()), 1e-30) * floor))
    level_db = 10 * np.log10(np.maximum(level, max(float(level.max()), 1e-30) * floor))
    flux = np.mean(np.abs(spec_db - np.roll(spec_db, lag, axis=1)), axis=0)
    change = flux + np.abs(level_db - np.roll(level_db, lag))  # c_t
    around = np.max(np.stack([np.roll(change, -k) for k in range(1 - half, half + lag)]), axis=0)  # g_p

    # squared distance of every candidate's context to the seam's, by sliding correlation per band
    here = spec_db[:, (-half - lag * np.arange(context)[::-1]) % frames]
    moments = np.arange(first, last, lag)
    sub = spec_db[:, (first - half) % lag :: lag][:, : (last - half - 1) // lag + 1]
    offset = (first - half - lag * (context - 1)) // lag  # index in `sub` of the first candidate's context start
    sq = np.convolve((sub**2).sum(axis=0), np.ones(context), mode="valid")
    cross = sum(np.correlate(sub[b], here[b], mode="valid") for b in range(sub.shape[0]))
    distance = (sq - 2 * cross)[offset : offset + len(moments)]
    picked: list[int] = []
    for q in moments[np.argsort(distance, kind="stable")]:
        if all(abs(int(q) - p) > lag * context // 2 for p in picked):
            picked.append(int(q))
            if len(picked) == 3:
                break
    reference = float(np.median(around[picked]))
    return float((around[0] + 1.0) / (reference + 1.0))


# ---------------------------------------------------------------------------------------------------------------
# cutting


def _transient(mono: npt.NDArray[np.float32], around: int, sr: int, radius_s: float = 0.035) -> int | None:
    """Where the strongest attack within ``radius_s`` of sample ``around`` begins; None if there is none.

    At 0.25 ms steps, the mean power of the next 5 ms is compared with that of the previous 10 ms (both plus a
    floor 20 dB below the loudest 5 ms, so that quiet rustle does not count); the attack starts where that
    ratio peaks, provided the peak is at least 4 (6 dB).
    """
    after_n, before_n = max(1, round(0.005 * sr)), max(1, round(0.010 * sr))
    lo, hi = max(0, around - int(radius_s * sr) - before_n), min(len(mono), around + int(radius_s * sr) + after_n)
    if hi - lo < before_n + after_n + 2:
        return None
    c = np.concatenate([[0.0], np.cumsum(mono[lo:hi].astype(np.float64) ** 2)])
    ts = np.arange(before_n, hi - lo - after_n, max(1, sr // 4000))
    after = (c[ts + after_n] - c[ts]) / after_n
    before = (c[ts] - c[ts - before_n]) / before_n
    floor = 0.01 * float(after.max())
    if floor <= 0:
        return None
    ratio = (after + floor) / (before + floor)
    i = int(np.argmax(ratio))
    return lo + int(ts[i]) if ratio[i] >= 4 else None


def _zero_crossing_before(mono: npt.NDArray[np.float32], at: int, sr: int) -> int:
    """The nearest sign change at or before ``at`` within 2 ms (``at`` if there is none)."""
    lo = max(1, at - int(0.002 * sr))
    if at <= lo:
        return at
    seg = mono[lo - 1 : at + 1]
    crossings = np.flatnonzero(np.signbit(seg[1:]) != np.signbit(seg[:-1]))
    return lo + int(crossings[-1]) if len(crossings) else at


def _blend(fading_out: Samples, fading_in: Samples) -> Samples:
    """Equal-power crossfade, corrected for the correlation r of the two segments (r clipped to 0..1).

    Gains cos/sin, divided by sqrt(1 + 2 r cos sin): plain equal power for unrelated audio (r = 0), constant
    amplitude for identical audio (r = 1), so repeating music neither dips nor swells in the middle.
    """
    n = fading_out.shape[-1]
    a, b = fading_out.astype(np.float64), fading_in.astype(np.float64)
    denom = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    r = min(1.0, max(0.0, float(np.sum(a * b)) / denom)) if denom > 0 else 0.0
    theta = (np.arange(n) + 0.5) / n * (np.pi / 2)
    g_out, g_in = np.cos(theta), np.sin(theta)
    norm = np.sqrt(1.0 + 2.0 * r * g_out * g_in)
    return ((a * g_out + b * g_in) / norm).astype(np.float32)


def _close_seam(x: Samples, start: int, length: int, fade: int) -> Samples:
    """``x[:, start:start+length]`` with its seam closed by a crossfade of ``fade`` samples.

    Preferred: the audio just before ``start`` (what precedes the loop's first downbeat in the music) fades in
    over the loop's last ``fade`` samples, so the last sample flows into the first exactly as in the source and
    the head, with its downbeat transient, is untouched. Without room before ``start``: the audio just after the
    end fades out over the head instead (the same continuity, mirrored).
    """
    out = x[:, start : start + length].copy()
    if fade <= 0:
        return out
    if start >= fade:
        out[:, -fade:] = _blend(x[:, start + length - fade : start + length], x[:, start - fade : start])
    else:
        out[:, :fade] = _blend(x[:, start + length : start + length + fade], x[:, start : start + fade])
    return out


def _bar_samples(bars: int, beats_per_bar: int, bpm: float, sr: int) -> int:
    return round(bars * beats_per_bar * 60.0 / bpm * sr)


def _junction_change(tail: npt.NDArray[np.floating], head: npt.NDArray[np.floating], sr: int) -> float:
    """:func:`seam_score`'s ``g_0`` (dB) for mono ``tail`` followed by ``head``, from 2 frames of audio each side.

    The dB floors are relative to this excerpt rather than to a whole loop; used to compare candidate cuts.
    """
    n_fft, mel = _seam_filters(sr)
    step, lag = n_fft // 16, 4
    half = n_fft // 2 // step
    z = np.concatenate([tail[-2 * n_fft :], head[: 2 * n_fft]]).astype(np.float64)
    spec = np.abs(librosa.stft(z, n_fft=n_fft, hop_length=step, center=False)) ** 2  # frame i centred at i*step+n_fft/2
    # einsum, not matmul: for a product this small BLAS only adds thread hand-off (milliseconds on a busy machine)
    power, level = np.einsum("bf,ft->bt", mel, spec), (2 * spec.sum(axis=0) - spec[0] - spec[-1]) / n_fft**2
    floor = 10.0 ** (-SEAM_RANGE_DB / 10)
    spec_db = 10 * np.log10(np.maximum(power, max(float(power.max()), 1e-30) * floor))
    level_db = 10 * np.log10(np.maximum(level, max(float(level.max()), 1e-30) * floor))
    change = np.mean(np.abs(spec_db[:, lag:] - spec_db[:, :-lag]), axis=0) + np.abs(level_db[lag:] - level_db[:-lag])
    junction = (2 * n_fft - n_fft // 2) // step  # the frame centred on the junction; change[t - lag] is into t
    return float(change[junction - (half - 1) - lag : junction + half].max())


def _pick_start(
    x: Samples, mono: npt.NDArray[np.float32], tempo: TempoInfo, sr: int, length: int, fade: int
) -> int | None:
    """The first input sample of the best ``length``-sample loop starting on a downbeat; None if none fits.

    Each downbeat gives up to three cut points: 2 ms before its attack; 2 ms before whichever comes first of its
    attack and the attack one loop later (so that none of the next downbeat's hits ends up in the loop's tail);
    2 ms before the grid's downbeat. Each is moved back to a zero crossing. Of the cuts with room for the seam
    crossfade, the ``SHORTLIST`` whose finished seams change the sound least (:func:`seam_score`'s ``g_0``, from
    a few frames) are scored in full, and the best :func:`seam_score` wins: with real timing jitter, some
    downbeats' hits line up with the next loop's better than others.
    """
    n = len(mono)
    pre = round(PRE_ONSET_S * sr)
    candidates: list[tuple[float, int]] = []
    for t in tempo.downbeat_times:
        d = round(t * sr)
        if d + length > n:
            break
        head = _transient(mono, d, sr)
        tail = _transient(mono, d + length, sr) if d + length < n else None
        h = d if head is None else head
        cuts = {h, d} if tail is None else {h, d, min(h, tail - length)}
        for s in sorted({_zero_crossing_before(mono, max(0, cut - pre), sr) for cut in cuts}):
            if s + length > n or (s < fade and s + length + fade > n):
                continue
            loop = _close_seam(mono[None, :], s, length, fade)[0]
            candidates.append((_junction_change(loop, loop, sr), s))
    if not candidates:
        return None
    shortlist = [s for _, s in sorted(candidates)[:SHORTLIST]]
    return min(shortlist, key=lambda s: seam_score(_close_seam(x, s, length, fade), sr=sr))


def _stretch(x: Samples, rate: float, sr: int) -> Samples:
    """Time-stretch (channels, n) audio by ``rate`` (> 1: faster), per channel, with librosa's phase vocoder.

    Frames of ~32 ms (1024 samples at 32 kHz) keep drums sharper than librosa's default 2048. Output sample
    ``i`` corresponds to input sample ``i * rate``.
    """
    n_fft = 1 << round(math.log2(0.032 * sr))
    return np.stack(
        [librosa.effects.time_stretch(ch, rate=rate, n_fft=n_fft, hop_length=n_fft // 4) for ch in x]
    ).astype(np.float32)


def make_loop(
    y: npt.NDArray[np.floating],
    *,
    sr: int,
    bars: int | None = None,
    min_duration: float | None = None,
    max_duration: float | None = None,
    target_bpm: float | None = None,
    stretch: bool = False,
    beats_per_bar: int = 4,
    crossfade_ms: float = 20.0,
) -> LoopResult:
    """Cut a seamless loop of whole bars out of music, optionally time-stretched to a target tempo.

    The tempo and downbeats come from :func:`detect_tempo` (``target_bpm`` doubles as its octave hint). The loop
    is ``bars`` whole bars at the detected tempo: exactly ``bars`` if given, otherwise the largest power of two
    (1, 2, 4, 8, 16) whose duration lies within [``min_duration``, ``max_duration``] (when given) and that fits in
    the audio. It starts on a downbeat, 2 ms before its attack (or before the attack one loop later, if that one
    comes early, or before the grid's downbeat), moved back onto a zero crossing; of all these cuts, the three
    whose finished seams change the sound least are scored with :func:`seam_score` and the best is used. The
    length is exact (``round(bars * beats_per_bar * 60 / bpm * sr)`` samples), and the seam is closed by
    crossfading the audio that precedes the first downbeat into the loop's last ``crossfade_ms`` (equal power,
    corrected for correlation; the audio after the end into the head when the first downbeat has nothing before
    it), so the loop's last sample leads into its first as in the source.
    With ``stretch``, the whole input is first time-stretched per channel to ``target_bpm`` (librosa's phase
    vocoder, ~32 ms frames) and the loop is cut from the stretched audio the same way, so its length is exact at
    the target tempo and its seam is chosen on what the user hears.

    Args:
        y: float audio, shape (n,) mono or (channels, n); the result has the same layout.
        sr: sample rate in Hz.
        bars: exact number of bars (any whole number 1..256), or None to choose a power of two.
        min_duration: shortest acceptable loop, seconds (at the final tempo).
        max_duration: longest acceptable loop, seconds (at the final tempo).
        target_bpm: tempo to stretch to (with ``stretch``) and the octave hint for detection, 40-300.
        stretch: time-stretch the loop to exactly ``target_bpm`` (at most 2x either way).
        beats_per_bar: beats in one bar, 1..12.
        crossfade_ms: seam crossfade length in milliseconds, 0..200 (0: a plain cut at the zero crossing).

    Returns:
        The loop and what was found (:class:`LoopResult`).

    Raises:
        AudioParameterError: bad shape, dtype, sample rate or non-finite samples; silence; noise (no reliable
            tempo); audio shorter than one bar or than the bars asked for; ``min_duration`` > ``max_duration`` or
            no power-of-two bar count within them; ``target_bpm`` outside 40-300; ``stretch`` without
            ``target_bpm`` or beyond 2x; bad ``bars``, ``beats_per_bar`` or ``crossfade_ms``.
    """
    x = _as_channels(y)
    sr = _check_sr(sr)
    beats_per_bar = _check_int("beats_per_bar", beats_per_bar, 1, 12)
    if bars is not None:
        bars = _check_int("bars", bars, 1, 256)
    min_duration = _check_seconds("min_duration", min_duration)
    max_duration = _check_seconds("max_duration", max_duration)
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise AudioParameterError(f"min_duration={min_duration:g} s is greater than max_duration={max_duration:g} s")
    target_bpm = _check_bpm("target_bpm", target_bpm)
    if stretch and target_bpm is None:
        raise AudioParameterError("stretch=True needs a target_bpm to stretch to")
    if (
        isinstance(crossfade_ms, bool)
        or not isinstance(crossfade_ms, int | float | np.integer | np.floating)
        or not 0 <= crossfade_ms <= 200
    ):
        raise AudioParameterError(f"crossfade_ms={crossfade_ms!r} must be a number of milliseconds in 0..200")

    mono = _mono(x)
    _check_not_silent(mono)
    _check_long_enough(mono, sr)
    an = _analyse(mono, sr)
    tempo = _tempo(an, mono, sr, beats_per_bar=beats_per_bar, bpm_hint=target_bpm)
    final_bpm = target_bpm if stretch and target_bpm is not None else tempo.bpm
    rate = final_bpm / tempo.bpm
    if not 1 / MAX_STRETCH <= rate <= MAX_STRETCH:
        raise AudioParameterError(
            f"stretching {tempo.bpm:.1f} bpm to target_bpm={target_bpm:g} is a factor of {rate:.2f}, "
            f"outside {1 / MAX_STRETCH:g}..{MAX_STRETCH:g}"
        )
    fade = round(crossfade_ms / 1000 * sr)
    bar_s = beats_per_bar * 60.0 / final_bpm

    shortest = max(SEAM_MIN_S, min_duration or 0.0)
    longest = math.inf if max_duration is None else max_duration

    def fits(count: int) -> bool:  # at the final tempo, and before any stretch
        seconds = (count * bar_s, count * beats_per_bar * 60.0 / tempo.bpm)
        return shortest - 1e-9 <= seconds[0] <= longest + 1e-9 and seconds[1] >= SEAM_MIN_S

    limits = (
        f"{shortest:g}..{longest:g} s (min_duration={min_duration}, max_duration={max_duration}; loops last >= 0.5 s)"
    )
    if bars is not None:
        if not fits(bars):
            raise AudioParameterError(
                f"bars={bars} lasts {bars * bar_s:.2f} s at {final_bpm:.1f} bpm: outside {limits}"
            )
        choices = [bars]
    else:
        choices = [b for b in reversed(POWER_OF_TWO_BARS) if fits(b)]
        if not choices:
            raise AudioParameterError(
                f"no power-of-two bar count (1-16) fits {limits} at {final_bpm:.1f} bpm: one bar lasts {bar_s:.2f} s"
            )

    # With stretch, the whole input is stretched first and the loop cut from that (grid scaled by 1 / rate), so
    # that the seam is chosen and closed on the audio the user will hear.
    source, source_mono, grid = x, mono, tempo
    if stretch:
        source = _stretch(x, rate, sr)
        source_mono = _mono(source)
        grid = TempoInfo(
            bpm=final_bpm,
            beat_times=tuple(t / rate for t in tempo.beat_times),
            downbeat_times=tuple(t / rate for t in tempo.downbeat_times),
            confidence=tempo.confidence,
            beats_per_bar=beats_per_bar,
        )
    for count in choices:
        length = _bar_samples(count, beats_per_bar, final_bpm, sr)
        start = _pick_start(source, source_mono, grid, sr, length, fade)
        if start is not None:
            break
    else:
        fewest = choices[-1]
        what = f"the requested {bars} bars" if bars is not None else "one bar" if fewest == 1 else f"{fewest} bars"
        raise AudioParameterError(
            f"audio is {x.shape[1] / sr:.2f} s long, shorter than {what} at {tempo.bpm:.1f} bpm "
            f"({_bar_samples(fewest, beats_per_bar, tempo.bpm, sr) / sr:.2f} s from a downbeat, "
            f"plus {crossfade_ms:g} ms for the seam)"
        )

    loop = _close_seam(source, start, length, fade)
    return LoopResult(
        samples=loop[0] if y.ndim == 1 else loop,
        sample_rate=sr,
        bpm_detected=tempo.bpm,
        bpm=final_bpm,
        bars=count,
        beats_per_bar=beats_per_bar,
        start_sample=round(start * rate),
        end_sample=round(start * rate) + _bar_samples(count, beats_per_bar, tempo.bpm, sr),
        seam_score=seam_score(loop, sr=sr),
        key=_key(mono, sr),  # of the whole input: more notes to go on than one short loop
        stretched=bool(stretch),
    )


def naive_loop(y: npt.NDArray[np.floating], *, sr: int, seconds: float) -> Samples:
    """The baseline: the first ``seconds`` of ``y``, hard-cut (no beat alignment, no crossfade).

    Args:
        y: float audio, shape (n,) or (channels, n); the result has the same layout.
        sr: sample rate in Hz.
        seconds: loop length; at most the audio's duration.

    Returns:
        ``y[..., :round(seconds * sr)]`` as float32.

    Raises:
        AudioParameterError: bad audio or sample rate; ``seconds`` not positive or longer than the audio.
    """
    x = _as_channels(y)
    sr = _check_sr(sr)
    secs = _check_seconds("seconds", seconds)
    n = round(float(secs or 0) * sr)
    if n > x.shape[1]:
        raise AudioParameterError(f"seconds={seconds!r} is longer than the audio ({x.shape[1] / sr:.2f} s)")
    out = x[:, :n].copy()
    return out[0] if y.ndim == 1 else out
