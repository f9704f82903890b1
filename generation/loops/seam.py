"""How much a loop's seam changes the sound, relative to how the music itself changes: what loops are rated by.

:func:`seam_score` is the benchmark's measure (bench/loops.py) and :func:`junction_change`, its quick form on a
few frames, is how :func:`generation.loops.cut.make_loop` shortlists candidate cuts before scoring them in full.

Pure functions: numpy in, numpy out.
"""

from __future__ import annotations

import functools
import math

import librosa
import numpy as np
import numpy.typing as npt

from generation.analysis.checks import as_channels, check_sr, to_mono
from generation.errors import AudioParameterError

SEAM_RANGE_DB = 60.0  # seam_score ignores what is more than this far below the loop's loudest
SEAM_CONTEXT_S = 1.0  # seam_score compares the seam with the moments whose preceding this-long context is closest
SEAM_MIN_S = 0.5  # shortest loop seam_score rates


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
    x = as_channels(loop, name="loop")
    sr = check_sr(sr)
    m = to_mono(x).astype(np.float64)
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


def junction_change(tail: npt.NDArray[np.floating], head: npt.NDArray[np.floating], *, sr: int) -> float:
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
