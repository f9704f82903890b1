"""Atomic writes: whoever reads a path sees the old file or the whole new one, never half of one.

arq may run a job twice ("pessimistic execution"), the bot reads artifact folders while the worker writes into
them, and a crash or a full disk can stop any write half-way. So every file we produce is written under a
temporary name in its final folder (the same file system, so the rename is atomic) and renamed over its final
name only once it is complete; a write that fails leaves no temporary file behind.

Temporary names start with ``.tmp-`` (hidden, and easy to sweep after a hard crash), carry a random part (two
writers of the same target never share one) and end with the target's own name, so writers that choose a format
by extension (soundfile, Pillow) still do. They are created with the process's usual permissions (``0o666``
less the umask), as a plain ``open`` would.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"


def _claim_sibling(target: Path, create: Callable[[Path], object]) -> Path:
    """A new temporary name beside ``target``, created by ``create`` (which must fail if the name exists)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.with_name(f"{TMP_PREFIX}{secrets.token_hex(4)}-{target.name}")
        try:
            create(tmp)
        except FileExistsError:  # 4 random bytes: only ever a coincidence, so draw again
            continue
        return tmp


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield an empty temporary file beside ``target`` to write; on a clean exit it replaces ``target``.

    The folder is created if missing. On an exception the temporary file is removed and ``target`` is untouched.
    """
    tmp = _claim_sibling(target, lambda path: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))
    try:
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target`` to fill; on a clean exit it becomes ``target``.

    ``target`` must not exist or be an empty folder (a non-empty one raises ``OSError`` and is kept). On an
    exception the temporary folder and everything in it are removed.
    """
    tmp = _claim_sibling(target, Path.mkdir)
    try:
        yield tmp
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(target: Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; returns ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def atomic_write_text(target: Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically, flushed to disk before the rename; returns ``target``.

    Text files here are small records (metadata, the model registry) that must survive a power cut once written,
    so they are synced; bulky audio is not, since it can be made again.
    """
    with atomic_path(target) as tmp, tmp.open("w", encoding=encoding) as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return target
