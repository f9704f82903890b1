"""Grooves whose bar phase is hard to hear from the drums alone (ground truth for downbeat tests and benches).

``tests/support/synth.py`` accents the kick on beat 1 (beat 3's is 70 %), which gives the downbeat away. Here the
kick is equally loud on beats 1 and 3 (snare on 2 and 4), as in much real music, so only the harmony, changing at
the bar line, tells the one from the three; without chords even a musician could not say which it is.
"""

from __future__ import annotations

import numpy as np

from tests.support.synth import Render, _add, _hat, _kick, _midi_hz, _snare, _tone, render_beat


def even_kick_groove(
    *,
    bpm: float,
    bars: int,
    chords: bool = True,
    bass: bool = True,
    lead_in_s: float = 0.0,
    jitter_ms: float = 3.0,
    key: str = "A minor",
    sample_rate: int = 32_000,
    rng: np.random.Generator,
) -> Render:
    """``bars`` bars of 4/4 at ``bpm``: kicks of equal weight on 1 and 3, snare on 2 and 4, hats on eighths, and
    (optionally) synth.py's chords and bass, whose chord changes only at the bar line.

    Returns:
        The render (mono, peak 0.9) and its true downbeats.
    """
    sr = sample_rate
    pitched = (
        render_beat(
            bpm=bpm,
            bars=bars,
            sample_rate=sr,
            key=key,
            lead_in_s=lead_in_s,
            jitter_ms=jitter_ms,
            drums=False,
            bass=bass,
            chords=chords,
            rng=rng,
        )
        if (chords or bass)
        else None
    )
    beat = 60.0 / bpm
    n = round((lead_in_s + bars * 4 * beat + 0.5) * sr)
    out = np.zeros((1, n))
    if pitched is not None:
        out += 0.6 * pitched.samples[:, :n].astype(np.float64)

    def at(seconds: float) -> int:
        offset = float(np.clip(rng.normal(0.0, jitter_ms / 1000), -2 * jitter_ms / 1000, 2 * jitter_ms / 1000))
        return round((lead_in_s + seconds + (offset if jitter_ms > 0 else 0.0)) * sr)

    kick = _kick(sr)
    for b in range(bars * 4):
        _add(out, 0.8 * kick if b % 2 == 0 else _snare(sr, rng), at(b * beat))
        for half in (0.0, 0.5):
            _add(out, _hat(sr, rng), at((b + half) * beat))
    out *= 0.9 / max(float(np.abs(out).max()), 1e-9)
    downbeats = lead_in_s + 4 * beat * np.arange(bars)
    tonic, mode = key.split()
    return Render(out.astype(np.float32), sr, float(bpm), 4, downbeats, tonic, mode)


def cross_rhythm(*, bpm: float, other_bpm: float, level: float, bars: int = 8, seed: int = 5) -> Render:
    """synth.py's drums at ``bpm`` under a plucked A3 stab every beat of ``other_bpm``, ``level`` times as loud.

    Two pulses at once (133 against 100 bpm: 4 against 3): which is "the" tempo is a matter of taste, and
    librosa's estimate follows the louder one; a tempo the user names must then be the one used.
    """
    sr = 32_000
    r = render_beat(bpm=bpm, bars=bars, chords=False, bass=False, rng=np.random.default_rng(seed), sample_rate=sr)
    out = r.samples.astype(np.float64)
    n = int(0.12 * sr)
    stab = _tone(_midi_hz(57), n, sr, 6) * np.exp(-np.arange(n) / (0.04 * sr))
    for k in range(int((out.shape[-1] / sr - 0.5) * other_bpm / 60) + 1):
        _add(out, level * stab[None], round(k * 60 / other_bpm * sr))
    out *= 0.9 / max(float(np.abs(out).max()), 1e-9)
    return Render(out.astype(np.float32), sr, float(bpm), r.beats_per_bar, r.downbeats, r.tonic, r.mode)
