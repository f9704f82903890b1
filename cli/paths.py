"""Where a command will write, checked before anything slow runs: a model can take minutes to load, and a
traceback from libsndfile or mkdir at the end of it says less than one sentence at the start."""

from __future__ import annotations

from pathlib import Path


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
