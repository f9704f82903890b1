"""Ground truth for MIDI transcription: whole songs rendered from a known score, and the scores to rate a transcription.

The renderer plays a score it wrote itself, so every drum hit and every note is known exactly (after jitter):

* drums: kick on 1 and the "and" of 3 (some bars add a pickup on the "a" of 2 or the "and" of 4, or put the second
  kick on 3), snare on 2 and 4, closed hi-hat on every eighth note (off-beats softer);
* bass: octave 2 (MIDI 36-52), a few notes per bar from the bar's chord (the root on the downbeat);
* melody: a monophonic lead in octaves 4-5 (MIDI 60-84), several notes per bar, chord tones on the beat and a
  random walk on the scale between them;
* chords (optional): the bar's triad held softly around middle C. They are *not* in the truth on purpose: a
  pad is what a real beat puts next to the lead, and a transcriber that reports it as melody should pay for it
  in precision.

The instruments are those of ``tests/synth.py`` (the loop tests' drum machine), reused so both ground truths
sound alike. Minor keys use i-iv-V-i, major keys I-IV-V-I, as there.

The scorers wrap mir_eval, the reference implementation of the MIREX transcription and onset metrics, so the
numbers are comparable with published ones: a note counts when its onset is within ``onset_tolerance`` of a
reference note's and its pitch within 50 cents (offsets are ignored: basic-pitch's note ends are the least
reliable part of its output and a beat's MIDI is mostly about where notes start); a drum hit counts when it is
within ``window`` of a reference hit of the same class (the caller filters by class).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import mir_eval
import numpy as np
import numpy.typing as npt

from tests.support.synth import _PROGRESSIONS, _TRIADS, NOTE_NAMES, _add, _hat, _kick, _midi_hz, _snare, _tone

DrumName = Literal["kick", "snare", "hat"]
DRUM_NAMES: tuple[DrumName, ...] = ("kick", "snare", "hat")
BASS_RANGE = (36, 52)  # MIDI, inclusive: E1..E3 would be a real bass's; octave 2 keeps it clear of the lead
MELODY_RANGE = (60, 84)  # MIDI, inclusive: C4..C6

_SCALES = {"minor": (0, 2, 3, 5, 7, 8, 10), "major": (0, 2, 4, 5, 7, 9, 11)}
# kick positions in sixteenths of a bar; the first is the plain pattern, the others are the variations
_KICKS = ((0, 10), (0, 7, 10), (0, 10, 14), (0, 8))
_SNARES = (4, 12)
# note onsets in eighths of a bar; each note lasts (almost) until the next onset or the bar line
_BASS_RHYTHMS = ((0, 3, 4, 6), (0, 4), (0, 2, 4, 6), (0, 3, 6))
_MELODY_RHYTHMS = ((0, 2, 3, 4, 6), (0, 1, 2, 4, 5, 6), (0, 2, 4, 5, 7), (0, 3, 4, 6))

NoteTuple = tuple[float, float, int]  # (start_s, end_s, MIDI pitch)


class Rendered:
    """What every rendered test song offers beside its ``samples`` (channels, n) and ``sample_rate``."""

    samples: npt.NDArray[np.float32]
    sample_rate: int

    @property
    def mono(self) -> npt.NDArray[np.float32]:
        """The channel mean, shape (n,)."""
        return self.samples.mean(axis=0)

    @property
    def duration_s(self) -> float:
        return self.samples.shape[-1] / self.sample_rate


@dataclass(frozen=True)
class Song(Rendered):
    """A rendered song and its score.

    Attributes:
        samples: float32 audio, shape (channels, n), peak 0.9.
        sample_rate: Hz.
        bpm: the exact tempo of the grid (before jitter).
        key: e.g. "A minor".
        drums: (time_s, "kick" | "snare" | "hat") for every hit, sorted by time.
        bass: (start_s, end_s, MIDI pitch) for every bass note, sorted by start.
        melody: (start_s, end_s, MIDI pitch) for every lead note, sorted by start (never overlapping).
    """

    samples: npt.NDArray[np.float32]
    sample_rate: int
    bpm: float
    key: str
    drums: list[tuple[float, DrumName]]
    bass: list[NoteTuple]
    melody: list[NoteTuple]

    def drum_times(self, drum: str) -> list[float]:
        """The times of one class's hits, sorted."""
        return [t for t, name in self.drums if name == drum]


