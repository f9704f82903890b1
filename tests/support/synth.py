"""A tiny drum-machine + bass synthesiser with a known tempo, bar grid and key (ground truth for loop tests).

Everything is rendered from scratch with numpy, so the tests never load audio files:

* drums: kick on beats 1 and 3 (beat 1 accented), snare on 2 and 4, closed hi-hat on every eighth note;
* bass: the root of each bar's chord on the downbeat, then (from 4/4 on) the chord's third on the middle beat;
* chords (optional): the bar's triad, softly, in the fourth octave.

Minor keys use i-iv-V-i (the raised leading tone makes the key unambiguous), major keys I-IV-V-I.
With ``jitter_ms`` every hit and note is moved by its own random offset (normal, that standard deviation,
clipped to two of them), like a human drummer or a generative model, while the tempo and grid stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# (semitones above the tonic of each bar's chord root, chord quality) for one four-bar phrase
_PROGRESSIONS = {
    "minor": ((0, "minor"), (5, "minor"), (7, "major"), (0, "minor")),
    "major": ((0, "major"), (5, "major"), (7, "major"), (0, "major")),
}
_TRIADS = {"major": (0, 4, 7), "minor": (0, 3, 7)}


@dataclass(frozen=True)
class Render:
    """A rendered beat and its ground truth.

    Attributes:
        samples: float32 audio, shape (channels, n), peak 0.9.
        sample_rate: Hz.
        bpm: the exact tempo the grid was laid on.
        beats_per_bar: beats in each bar.
        downbeats: the start of every bar in seconds (before jitter), shape (bars,).
        tonic: the key's tonic, e.g. "A".
        mode: "major" or "minor".
    """

    samples: npt.NDArray[np.float32]
    sample_rate: int
    bpm: float
    beats_per_bar: int
    downbeats: npt.NDArray[np.float64]
    tonic: str
    mode: str

    @property
    def mono(self) -> npt.NDArray[np.float32]:
        """The channel mean, shape (n,)."""
        return self.samples.mean(axis=0)

    @property
    def bar_seconds(self) -> float:
        return self.beats_per_bar * 60.0 / self.bpm


def _decay(n: int, sr: int, seconds: float) -> npt.NDArray[np.float64]:
    return np.exp(-np.arange(n) / (seconds * sr))


def _kick(sr: int) -> npt.NDArray[np.float64]:
    n = int(0.35 * sr)
    t = np.arange(n) / sr
    freq = 50.0 + 100.0 * np.exp(-t / 0.04)  # 150 Hz sweeping down to 50 Hz
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return np.sin(phase) * _decay(n, sr, 0.12)


def _snare(sr: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    n = int(0.2 * sr)
    t = np.arange(n) / sr
    noise = np.diff(rng.standard_normal(n + 1))  # first difference: tilted towards the highs
    return 0.35 * noise * _decay(n, sr, 0.05) + 0.5 * np.sin(2 * np.pi * 185.0 * t) * _decay(n, sr, 0.04)


def _hat(sr: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    n = int(0.06 * sr)
    noise = np.diff(rng.standard_normal(n + 2), n=2)  # second difference: mostly above 5 kHz
    return 0.08 * noise * _decay(n, sr, 0.012)


def _tone(freq: float, n: int, sr: int, harmonics: int) -> npt.NDArray[np.float64]:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for h in range(1, harmonics + 1):
        if h * freq < sr / 2:
            out += np.sin(2 * np.pi * h * freq * t) / h
    attack, release = int(0.005 * sr), int(0.04 * sr)
    env = np.ones(n)
    env[:attack] = np.linspace(0.0, 1.0, attack)
    env[-release:] = np.linspace(1.0, 0.0, release)
    return out * env


def _midi_hz(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _add(out: npt.NDArray[np.float64], sound: npt.NDArray[np.float64], at: int) -> None:
    if at >= out.shape[-1]:
        return
    src = sound[..., max(0, -at) :]
    at = max(0, at)
    end = min(out.shape[-1], at + src.shape[-1])
    out[..., at:end] += src[..., : end - at]


def render_beat(
    *,
    bpm: float,
    bars: int,
    sample_rate: int = 32_000,
    key: str = "A minor",
    beats_per_bar: int = 4,
    jitter_ms: float = 0.0,
    lead_in_s: float = 0.0,
    drums: bool = True,
    bass: bool = True,
    chords: bool = False,
    stereo: bool = False,
    rng: np.random.Generator,
) -> Render:
    """Render ``bars`` bars at exactly ``bpm``, starting on a downbeat after ``lead_in_s`` seconds of silence.

    Args:
        bpm: tempo in beats per minute.
        bars: number of bars; the audio lasts ``lead_in_s + bars * beats_per_bar * 60 / bpm`` seconds plus 0.5 s
            of decay.
        sample_rate: Hz.
        key: e.g. "A minor", "E major".
        beats_per_bar: beats per bar (kick on beat 1 and, from 4/4 on, the middle beat).
        jitter_ms: standard deviation of each hit's random timing offset, in milliseconds.
        lead_in_s: silence before the first downbeat, in seconds.
        drums, bass, chords: which parts to render.
        stereo: two channels (hats and chords panned apart) instead of one.
        rng: the random generator (noise bursts and jitter).

    Returns:
        The render and its ground truth.
    """
    tonic, mode = key.split()
    root = 36 + NOTE_NAMES.index(tonic)  # bass octave: C2..B2
    sr = sample_rate
    beat = 60.0 / bpm
    bar = beats_per_bar * beat
    n = round((lead_in_s + bars * bar + 0.5) * sr)
    channels = 2 if stereo else 1
    out = np.zeros((channels, n))
    pan_hat = np.array([[0.8], [1.2]]) if stereo else np.ones((1, 1))
    pan_pad = np.array([[1.15], [0.85]]) if stereo else np.ones((1, 1))

    def at(seconds: float) -> int:
        if jitter_ms > 0:
            seconds += float(np.clip(rng.normal(0.0, jitter_ms / 1000), -2 * jitter_ms / 1000, 2 * jitter_ms / 1000))
        return round((lead_in_s + seconds) * sr)

    kick = _kick(sr)
    progression = _PROGRESSIONS[mode]
    for b in range(bars):
        t0 = b * bar
        if drums:
            for i in range(beats_per_bar):
                if i == 0:
                    _add(out, kick, at(t0))
                elif beats_per_bar >= 4 and i == beats_per_bar // 2:
                    _add(out, 0.7 * kick, at(t0 + i * beat))
                else:
                    _add(out, _snare(sr, rng), at(t0 + i * beat))
                for half in (0.0, 0.5):
                    _add(out, pan_hat * _hat(sr, rng), at(t0 + (i + half) * beat))
        step, quality = progression[b % len(progression)]
        if bass:  # the root, held; from 4/4 on, the chord's third takes over on the middle beat
            third = root + step + _TRIADS[quality][1]
            if beats_per_bar >= 4:
                half = beats_per_bar // 2
                _add(out, 0.35 * _tone(_midi_hz(root + step), int((half - 0.05) * beat * sr), sr, 4), at(t0))
                _add(out, 0.3 * _tone(_midi_hz(third), int((half - 0.05) * beat * sr), sr, 4), at(t0 + half * beat))
            else:
                _add(out, 0.35 * _tone(_midi_hz(root + step), int(0.95 * bar * sr), sr, 4), at(t0))
        if chords:
            pad = sum(_tone(_midi_hz(root + 24 + step + iv), int((bar + 0.03) * sr), sr, 3) for iv in _TRIADS[quality])
            _add(out, pan_pad * (0.2 * pad), at(t0))

    out *= 0.9 / max(float(np.abs(out).max()), 1e-9)
    downbeats = lead_in_s + bar * np.arange(bars)
    return Render(out.astype(np.float32), sr, float(bpm), beats_per_bar, downbeats, tonic, mode)
