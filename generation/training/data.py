"""Finding the training clips and their captions in a folder, and what the whole set amounts to.

Captions come from a ``.txt`` beside each audio file or from one ``metadata.jsonl`` / ``metadata.csv`` (columns
``file`` and ``caption``, ``file`` relative to the folder). Every problem is collected rather than raised at the
first, so the person preparing data fixes the folder once, not once per clip.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from storage.artifacts import sha256_of

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg"})


@dataclass(frozen=True, slots=True)
class Clip:
    """An audio file, its caption, and the SHA-256 of its bytes (what the code cache and the card key on)."""

    path: Path
    caption: str
    sha256: str


def _metadata(data_dir: Path, problems: list[str]) -> dict[str, str]:
    """Captions by path relative to ``data_dir`` from metadata.jsonl / metadata.csv (either may be absent)."""
    captions: dict[str, str] = {}
    jsonl, table = data_dir / "metadata.jsonl", data_dir / "metadata.csv"
    if jsonl.is_file():
        for number, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                captions[str(Path(row["file"]))] = str(row["caption"])
            except (ValueError, KeyError, TypeError):
                problems.append(f"metadata.jsonl line {number}: expected a JSON object with 'file' and 'caption'")
    if table.is_file():
        with table.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if not {"file", "caption"} <= set(reader.fieldnames or ()):
                problems.append("metadata.csv needs the columns 'file' and 'caption'")
                return captions
            for row in reader:
                captions[str(Path(row["file"]))] = row["caption"] or ""
    return captions


def find_clips(data_dir: Path) -> tuple[list[Clip], list[str]]:
    """Every audio file under ``data_dir`` (sorted, so the order never depends on the file system) with its caption.

    Returns the clips that have a caption and the problems found (files without a caption, metadata rows naming
    missing files, an empty or missing folder).
    """
    if not data_dir.is_dir():
        return [], [f"{data_dir} is not a folder"]
    problems: list[str] = []
    captions = _metadata(data_dir, problems)
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        problems.append(f"{data_dir} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    clips = []
    for path in files:
        rel = str(path.relative_to(data_dir))
        beside = path.with_suffix(".txt")
        caption = beside.read_text(encoding="utf-8").strip() if beside.is_file() else captions.get(rel, "").strip()
        if not caption:
            problems.append(f"{rel}: no caption ({beside.name} beside it, or a row in metadata.jsonl / metadata.csv)")
            continue
        clips.append(Clip(path, caption, sha256_of(path)))
    named = {str(Path(rel)) for rel in captions}
    found = {str(p.relative_to(data_dir)) for p in files}
    problems += [f"metadata names {rel}, which is not an audio file in the folder" for rel in sorted(named - found)]
    return clips, problems


def fingerprint(clips: list[Clip]) -> str:
    """One hash of the data set: each clip's bytes and caption, in order (the model card's "trained on what")."""
    digest = hashlib.sha256()
    for clip in sorted(clips, key=lambda c: c.sha256):
        digest.update(f"{clip.sha256}\0{clip.caption}\0".encode())
    return digest.hexdigest()