@dataclass
class _Take:
    """The buffer render_song plays into and the truth of every event played, with the song's one random source."""

    out: npt.NDArray[np.float64]
    sample_rate: int
    rng: np.random.Generator
    jitter_ms: float
    drums: list[tuple[float, DrumName]] = field(default_factory=list)
    bass: list[NoteTuple] = field(default_factory=list)
    melody: list[NoteTuple] = field(default_factory=list)

    def at(self, seconds: float) -> float:
        """The grid time moved by this event's jitter (never before 0 s)."""
        if self.jitter_ms > 0:
            limit = 2 * self.jitter_ms / 1000
            seconds += float(np.clip(self.rng.normal(0.0, self.jitter_ms / 1000), -limit, limit))
        return max(0.0, seconds)

    def play(self, sound: npt.NDArray[np.float64], seconds: float) -> None:
        _add(self.out, sound, round(seconds * self.sample_rate))


def _pan(stereo: bool, left: float, right: float) -> npt.NDArray[np.float64]:
    return np.array([[left], [right]]) if stereo else np.ones((1, 1))


def _lead_pitches(tonic_pc: int, scale: Sequence[int]) -> list[int]:
    """The lead's pitches: the scale spread over MELODY_RANGE, so a degree is an index into this list."""
    pitches = [p for octave in range(4, 8) for step in scale if MELODY_RANGE[0] <= (p := 12 * octave + tonic_pc + step)]
    return [p for p in pitches if p <= MELODY_RANGE[1]]


def _play_drums(
    take: _Take,
    *,
    t0: float,
    bar_index: int,
    sixteenth: float,
    kick: npt.NDArray[np.float64],
    pan_hat: npt.NDArray[np.float64],
) -> None:
    sr, rng = take.sample_rate, take.rng
    kicks = _KICKS[0] if bar_index % 4 == 0 else _KICKS[int(rng.integers(len(_KICKS)))]
    hits: list[tuple[int, DrumName, float]] = [(s, "kick", 1.0 if s == 0 else 0.85) for s in kicks]
    hits += [(s, "snare", 1.0) for s in _SNARES]
    hits += [(s, "hat", 1.0 if s % 4 == 0 else 0.7) for s in range(0, 16, 2)]
    for s, name, gain in hits:
        t = take.at(t0 + s * sixteenth)
        if name == "kick":
            take.play(gain * kick, t)
        elif name == "snare":
            take.play(gain * _snare(sr, rng), t)
        else:
            take.play(pan_hat * (gain * _hat(sr, rng)), t)
        take.drums.append((t, name))


def _play_bass(take: _Take, *, t0: float, root_pc: int, triad: Sequence[int], eighth: float) -> None:
    sr, rng = take.sample_rate, take.rng
    root = BASS_RANGE[0] + root_pc  # 36..47
    tones = [p for p in (root, root + triad[1], root + 7, root + 12) if p <= BASS_RANGE[1]]
    rhythm = _BASS_RHYTHMS[int(rng.integers(len(_BASS_RHYTHMS)))]
    for i, start in enumerate(rhythm):
        pitch = root if i == 0 else tones[int(rng.integers(len(tones)))]
        length = ((rhythm[i + 1] if i + 1 < len(rhythm) else 8) - start) * eighth * 0.9
        samples = int(length * sr)
        t = take.at(t0 + start * eighth)
        take.play(0.35 * _tone(_midi_hz(pitch), samples, sr, 4), t)
        take.bass.append((t, t + samples / sr, pitch))


