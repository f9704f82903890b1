"""The zip of clips /admin train takes: what the bot checks before queueing a run, and how the worker unpacks it.

Both sides read the zip the same way (stdlib only: the bot never imports the worker's stack). A zip holds audio
files (WAV, FLAC, OGG, MP3: checked by their first bytes, not only their names) and their captions (a ``.txt``
beside each clip, or one ``metadata.jsonl`` / ``metadata.csv``, as ``generation.training.data`` reads them).
Anything else, a name that would land outside the folder, a link, an encrypted member, or more bytes unpacked
than allowed is a problem; every problem is listed, so an admin fixes the zip once.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

#: The audio the training code reads, by suffix, and the first bytes each must start with.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
CAPTION_SUFFIX = ".txt"
METADATA_FILES = frozenset({"metadata.jsonl", "metadata.csv"})
#: What zips made on a Mac or by Windows' Explorer carry beside the files: skipped, not refused.
_JUNK_PARTS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
#: Problems listed one per line at most this many (a zip of 500 wrong files needs no 500 lines).
MAX_LISTED = 15
_SNIFF_BYTES = 12
_CHUNK = 1 << 20


def audio_format(head: bytes) -> str | None:
    """The audio format the first bytes of a file say it is ("wav", "flac", "ogg", "mp3"), or None."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"  # an ID3 tag, or an MPEG audio frame's sync word
    return None


@dataclass
class ZipReport:
    """What a zip holds: its clips and captions (names inside the zip), and every problem found."""

    audio: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unpacked_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def problems_text(self) -> str:
        """The problems as a list for a message, the first ``MAX_LISTED`` of them and how many more."""
        lines = [f"• {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"• … and {len(self.problems) - MAX_LISTED} more")
        return "\n".join(lines)


def _unsafe(name: str) -> bool:
    """A member name that would be written outside the folder it is unpacked into (or is not a plain path)."""
    if "\\" in name or "\0" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return True
    return any(part == ".." for part in PurePosixPath(name).parts)


def _is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)  # made on Unix, a symlink's mode


def _members(zf: zipfile.ZipFile) -> Iterator[zipfile.ZipInfo]:
    """The files of the zip (folders and the junk of Mac and Windows zips left out)."""
    for info in zf.infolist():
        if info.is_dir() or _JUNK_PARTS & set(PurePosixPath(info.filename).parts):
            continue
        yield info


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, report: ZipReport) -> None:
    name = info.filename
    if _unsafe(name):
        report.problems.append(f"{name}: a path outside the zip's folder is not allowed")
        return
    if _is_link(info):
        report.problems.append(f"{name}: links are not allowed")
        return
    if info.flag_bits & 0x1:
        report.problems.append(f"{name}: encrypted files can't be read")
        return
    path = PurePosixPath(name)
    suffix = path.suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        with zf.open(info) as fh:
            found = audio_format(fh.read(_SNIFF_BYTES))
        if found is None or found != suffix[1:]:
            what = f"its content is {found.upper()}" if found else "its content is not audio"
            report.problems.append(f"{name}: named {suffix[1:].upper()}, but {what}")
            return
        report.audio.append(name)
    elif suffix == CAPTION_SUFFIX:
        report.captions.append(name)
    elif path.name.lower() in METADATA_FILES and len(path.parts) == 1:
        report.metadata.append(name)
    else:
        kinds = ", ".join(AUDIO_SUFFIXES)
        report.problems.append(f"{name}: not a clip ({kinds}) or a caption (.txt, metadata.jsonl/.csv)")


def check_zip(path: Path, *, max_unpacked_bytes: int) -> ZipReport:
    """Everything wrong with the zip at ``path`` for training (an empty ``problems`` when nothing is).

    Checks: a zip by its content; every member safe, readable, an audio file whose first bytes match its name,
    or a caption; at most ``max_unpacked_bytes`` unpacked (as the zip declares: :func:`extract_zip` counts the
    real bytes again); at least one clip, each with a caption (beside it, unless a metadata file gives them).
    """
    report = ZipReport()
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
        if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
            report.problems.append("this is not a zip file (its content does not start like one)")
            return report
        with zipfile.ZipFile(path) as zf:
            for info in _members(zf):
                report.unpacked_bytes += info.file_size
                _check_member(zf, info, report)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        report.problems.append(f"the zip can't be read ({exc})")
        return report
    if report.unpacked_bytes > max_unpacked_bytes:
        report.problems.append(
            f"it unpacks to {report.unpacked_bytes / 2**20:.1f} MiB; the limit is {max_unpacked_bytes / 2**20:g} MiB"
        )
    if not report.audio:
        report.problems.append(f"it holds no clips ({', '.join(AUDIO_SUFFIXES)})")
    elif not report.metadata:
        captions = {str(PurePosixPath(c).with_suffix("")) for c in report.captions}
        report.problems += [
            f"{clip}: no caption ({PurePosixPath(clip).with_suffix(CAPTION_SUFFIX).name} beside it)"
            for clip in report.audio
            if str(PurePosixPath(clip).with_suffix("")) not in captions
        ]
    return report


class ZipRefused(ValueError):
    """The zip is not one training can use; ``problems`` lists why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def extract_zip(path: Path, dest: Path, *, max_unpacked_bytes: int) -> ZipReport:
    """Unpack the clips, captions and metadata of the zip at ``path`` into ``dest`` (nothing else), after
    :func:`check_zip`, stopping at ``max_unpacked_bytes`` actually written whatever the zip declares.

    Raises:
        ZipRefused: the zip fails the checks, or unpacks to more than allowed.
    """
    report = check_zip(path, max_unpacked_bytes=max_unpacked_bytes)
    if not report.ok:
        raise ZipRefused(report.problems)
    root = dest.resolve()
    written = 0
    wanted = {*report.audio, *report.captions, *report.metadata}
    with zipfile.ZipFile(path) as zf:
        for info in _members(zf):
            if info.filename not in wanted:
                continue
            target = (root / info.filename).resolve()
            if not target.is_relative_to(root):  # checked already; kept as the last word before writing
                raise ZipRefused([f"{info.filename}: a path outside the zip's folder is not allowed"])
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > max_unpacked_bytes:
                        raise ZipRefused([f"it unpacks to more than {max_unpacked_bytes / 2**20:g} MiB"])
                    out.write(chunk)
    report.unpacked_bytes = written
    return report
