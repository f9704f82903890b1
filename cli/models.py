"""``beatforge model``: bring MusicGen checkpoints trained elsewhere into the model registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from beatforge.config import Settings
from cli.console import output_of, result
from cli.train import add_register_command


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], _settings: Settings) -> None:
    model = commands.add_parser("model", help="MusicGen models: import checkpoints, register trained ones")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    imp = model_commands.add_parser("import-audiocraft", help="convert an audiocraft-trained MusicGen and register it")
    imp.add_argument("checkpoint", type=Path, help="state_dict.bin / checkpoint.th, or audiocraft's export folder")
    imp.add_argument("name", help="registry name (lowercase letters, digits, . _ -)")
    imp.add_argument("--base", default="facebook/musicgen-small", help="local MusicGen giving the T5 + EnCodec")
    imp.add_argument("--compression", type=Path, help="audiocraft EnCodec checkpoint (default: the base's EnCodec)")
    imp.add_argument("--out", type=Path, help="directory to write (default: <artifact_dir>/../models/NAME)")
    imp.set_defaults(run=run_import_audiocraft)
    add_register_command(model_commands)


def run_import_audiocraft(args: argparse.Namespace, settings: Settings) -> int:
    # Heavy imports stay here, so `beatforge --help` and `beatforge bot` never load torch.
    from generation.errors import GenerationError
    from generation.music.audiocraft_import import import_and_register

    out = args.out or settings.artifact_dir.parent / "models" / args.name
    try:
        summary = import_and_register(
            args.checkpoint,
            args.name,
            out=out,
            base=args.base,
            compression=args.compression,
            registry_file=getattr(settings, "model_registry_file", None),
        )
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    if not summary["registered"]:
        sys.stderr.write(f"beatforge: not registered (no model registry file); use the directory {out}\n")
    result(output_of(args), f"wrote {out} (model {args.name})", summary)
    return 0