def _play_melody(
    take: _Take,
    *,
    t0: float,
    root_pc: int,
    triad: Sequence[int],
    eighth: float,
    lead_pitches: list[int],
    degree: int,
    pan_lead: npt.NDArray[np.float64],
) -> int:
    """One bar of the lead, starting from scale ``degree``; returns the degree it ends on (the next bar's start)."""
    sr, rng = take.sample_rate, take.rng
    chord_pcs = {(root_pc + iv) % 12 for iv in triad}
    rhythm = _MELODY_RHYTHMS[int(rng.integers(len(_MELODY_RHYTHMS)))]
    for i, start in enumerate(rhythm):
        if start % 2 == 0:  # on the beat: the nearest chord tone to where the line is, not a repeat
            chord_degrees = [d for d, p in enumerate(lead_pitches) if p % 12 in chord_pcs and d != degree]
            degree = min(chord_degrees, key=lambda d: (abs(d - degree), rng.random()))
        else:  # between beats: a step or a skip on the scale
            degree += int(rng.choice((-2, -1, 1, 2)))
        degree = min(max(degree, 0), len(lead_pitches) - 1)
        pitch = lead_pitches[degree]
        length = ((rhythm[i + 1] if i + 1 < len(rhythm) else 8) - start) * eighth * 0.85
        samples = int(length * sr)
        t = take.at(t0 + start * eighth)
        take.play(pan_lead * (0.25 * _tone(_midi_hz(pitch), samples, sr, 5)), t)
        take.melody.append((t, t + samples / sr, pitch))
    return degree


def _play_pad(
    take: _Take, *, t0: float, root_pc: int, triad: Sequence[int], bar: float, pan_pad: npt.NDArray[np.float64]
) -> None:
    """The triad from the root placed in 54..65, held for the bar, quietly."""
    sr = take.sample_rate
    pad_root = 60 + root_pc - (12 if root_pc >= 6 else 0)
    pad = sum(_tone(_midi_hz(pad_root + iv), int((bar + 0.03) * sr), sr, 3) for iv in triad)
    take.play(pan_pad * (0.1 * pad), take.at(t0))


def render_song(
    *,
    bpm: float,
    bars: int,
    rng: np.random.Generator,
    sample_rate: int = 22_050,
    key: str = "A minor",
    melody: bool = True,
    chords: bool = False,
    jitter_ms: float = 0.0,
    stereo: bool = False,
    drums: bool = True,
    bass: bool = True,
) -> Song:
    """Render ``bars`` bars of 4/4 at ``bpm``, first downbeat at 0 s (as MusicGen's output starts).

    Args:
        bpm: tempo in beats per minute.
        bars: number of bars; the audio lasts ``bars * 4 * 60 / bpm`` seconds plus 0.5 s of decay.
        rng: the random generator: pattern variations, melody, noise bursts and jitter all come from it, so a
            seed gives the same song every time.
        sample_rate: Hz (22.05 kHz is basic-pitch's own rate, so it never resamples).
        key: e.g. "A minor", "E major".
        melody: render the lead (its truth is empty without it).
        chords: add the soft pad (never in the truth).
        jitter_ms: standard deviation of each hit's and note's random timing offset (clipped to two of them);
            the truth holds the moved times.
        stereo: two channels (hats, lead and pad panned apart) instead of one.
        drums, bass: render those parts (their truth is empty without them); for tests that need one part alone.

    Returns:
        The song and its score.
    """
    tonic, mode = key.split()
    tonic_pc = NOTE_NAMES.index(tonic)
    sr = sample_rate
    beat = 60.0 / bpm
    bar = 4 * beat
    eighth, sixteenth = beat / 2, beat / 4
    n = round((bars * bar + 0.5) * sr)
    take = _Take(out=np.zeros((2 if stereo else 1, n)), sample_rate=sr, rng=rng, jitter_ms=jitter_ms)
    pan_hat, pan_lead, pan_pad = _pan(stereo, 0.8, 1.2), _pan(stereo, 1.1, 0.9), _pan(stereo, 0.85, 1.15)
    kick = _kick(sr)
    lead_pitches = _lead_pitches(tonic_pc, _SCALES[mode])
    degree = lead_pitches.index(min(lead_pitches, key=lambda p: abs(p - 69)))  # start near A4

    # Part by part within a bar, bar after bar: the order the random draws come in, so a seed keeps its song.
    for b in range(bars):
        t0 = b * bar
        step, quality = _PROGRESSIONS[mode][b % 4]
        root_pc = (tonic_pc + step) % 12
        triad = _TRIADS[quality]
        if drums:
            _play_drums(take, t0=t0, bar_index=b, sixteenth=sixteenth, kick=kick, pan_hat=pan_hat)
        if bass:
            _play_bass(take, t0=t0, root_pc=root_pc, triad=triad, eighth=eighth)
        if melody:
            degree = _play_melody(
                take,
                t0=t0,
                root_pc=root_pc,
                triad=triad,
                eighth=eighth,
                lead_pitches=lead_pitches,
                degree=degree,
                pan_lead=pan_lead,
            )
        if chords:
            _play_pad(take, t0=t0, root_pc=root_pc, triad=triad, bar=bar, pan_pad=pan_pad)

    out = take.out * (0.9 / max(float(np.abs(take.out).max()), 1e-9))
    return Song(
        samples=out.astype(np.float32),
        sample_rate=sr,
        bpm=float(bpm),
        key=key,
        drums=sorted(take.drums, key=lambda hit: (hit[0], DRUM_NAMES.index(hit[1]))),
        bass=sorted(take.bass),
        melody=sorted(take.melody),
    )


