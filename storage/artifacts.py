"""Artifact files on disk: written atomically, addressed by paths relative to one root.

Rows store relative paths so the bot and worker containers can mount the same volume at
different places, and a half-written file is never visible under its final name (arq may
run a job twice, "pessimistic execution").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beatforge.contract import ArtifactKind
from storage.errors import UnsafeArtifactPath
from storage.files import atomic_path


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    kind: ArtifactKind
    path: str
    bytes: int
    sha256: str
    #: The JSON of the kind's metadata model (``beatforge.contract.artifacts``): written with ``model_dump``,
    #: read with ``model_validate``; storage keeps it as it is.
    meta: dict[str, Any] | None = None


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise UnsafeArtifactPath(f"{relative!r} is outside the artifact directory")
        return path

    @contextmanager
    def writing(self, folder: int | str, filename: str) -> Iterator[Path]:
        """Yield a temporary path to write to; on success it is renamed to ``<folder>/<filename>``.

        ``folder`` is a job id, or ``uploads`` for files users sent before their job existed.
        """
        with atomic_path(self.resolve(f"{folder}/{filename}")) as tmp:
            yield tmp

    def record(
        self, job_id: int, filename: str, *, kind: ArtifactKind, meta: dict[str, Any] | None = None
    ) -> ArtifactRecord:
        """Describe a stored file for its database row (size and checksum let anyone verify it later)."""
        relative = f"{job_id}/{filename}"
        path = self.resolve(relative)
        return ArtifactRecord(
            kind=ArtifactKind(kind), path=relative, bytes=path.stat().st_size, sha256=sha256_of(path), meta=meta
        )


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks (artifacts run to tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
