"""Seamless loops of whole bars, cut on the refined beat grid, optionally time-stretched to a target tempo.

The reference system (audio-loop-gen) takes librosa's quantised tempo at face value and hard-cuts from the first
tracked beat; :func:`naive_loop` is that kind of cut, for the benchmark. :func:`make_loop` instead cuts whole
bars on downbeats (:mod:`generation.analysis.tempo`) just before the downbeat's transient, and closes the seam with
a correlation-aware equal-power crossfade, so that the loop's length is exact and its seam sounds like the rest
of the music (:func:`generation.loops.seam.seam_score`).

Pure functions: numpy in, numpy out. Nothing here reads or writes files or touches torch. Audio is float
(channels, n) or mono (n,); every cut is applied to all channels alike, so stereo is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, cast

import librosa
import numpy as np
import numpy.typing as npt

from beatforge.bounds import POWER_OF_TWO_BARS
from generation.analysis.checks import (
    as_channels,
    check_bpm,
    check_int,
    check_long_enough,
    check_not_silent,
    check_seconds,
    check_sr,
    to_mono,
)
from generation.analysis.key import KeyInfo, key_of
from generation.analysis.tempo import SIGNAL_CUES, TempoInfo, tempo_of
from generation.analysis.transients import transient
from generation.audio.signal import Samples
from generation.errors import AudioParameterError
from generation.loops.seam import SEAM_MIN_S, junction_change, seam_score

MAX_STRETCH = 2.0  # time-stretch factors beyond 0.5x..2x sound like a different piece
PRE_ONSET_S = 0.002  # cut this long before the downbeat's transient
SHORTLIST = 3  # make_loop scores this many candidate cuts in full


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
        downbeat_confidence: how sure the detection is that the loop starts on beat 1 of a bar, 0..1
            (:attr:`TempoInfo.downbeat_confidence`); below ``DOWNBEAT_CONFIDENT`` the user is told to check it.
        tempo_note: why ``bpm_detected`` is not the ``target_bpm`` asked for (the audio's pulse disagrees), or None.
        downbeats_from: what placed the bar lines (:attr:`TempoInfo.downbeats_from`).
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
    downbeat_confidence: float = 1.0
    tempo_note: str | None = None
    downbeats_from: str = SIGNAL_CUES

    @property
    def duration_s(self) -> float:
        return int(self.samples.shape[-1]) / self.sample_rate

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
            "downbeat_confidence": round(float(self.downbeat_confidence), 3),
            "tempo_note": self.tempo_note,
            "downbeats_from": self.downbeats_from,
        }


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
    return cast(Samples, ((a * g_out + b * g_in) / norm).astype(np.float32))


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
        head = transient(mono, d, sr=sr)
        tail = transient(mono, d + length, sr=sr) if d + length < n else None
        h = d if head is None else head
        cuts = {h, d} if tail is None else {h, d, min(h, tail - length)}
        for s in sorted({_zero_crossing_before(mono, max(0, cut - pre), sr) for cut in cuts}):
            if s + length > n or (s < fade and s + length + fade > n):
                continue
            loop = _close_seam(mono[None, :], s, length, fade)[0]
            candidates.append((junction_change(loop, loop, sr=sr), s))
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

    The tempo and downbeats come from :func:`~generation.analysis.tempo.detect_tempo` (``target_bpm`` doubles as its
    tempo hint: the grid is searched near it and its simple ratios, and ``tempo_note`` says when the audio's pulse
    disagrees; ``downbeat_confidence`` says how sure the bar phase is). The loop is ``bars`` whole bars at the
    detected tempo: exactly ``bars`` if given, otherwise the largest power of two (1, 2, 4, 8, 16) whose duration
    lies within [``min_duration``, ``max_duration``] (when given) and that fits in the audio. It starts on a
    downbeat, 2 ms before its attack (or before the attack one loop later, if that one comes early, or before the
    grid's downbeat), moved back onto a zero crossing; of all these cuts, the three whose finished seams change
    the sound least are scored with :func:`seam_score` and the best is used. The length is exact
    (``round(bars * beats_per_bar * 60 / bpm * sr)`` samples), and the seam is closed by crossfading the audio
    that precedes the first downbeat into the loop's last ``crossfade_ms`` (equal power, corrected for
    correlation; the audio after the end into the head when the first downbeat has nothing before it), so the
    loop's last sample leads into its first as in the source.
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
    x = as_channels(y)
    sr = check_sr(sr)
    beats_per_bar = check_int("beats_per_bar", beats_per_bar, 1, 12)
    if bars is not None:
        bars = check_int("bars", bars, 1, 256)
    min_duration = check_seconds("min_duration", min_duration)
    max_duration = check_seconds("max_duration", max_duration)
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise AudioParameterError(f"min_duration={min_duration:g} s is greater than max_duration={max_duration:g} s")
    target_bpm = check_bpm("target_bpm", target_bpm)
    if stretch and target_bpm is None:
        raise AudioParameterError("stretch=True needs a target_bpm to stretch to")
    if (
        isinstance(crossfade_ms, bool)
        or not isinstance(crossfade_ms, int | float | np.integer | np.floating)
        or not 0 <= crossfade_ms <= 200
    ):
        raise AudioParameterError(f"crossfade_ms={crossfade_ms!r} must be a number of milliseconds in 0..200")

    mono = to_mono(x)
    check_not_silent(mono)
    check_long_enough(mono, sr)
    tempo = tempo_of(mono, sr=sr, beats_per_bar=beats_per_bar, bpm_hint=target_bpm)
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
        source_mono = to_mono(source)
        grid = replace(
            tempo,
            bpm=final_bpm,
            beat_times=tuple(t / rate for t in tempo.beat_times),
            downbeat_times=tuple(t / rate for t in tempo.downbeat_times),
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
        key=key_of(mono, sr=sr),  # of the whole input: more notes to go on than one short loop
        stretched=bool(stretch),
        downbeat_confidence=tempo.downbeat_confidence,
        tempo_note=tempo.tempo_note,
        downbeats_from=tempo.downbeats_from,
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
    x = as_channels(y)
    sr = check_sr(sr)
    secs = check_seconds("seconds", seconds)
    n = round(float(secs or 0) * sr)
    if n > x.shape[1]:
        raise AudioParameterError(f"seconds={seconds!r} is longer than the audio ({x.shape[1] / sr:.2f} s)")
    out = x[:, :n].copy()
    return out[0] if y.ndim == 1 else out