def note_scores(
    ref: Sequence[NoteTuple], est: Sequence[NoteTuple], onset_tolerance: float = 0.05
) -> tuple[float, float, float]:
    """(precision, recall, F1) of ``est`` against ``ref``, notes as (start_s, end_s, MIDI pitch).

    mir_eval's note-onset metric (``offset_ratio=None``): a one-to-one matching in which a pair counts when the
    onsets are within ``onset_tolerance`` seconds and the pitches within 50 cents. 50 ms is MIREX's tolerance; a
    tighter one would mostly measure basic-pitch's frame grid (11.6 ms) and the renderer's jitter.

    If either list is empty all three are 0.0 (mir_eval's convention, without its warning): precision or recall
    is then 0/0, and scoring "nothing against nothing" as perfect would let a transcriber that drops a whole
    part pass a test on a song without that part. A note shorter than one sample (an end at or before its start)
    is given a one-sample length, as mir_eval rejects zero-length intervals and an onset metric ignores ends.
    """
    if not ref or not est:
        return 0.0, 0.0, 0.0

    def arrays(notes: Sequence[NoteTuple]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        starts = np.array([n[0] for n in notes], dtype=np.float64)
        ends = np.maximum(np.array([n[1] for n in notes], dtype=np.float64), starts + 1e-6)
        hz = np.array([_midi_hz(int(n[2])) for n in notes], dtype=np.float64)
        return np.stack([starts, ends], axis=1), hz

    ref_intervals, ref_hz = arrays(ref)
    est_intervals, est_hz = arrays(est)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # anything mir_eval would only warn about is a bug in the caller here
        precision, recall, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
            ref_intervals, ref_hz, est_intervals, est_hz, onset_tolerance=onset_tolerance, offset_ratio=None
        )
    return float(precision), float(recall), float(f1)


def drum_scores(
    ref_times: Sequence[float], est_times: Sequence[float], window: float = 0.05
) -> tuple[float, float, float]:
    """(precision, recall, F1) of estimated hit times against reference ones, one drum class at a time.

    mir_eval's onset F-measure: a one-to-one matching within ``window`` seconds (50 ms, as MIREX's onset task).
    Empty lists give 0.0 for all three, for the reasons given in ``note_scores``. Times need not be sorted.
    """
    if len(ref_times) == 0 or len(est_times) == 0:
        return 0.0, 0.0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # anything mir_eval would only warn about is a bug in the caller here
        f1, precision, recall = mir_eval.onset.f_measure(
            np.sort(np.asarray(ref_times, dtype=np.float64)),
            np.sort(np.asarray(est_times, dtype=np.float64)),
            window=window,
        )
    return float(precision), float(recall), float(f1)
