"""Where a command will write, checked before anything slow runs: a model can take minutes to load, and a
traceback from libsndfile or mkdir at the end of it says less than one sentence at the start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args


def _blocking_file(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (nothing can be created under it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def file_target_problem(path: Path, *, option: str = "--out") -> str | None:
    """Why a file cannot be written at ``path`` (an existing file is fine: it is replaced), or None."""
    if path.is_dir():
        return f"{option} {path} is a folder; give a file name in it, e.g. {path / 'beat.wav'}"
    blocking = _blocking_file(path)
    if blocking is not None:
        return f"{option} {path} cannot be created: {blocking} is a file, not a folder"
    return None


def folder_target_problem(path: Path, *, option: str = "--out") -> str | None:
    """Why files cannot be written into the folder ``path`` (created when missing), or None."""
    if path.exists() and not path.is_dir():
        return f"{option} {path} is a file; give a folder to write into (it is created if missing)"
    blocking = _blocking_file(path)
    if blocking is not None:
        return f"{option} {path} cannot be created: {blocking} is a file, not a folder"
    return None


#: The audio formats ``--out``'s extension may pick: ``generation.audio.formats.FORMATS``, repeated here so that
#: parsing arguments never imports numpy and libsndfile (a test keeps the two equal).
OutFormat = Literal["wav", "flac", "ogg", "mp3"]
AUDIO_FORMATS: Final[tuple[OutFormat, ...]] = get_args(OutFormat)


@dataclass(frozen=True, slots=True)
class AudioOut:
    """Where a command's audio goes: either the one file the user named (its extension picks the format), or a
    folder that files get descriptive names in (``fmt`` is then the default, wav)."""

    path: Path
    is_folder: bool
    fmt: OutFormat

    def file(self, number: int, *, name: str) -> Path:
        """The path of the ``number``-th file (from 1): in a folder ``<name>.<fmt>``; for a named file, the file
        itself first and ``NAME-take2.EXT``, ... beside it, so takes never overwrite one another."""
        if self.is_folder:
            return self.path / f"{name}.{self.fmt}"
        return self.path if number == 1 else self.path.with_name(f"{self.path.stem}-take{number}{self.path.suffix}")


def audio_out(raw: str, *, option: str = "--out", default_format: OutFormat = "wav") -> AudioOut | str:
    """``raw`` (as typed: ``Path`` would drop a trailing ``/``) as an :class:`AudioOut`, or why it cannot be one.

    A folder is an existing one or a path ending in ``/``; anything else must end in a format's extension, so that
    ``beat.mp3`` is really an MP3 and ``some/dir`` is never silently a WAV named ``dir``.
    """
    path = Path(raw)
    if raw.endswith(("/", "\\")) or path.is_dir():
        problem = folder_target_problem(path, option=option)
        return problem if problem is not None else AudioOut(path=path, is_folder=True, fmt=default_format)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in AUDIO_FORMATS:
        listed = ", ".join(f".{f}" for f in AUDIO_FORMATS)
        return f"{option} {raw} must end in {listed} (the format), or be a folder (end it with /)"
    problem = file_target_problem(path, option=option)
    return problem if problem is not None else AudioOut(path=path, is_folder=False, fmt=suffix)


def named_files_folder_problem(path: Path, *, option: str = "--out") -> str | None:
    """Why ``path`` cannot be the folder of a command that names its own files (``loop``, ``auto``), or None.

    ``--out loop.mp3`` would otherwise become a folder called ``loop.mp3`` holding a WAV: the same dishonesty
    ``generate`` no longer allows, refused here in one sentence instead.
    """
    if not path.is_dir() and path.suffix.lower().lstrip(".") in AUDIO_FORMATS:
        return (
            f"{option} {path} names a file, but loops are named NAME-BARSbars-BPMbpm-KEY.EXT; give a folder, "
            f"and the format with --format {path.suffix.lower().lstrip('.')}"
        )
    return folder_target_problem(path, option=option)
