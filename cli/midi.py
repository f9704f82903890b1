"""``beatforge midi``: transcribe any audio file into MIDI (and stems) without the bot, for a DAW or a test."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from beatforge.config import Settings
from cli.paths import folder_target_problem


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], _settings: Settings) -> None:
    midi = commands.add_parser("midi", help="transcribe an audio file into drums/bass/melody/full MIDI files")
    midi.add_argument("audio", type=Path, help="wav, flac, ogg or mp3")
    midi.add_argument("--out", type=Path, default=Path("midi"), help="directory to write into")
    midi.add_argument("--stems", action="store_true", help="also write the separated stems (drums, bass, other)")
    midi.set_defaults(run=run_midi)


def run_midi(args: argparse.Namespace, settings: Settings) -> int:
    # Heavy imports stay here, so `beatforge --help` and `beatforge bot` never load torch.
    from generation.audio.io import read_audio
    from generation.errors import AudioParameterError, GenerationError
    from generation.loops.export import safe_stem
    from generation.midi.export import export_midi
    from generation.midi.stems import make_separator
    from generation.midi.transcribe import PitchTracker

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
        files = export_midi(
            samples,
            sample_rate=sample_rate,
            tracker=tracker,
            separator=make_separator(settings.stems_model),
            out_dir=args.out,
            stem=safe_stem(args.audio.stem),
            source=args.audio.name,
            with_stems=args.stems,
        )
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2 if isinstance(exc, AudioParameterError) else 1  # e.g. silence: nothing to transcribe
    sys.stderr.write(files.summary + "\n")
    written = {"midi": str(files.pack), "stems": str(files.stems) if files.stems else None}
    sys.stdout.write(json.dumps({**written, **files.info}) + "\n")
    return 0
