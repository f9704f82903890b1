"""``beatforge midi``: transcribe any audio file into MIDI (and stems) without the bot, for a DAW or a test."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beatforge.config import Settings
from cli.console import output_of, progress_bar, result
from cli.paths import folder_target_problem

if TYPE_CHECKING:
    from generation.midi.export import MidiFiles

#: Inside the pack beside the MIDI files; loose, its text goes into ``summary.json`` instead.
_PACK_README = "README.txt"
SUMMARY_FILE = "summary.json"


def _unpack(files: MidiFiles, out: Path) -> dict[str, Any]:
    """Copy the packs' members into ``out`` as loose files, plus ``summary.json``; returns what the result adds.

    Unpacking the very zips the bot sends (rather than writing the parts a second way) keeps the files a producer
    drags into a DAW byte for byte those of the Discord pack.
    """
    from storage.files import atomic_write_bytes, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for pack in (files.pack, files.stems):
        if pack is None:
            continue
        with zipfile.ZipFile(pack) as zf:
            for name in zf.namelist():
                if name != _PACK_README:
                    written.append(str(atomic_write_bytes(out / name, zf.read(name))))
    summary = {**files.info, "summary": files.summary, "files": [Path(path).name for path in written]}
    summary_path = atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return {"files": written, "summary": str(summary_path)}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], _settings: Settings) -> None:
    midi = commands.add_parser("midi", help="transcribe an audio file into drums/bass/melody/full MIDI files")
    midi.add_argument("audio", type=Path, help="wav, flac, ogg or mp3")
    midi.add_argument(
        "--out", type=Path, default=Path("midi"), help="directory for drums/bass/melody/full.mid and summary.json"
    )
    midi.add_argument("--stems", action="store_true", help="also write the separated stems (drums, bass, other)")
    midi.add_argument(
        "--zip", action="store_true", help="write NAME-midi.zip (and NAME-stems.zip) instead, as Discord gets them"
    )
    midi.set_defaults(run=run_midi)


def run_midi(args: argparse.Namespace, settings: Settings) -> int:
    # Heavy imports stay here, so `beatforge --help` and `beatforge bot` never load torch.
    from generation.analysis import beat_model
    from generation.audio.io import read_audio
    from generation.errors import AudioParameterError, GenerationError
    from generation.loops.export import safe_stem
    from generation.midi.export import export_midi
    from generation.midi.stems import make_separator
    from generation.midi.transcribe import PitchTracker

    beat_model.use(settings.learned_downbeats)
    # Bad input is one sentence and exit status 2, before the MIDI and stem models load.
    problem = folder_target_problem(args.out)
    if problem is not None:
        sys.stderr.write(f"beatforge: {problem}\n")
        return 2
    try:
        samples, sample_rate = read_audio(args.audio, max_seconds=settings.midi_max_input_s)
    except AudioParameterError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2
    try:
        tracker = PitchTracker(
            onset_threshold=settings.midi_onset_threshold,
            frame_threshold=settings.midi_frame_threshold,
            min_note_ms=settings.midi_min_note_ms,
        )
        separator = make_separator(settings.stems_model)
        with tempfile.TemporaryDirectory(prefix="beatforge-midi-") as scratch:
            bar = progress_bar(output_of(args), "transcribing")
            try:
                files = export_midi(
                    samples,
                    sample_rate=sample_rate,
                    tracker=tracker,
                    separator=separator,
                    out_dir=args.out if args.zip else Path(scratch),
                    stem=safe_stem(args.audio.stem),
                    source=args.audio.name,
                    with_stems=args.stems,
                    on_progress=bar,
                )
            finally:
                if bar is not None:
                    bar.close()
            if args.zip:
                written: dict[str, Any] = {"midi": str(files.pack), "stems": str(files.stems) if files.stems else None}
            else:
                written = {"midi": str(args.out), "stems": str(args.out) if files.stems else None}
                written.update(_unpack(files, args.out))
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2 if isinstance(exc, AudioParameterError) else 1  # e.g. silence: nothing to transcribe
    _report(args, written, files)
    return 0


def _report(args: argparse.Namespace, written: dict[str, Any], files: MidiFiles) -> None:
    """The transcription's summary on stderr and one ``wrote PATH`` line per file on stdout; with ``--json``
    the result object alone (stderr then carries only JSON log lines)."""
    output = output_of(args)
    data = {**written, **files.info}
    if output.json:
        result(output, "", data)
        return
    sys.stderr.write(files.summary + "\n")
    info = files.info
    what = f"{info['drum_hits']} drum hits, {info['bass_notes']} bass notes, {info['melody_notes']} melody notes"
    paths = written.get("files") or [path for path in (written.get("midi"), written.get("stems")) if path]
    if written.get("summary"):
        paths = [*paths, written["summary"]]
    for n, path in enumerate(paths):
        sys.stdout.write(f"wrote {path}" + (f" ({what})" if n == 0 else "") + "\n")
