"""Where an attack begins in the waveform: the tempo grid is aligned to attacks, and loops are cut just before one.

The onset envelope that beat tracking uses peaks a few frames after a hit (how many depends on the sound), so
sample-accurate positions come from the waveform itself, here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def transient(mono: npt.NDArray[np.float32], around: int, *, sr: int, radius_s: float = 0.035) -> int | None:
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
