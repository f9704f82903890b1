"""Realistic ground truth for MIDI transcription: real compositions played by sampled General MIDI instruments.

``tests/support/midi_truth.py`` synthesises its songs from sines and noise, which flatters a transcriber: every
note is a clean partial series, every kick a pure low thump. A real beat has sampled instruments whose partials,
attacks and drum kits look nothing like that (a sampled kick's beater click reads as a snare; a picked bass's
strongest partial is often its octave). This module renders songs that do:

* compositions are real ones, from music21's bundled corpus (Bach chorales, a Corelli trio sonata, a Mozart
  quartet): the lowest voice becomes the bass part, the top voice the lead, so the intervals, rhythms and
  ranges are those of music a person wrote, not of a random walk;
* they are played by General MIDI programs (fingered, picked and synth basses; flute, piano, saw, square,
  trumpet leads) over a GM drum kit (channel 10) in grooves that put closed hats under kicks and snares, with
  ghost notes and syncopation, at 84-150 bpm and realistic velocities;
* the MIDI is written with pretty_midi and rendered by the ``fluidsynth`` CLI through a SoundFont. Two fonts:
  ``musescore`` (MuseScore General) is the TUNING set; ``timgm6mb`` (TimGM6mb) is HELD OUT: never tune on it,
  only measure, so the figures on it say how the transcriber does on instruments it was not fitted to.

Ground truth is read back from the very MIDI file that was rendered (pretty_midi), so it is exactly what was
played. fluidsynth renders from time 0; a lone note at 1.0 s (kick, fingered bass, flute; both fonts) first
rises above -60 dB 2.4-3.8 ms later (its 64-sample block and the sample's own attack), far inside the 50 ms
scoring window and not constant, so no offset is applied. Renders are cached on disk (``BEATFORGE_GM_CACHE``, default
``<tmp>/beatforge-gm``) keyed by the spec, the font, the rate and :data:`RENDER_VERSION`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from generation.midi.notes import GM_DRUM_KEYS, DrumHit, Note
from tests.support.midi_truth import Rendered

__all__ = [
    "DEV_SONGS",
    "GROOVES",
    "SOUNDFONTS",
    "GmSong",
    "SongSpec",
    "fluidsynth_available",
    "render_gm_song",
]

#: The fonts. "musescore" is the tuning set, "timgm6mb" the held-out one (never tune on it).
SOUNDFONTS: dict[str, Path] = {
    "musescore": Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),
    "timgm6mb": Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
}
#: Bump when rendering or truth extraction changes, so stale cached renders are not reused.
RENDER_VERSION = 1
#: fluidsynth's master gain (its default 0.2 is quiet; 0.6 with these velocities rarely clips).
GAIN = 0.6
#: Decay kept after the last bar, seconds.
TAIL_S = 0.5
BEATS_PER_BAR = 4
KICK, SNARE, HAT = GM_DRUM_KEYS["kick"], GM_DRUM_KEYS["snare"], GM_DRUM_KEYS["hat"]


@dataclass(frozen=True)
class SongSpec:
    """One development song: which composition, how it is played.

    Attributes:
        name: short id (used in tables and cache keys).
        piece: music21 corpus path of the composition (4/4 pieces only).
        bpm: tempo of the render (the score's own tempo marking is ignored).
        bass_program, lead_program: General MIDI programs (0-based: 33 fingered bass, 0 piano, ...).
        groove: a key of :data:`GROOVES`.
        bars: number of 4/4 bars rendered, from ``start_measure`` on.
        start_measure: the first (full) measure taken from the score (a pickup measure is numbered 0).
        bass_shift, lead_shift: semitones added to the bass and lead voices (a chorale's bass voice an octave
            down is a bass guitar's register; a violin line dipping under middle C goes up an octave so the lead
            stays above the transcriber's bass/melody split at B3).
        key: the piece's key in words (informational).
    """

    name: str
    piece: str
    bpm: float
    bass_program: int
    lead_program: int
    groove: str
    bars: int = 8
    start_measure: int = 1
    bass_shift: int = -12
    lead_shift: int = 0
    key: str | None = None


@dataclass(frozen=True)
class GmSong(Rendered):
    """A rendered song and its score (read back from the rendered MIDI file).

    Attributes:
        spec: what was rendered.
        soundfont: the key of :data:`SOUNDFONTS` used.
        samples: float32 audio, shape (2, n), peak 0.9.
        sample_rate: Hz.
        bpm, beats_per_bar: the exact grid.
        downbeats_s: the true bar starts (the first at 0 s).
        bass, melody: the notes, sorted by start.
        drums: kick/snare/closed-hat hits, sorted by time.
    """

    spec: SongSpec
    soundfont: str
    samples: npt.NDArray[np.float32]
    sample_rate: int
    bpm: float
    beats_per_bar: int
    downbeats_s: list[float]
    bass: list[Note]
    melody: list[Note]
    drums: list[DrumHit]

    def drum_times(self, drum: str) -> list[float]:
        return [h.time_s for h in self.drums if h.drum == drum]


# A groove: for bar ``i`` and a random generator, the hits as (sixteenth of the bar, GM key, velocity).
Groove = Callable[[int, np.random.Generator], list[tuple[int, int, int]]]


def _vel(rng: np.random.Generator, centre: int, spread: int = 6) -> int:
    return int(np.clip(centre + rng.integers(-spread, spread + 1), 1, 127))


def _rock(bar: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Kick on 1 and 3 (a pickup on the "and" of 3 every other bar), snare 2 and 4 with a ghost before 4,
    closed hats on every eighth (accented on the beat), so every kick and snare has a hat on it."""
    hits = [(s, HAT, _vel(rng, 85 if s % 4 == 0 else 62)) for s in range(0, 16, 2)]
    hits += [(0, KICK, _vel(rng, 112)), (8, KICK, _vel(rng, 108))]
    if bar % 2 == 1:
        hits.append((10, KICK, _vel(rng, 96)))
    hits += [(4, SNARE, _vel(rng, 105)), (12, SNARE, _vel(rng, 108)), (11, SNARE, _vel(rng, 34, 4))]
    return hits


def _hiphop(bar: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Syncopated kicks (1, the "a" of 2, the "and" of 3), snare on 2 and 4 with ghost notes, sixteenth hats
    with an accent on each eighth."""
    hits = [(s, HAT, _vel(rng, 78 if s % 2 == 0 else 48)) for s in range(16)]
    kicks = (0, 7, 10) if bar % 2 == 0 else (0, 3, 10, 14)
    hits += [(s, KICK, _vel(rng, 110 if s == 0 else 98)) for s in kicks]
    hits += [(4, SNARE, _vel(rng, 104)), (12, SNARE, _vel(rng, 106))]
    hits += [(s, SNARE, _vel(rng, 30, 4)) for s in ((6, 15) if bar % 2 == 0 else (9,))]
    return hits


def _four_on_floor(bar: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """A kick on every beat, snare on 2 and 4 (over the kick), closed hats on every eighth, louder off the beat."""
    hits = [(s, HAT, _vel(rng, 82 if s % 4 == 2 else 58)) for s in range(0, 16, 2)]
    hits += [(s, KICK, _vel(rng, 112)) for s in (0, 4, 8, 12)]
    hits += [(4, SNARE, _vel(rng, 100)), (12, SNARE, _vel(rng, 102))]
    return hits


def _quarter_hats(bar: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Closed hats on the quarter notes only: every hat sounds under a kick or a snare (the hardest case for a
    classifier that reads one class per onset)."""
    hits = [(s, HAT, _vel(rng, 75)) for s in (0, 4, 8, 12)]
    hits += [(0, KICK, _vel(rng, 112)), (8, KICK, _vel(rng, 106))]
    if bar % 4 == 3:
        hits.append((14, KICK, _vel(rng, 92)))
    hits += [(4, SNARE, _vel(rng, 104)), (12, SNARE, _vel(rng, 104))]
    return hits


GROOVES: dict[str, Groove] = {
    "rock": _rock,
    "hiphop": _hiphop,
    "four_on_floor": _four_on_floor,
    "quarter_hats": _quarter_hats,
}

#: The development set: 7 songs of 8-13 bars (20-24 s), 84-150 bpm, every groove, bass and lead family at least
#: once. Bass voices go down an octave (a bass guitar's E1-E3 register), tops stay where the composer put them.
DEV_SONGS: tuple[SongSpec, ...] = (
    SongSpec("chorale66-rock", "bach/bwv66.6", 96, 33, 73, "rock", key="F# minor"),
    SongSpec("chorale4-quarterhats", "bach/bwv4.8", 84, 34, 0, "quarter_hats", key="E minor"),
    SongSpec("corelli-hiphop", "corelli/opus3no1/1grave", 88, 38, 81, "hiphop", key="F major"),
    SongSpec("mozart155-four", "mozart/k155/movement1", 124, 39, 80, "four_on_floor", bars=12, key="D major"),
    SongSpec("chorale10-rock-fast", "bach/bwv10.7", 150, 33, 56, "rock", bars=13, key="G minor"),
    SongSpec("chorale40-hiphop", "bach/bwv40.8", 100, 34, 1, "hiphop", bars=9, key="F major"),
    SongSpec("chorale26-four", "bach/bwv26.6", 120, 38, 73, "four_on_floor", bars=10, key="A minor"),
)


def fluidsynth_available() -> bool:
    """Whether the ``fluidsynth`` CLI and both SoundFonts are installed (scripts/test installs them)."""
    return shutil.which("fluidsynth") is not None and all(p.is_file() for p in SOUNDFONTS.values())


def _cache_dir() -> Path:
    path = Path(os.environ.get("BEATFORGE_GM_CACHE") or Path(tempfile.gettempdir()) / "beatforge-gm")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _voice(piece: str, which: str, start_measure: int, bars: int, shift: int) -> list[tuple[float, float, int]]:
    """One voice of a corpus piece as (start, end, MIDI pitch) in quarter notes from the start measure's
    downbeat: the top part's highest notes (``which="top"``) or the bottom part's lowest (``"bottom"``);
    ties are merged, rests skipped, notes cut at the last bar line."""
    from music21 import corpus

    score = corpus.parse(piece)
    part = score.parts[0 if which == "top" else -1].stripTies()
    measure = next(m for m in part.getElementsByClass("Measure") if m.number == start_measure)
    start, end = float(measure.offset), float(measure.offset) + BEATS_PER_BAR * bars
    out: list[tuple[float, float, int]] = []
    for element in part.flatten().notes:
        onset = float(element.offset)
        if not start <= onset < end:
            continue
        pitches = [p.midi for p in element.pitches]
        pitch = max(pitches) if which == "top" else min(pitches)
        off = min(onset + float(element.duration.quarterLength), end)
        if off > onset:
            out.append((onset - start, off - start, pitch + shift))
    return sorted(out)


def _write_midi(spec: SongSpec, path: Path) -> None:
    import pretty_midi

    beat = 60.0 / spec.bpm
    rng = np.random.default_rng(int(hashlib.sha256(spec.name.encode()).hexdigest()[:8], 16))
    midi = pretty_midi.PrettyMIDI(initial_tempo=spec.bpm)
    parts = (
        ("bottom", spec.bass_program, spec.bass_shift, 100),
        ("top", spec.lead_program, spec.lead_shift, 88),
    )
    end_s = spec.bars * BEATS_PER_BAR * beat
    for which, program, shift, velocity in parts:
        inst = pretty_midi.Instrument(program=program, name=which)
        for start, end, pitch in _voice(spec.piece, which, spec.start_measure, spec.bars, shift):
            # a hair of release before the next note, as a player lifts between notes (legato voices re-strike)
            inst.notes.append(
                pretty_midi.Note(
                    _vel(rng, velocity, 8), int(pitch), start * beat, max(start * beat + 0.03, end * beat - 0.01)
                )
            )
        midi.instruments.append(inst)
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    sixteenth = beat / 4
    for bar in range(spec.bars):
        for step, key, vel in GROOVES[spec.groove](bar, rng):
            t = (bar * 16 + step) * sixteenth
            drums.notes.append(pretty_midi.Note(vel, key, t, t + 0.1))
    midi.instruments.append(drums)
    # a harmless event after the end, so fluidsynth keeps rendering through the last notes' decay
    midi.instruments[0].control_changes.append(pretty_midi.ControlChange(7, 100, end_s + TAIL_S + 0.5))
    midi.write(str(path))


def _truth(path: Path) -> tuple[list[Note], list[Note], list[DrumHit]]:
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(str(path))
    bass: list[Note] = []
    melody: list[Note] = []
    drums: list[DrumHit] = []
    names = {v: k for k, v in GM_DRUM_KEYS.items()}
    for inst in midi.instruments:
        for n in inst.notes:
            if inst.is_drum:
                if n.pitch in names:
                    drums.append(DrumHit(float(n.start), names[n.pitch], int(n.velocity)))
            else:
                (bass if inst.name == "bottom" else melody).append(
                    Note(float(n.start), float(n.end), int(n.pitch), int(n.velocity))
                )
    return (
        sorted(bass, key=lambda n: (n.start_s, n.pitch)),
        sorted(melody, key=lambda n: (n.start_s, n.pitch)),
        sorted(drums, key=lambda h: (h.time_s, h.drum)),
    )


def render_gm_song(spec: SongSpec, soundfont: str = "musescore", *, sample_rate: int = 32_000) -> GmSong:
    """Render ``spec`` through ``soundfont`` (a key of :data:`SOUNDFONTS`), from the cache when it was before.

    Raises:
        RuntimeError: fluidsynth or the font is missing, or fluidsynth failed.
        KeyError: unknown soundfont or groove.
    """
    import soundfile as sf

    font = SOUNDFONTS[soundfont]
    if shutil.which("fluidsynth") is None or not font.is_file():
        raise RuntimeError(f"fluidsynth and {font} are needed to render GM songs (scripts/test installs them)")
    key = hashlib.sha256(f"{RENDER_VERSION}|{spec!r}|{soundfont}|{sample_rate}".encode()).hexdigest()[:16]
    cache = _cache_dir()
    mid, wav = cache / f"{spec.name}-{key}.mid", cache / f"{spec.name}-{soundfont}-{key}.wav"
    if not (mid.is_file() and wav.is_file()):
        tmp_mid, tmp_wav = mid.with_suffix(f".{os.getpid()}.mid"), wav.with_suffix(f".{os.getpid()}.wav")
        _write_midi(spec, tmp_mid)
        cmd = [
            "fluidsynth",
            "-ni",
            "-q",
            "-g",
            str(GAIN),
            "-r",
            str(sample_rate),
            "-F",
            str(tmp_wav),
            str(font),
            str(tmp_mid),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0 or not tmp_wav.is_file():
            raise RuntimeError(f"fluidsynth failed ({done.returncode}): {done.stderr[-500:]}")
        os.replace(tmp_mid, mid)  # atomic: parallel test runs never read half a file
        os.replace(tmp_wav, wav)
    data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz, asked for {sample_rate}")
    length = round((spec.bars * BEATS_PER_BAR * 60.0 / spec.bpm + TAIL_S) * sample_rate)
    samples = np.zeros((data.shape[1], length), dtype=np.float32)
    n = min(length, data.shape[0])
    samples[:, :n] = data[:n].T
    peak = float(np.max(np.abs(samples)))
    if peak > 0:
        samples *= 0.9 / peak
    bass, melody, drums = _truth(mid)
    bar_s = BEATS_PER_BAR * 60.0 / spec.bpm
    return GmSong(
        spec=spec,
        soundfont=soundfont,
        samples=samples,
        sample_rate=sample_rate,
        bpm=float(spec.bpm),
        beats_per_bar=BEATS_PER_BAR,
        downbeats_s=[i * bar_s for i in range(spec.bars)],
        bass=bass,
        melody=melody,
        drums=drums,
    )
