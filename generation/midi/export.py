"""From audio to a MIDI pack (and optionally its stems) on disk — shared by the worker and the CLI."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generation.audio.formats import AudioFormat, AudioTooLarge, encode, encode_to_fit
from generation.audio.signal import Samples, peak_normalize
from generation.midi.files import midi_files, summary_text
from generation.midi.stems import DemucsSeparator, Stems
from generation.midi.transcribe import TRANSCRIBE_STEPS, PitchTracker, separate, transcribe_stems
from storage.files import atomic_path

#: Stems are FLAC (lossless, every DAW reads it); over the upload limit they also get an MP3 copy that fits.
STEM_FORMAT: AudioFormat = "flac"


@dataclass(frozen=True, slots=True)
class MidiFiles:
    pack: Path  # zip: drums.mid, bass.mid, melody.mid, full.mid, README.txt
    stems: Path | None  # zip of drums/bass/other audio, when asked for
    stems_preview: Path | None  # a smaller zip of the stems, only when ``stems`` is over ``preview_limit``
    summary: str
    info: dict[str, Any]


def _write_zip(path: Path, members: Mapping[str, bytes]) -> Path:
    """Atomically: a half-written zip never appears under its final name."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _stem_audio(stems: Stems, *, limit: int | None = None) -> dict[str, bytes]:
    out = {}
    for name, samples in stems.items():
        audio = peak_normalize(samples, peak=0.98)
        if limit is None:
            out[f"{name}.{STEM_FORMAT}"] = encode(audio, sample_rate=stems.sample_rate, fmt=STEM_FORMAT)
        else:
            data, fmt, _ = encode_to_fit(audio, sample_rate=stems.sample_rate, limit_bytes=limit, preferred="mp3")
            out[f"{name}.{fmt}"] = data
    return out


def export_midi(
    samples: Samples,
    *,
    sample_rate: int,
    tracker: PitchTracker,
    out_dir: Path,
    stem: str,
    source: str,
    with_stems: bool = False,
    separator: DemucsSeparator | None = None,
    preview_limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> MidiFiles:
    """Transcribe ``samples`` and write ``<stem>-midi.zip`` (and ``<stem>-stems.zip``) into ``out_dir``.

    ``on_progress(done, total)`` is called after each step: the stem split, drums, bass, melody, the MIDI pack
    and (``with_stems``) the stems — coarse, but each is a real share of the time on a long upload.

    Raises:
        AudioParameterError: silent or invalid audio.
    """
    total = 1 + TRANSCRIBE_STEPS + 1 + (1 if with_stems else 0)

    def report(done: int) -> None:
        if on_progress is not None:
            on_progress(done, total)

    report(0)
    stems = separate(samples, sample_rate, separator=separator)
    report(1)
    tr = transcribe_stems(stems, mix=samples, tracker=tracker, on_progress=lambda done: report(1 + done))
    summary = summary_text(tr, source=source)
    out_dir.mkdir(parents=True, exist_ok=True)
    pack = _write_zip(out_dir / f"{stem}-midi.zip", {**midi_files(tr), "README.txt": summary.encode()})
    report(2 + TRANSCRIBE_STEPS)
    stems_zip = preview = None
    if with_stems:
        stems_zip = _write_zip(out_dir / f"{stem}-stems.zip", _stem_audio(stems))
        if preview_limit is not None and stems_zip.stat().st_size > preview_limit:
            try:  # three files share the limit, with room for the zip's own headers
                small = _stem_audio(stems, limit=int(preview_limit * 0.95) // 3)
                preview = _write_zip(out_dir / f"{stem}-stems-preview.zip", small)
            except AudioTooLarge:  # long uploads: even 96 kbps does not fit; the download link carries them
                preview = None
        report(total)
    info = {
        "source": source,
        "bpm": round(tr.bpm, 2) if tr.bpm else None,
        "key": tr.key,
        "drum_hits": len(tr.drums),
        "bass_notes": len(tr.bass),
        "melody_notes": len(tr.melody),
        "separation": tr.separation,
        "quantized": tr.quantized,
        "duration_s": round(tr.duration_s, 2),
    }
    return MidiFiles(pack=pack, stems=stems_zip, stems_preview=preview, summary=summary, info=info)
