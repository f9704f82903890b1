"""Transcribed parts as Standard MIDI Files that FL Studio, GarageBand and every DAW open as they are."""

from __future__ import annotations

import io
from collections.abc import Iterable

import pretty_midi

from generation.midi.notes import GM_DRUM_KEYS, DrumHit, Note, Transcription

#: General MIDI programs (0-based): Electric Bass (finger), Electric Piano 1.
BASS_PROGRAM = 33
MELODY_PROGRAM = 4
DEFAULT_BPM = 120.0
DRUM_HIT_S = 0.1  # drum notes are triggers; a short fixed length reads cleanly in piano rolls
PART_FILES = ("drums.mid", "bass.mid", "melody.mid", "full.mid")


def _instrument(name: str, notes: Iterable[Note], *, program: int) -> pretty_midi.Instrument:
    inst = pretty_midi.Instrument(program=program, name=name)
    inst.notes = [pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=n.start_s, end=n.end_s) for n in notes]
    return inst


def _drums(hits: Iterable[DrumHit]) -> pretty_midi.Instrument:
    inst = pretty_midi.Instrument(program=0, is_drum=True, name="Drums")  # is_drum: channel 10
    inst.notes = [
        pretty_midi.Note(velocity=h.velocity, pitch=GM_DRUM_KEYS[h.drum], start=h.time_s, end=h.time_s + DRUM_HIT_S)
        for h in hits
    ]
    return inst


def _song(tr: Transcription, instruments: list[pretty_midi.Instrument]) -> bytes:
    """One MIDI file at the detected tempo, so the DAW's grid lines up with the beat."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=tr.bpm or DEFAULT_BPM)
    midi.instruments = instruments
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def midi_files(tr: Transcription) -> dict[str, bytes]:
    """``drums.mid``, ``bass.mid``, ``melody.mid`` and ``full.mid`` (all three parts as tracks)."""
    parts = {
        "drums.mid": _drums(tr.drums),
        "bass.mid": _instrument("Bass", tr.bass, program=BASS_PROGRAM),
        "melody.mid": _instrument("Melody", tr.melody, program=MELODY_PROGRAM),
    }
    files = {name: _song(tr, [inst]) for name, inst in parts.items()}
    files["full.mid"] = _song(
        tr,
        [
            _drums(tr.drums),
            _instrument("Bass", tr.bass, program=BASS_PROGRAM),
            _instrument("Melody", tr.melody, program=MELODY_PROGRAM),
        ],
    )
    return files


def summary_text(tr: Transcription, *, source: str) -> str:
    """The README inside the zip and the message under the result: what was found and how."""
    drum_counts = {d: sum(1 for h in tr.drums if h.drum == d) for d in GM_DRUM_KEYS}
    tempo = f"{tr.bpm:.1f} bpm" if tr.bpm else f"no steady beat found (files use {DEFAULT_BPM:.0f} bpm)"
    lines = [
        f"MIDI transcription of {source} ({tr.duration_s:.1f} s)",
        f"Tempo: {tempo}",
        f"Key (estimate): {tr.key or 'unclear'}",
        f"Drums: {len(tr.drums)} hits ({', '.join(f'{n} {d}' for d, n in drum_counts.items())})"
        + (", quantised to the beat grid" if tr.quantized and tr.drums else ""),
        f"Bass: {len(tr.bass)} notes (GM program {BASS_PROGRAM + 1}, Electric Bass)",
        f"Melody: {len(tr.melody)} notes (GM program {MELODY_PROGRAM + 1}, Electric Piano)",
        f"Stems split by: {tr.separation}",
        "Files: drums.mid (GM drum channel 10: kick 36, snare 38, closed hi-hat 42), bass.mid, melody.mid, "
        "full.mid (all parts as tracks).",
    ]
    return "\n".join(lines)
