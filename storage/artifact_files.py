"""Where the files ``beatforge gc`` and ``doctor`` judge are kept, and how to list, check and delete them there.

With ``BEATFORGE_ARTIFACT_BACKEND=local`` that is the artifact directory itself (:class:`FolderFiles`). With
``s3`` it is the bucket (:class:`BucketFiles`): every machine's artifact directory is then only a cache that
fills on demand, so a file missing from it proves nothing, and deleting a job's cached copy frees nothing for
good. Judging the bucket keeps doctor from dropping rows of files that are safe in it, and lets gc actually
remove what it removes. Other machines' caches are theirs to clear (any file there may go: it is fetched again).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from beatforge.config import Settings
from storage.artifacts import ArtifactStore
from storage.backends import S3Artifacts, open_backend
from storage.errors import UnsafeArtifactPath
from storage.files import TMP_PREFIX

log = logging.getLogger(__name__)

#: Folder of files users sent before their job existed (``ArtifactStore.writing("uploads", ...)``).
UPLOADS = "uploads"


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file under the artifact directory."""

    #: Relative to the artifact directory, with ``/`` separators, as rows store it.
    path: str
    bytes: int
    modified: datetime

    @property
    def temporary(self) -> bool:
        """Part of an atomic write (or left by one that crashed)."""
        return any(part.startswith(TMP_PREFIX) for part in self.path.split("/"))

    @property
    def folder(self) -> str:
        return self.path.split("/", 1)[0]


def scan_files(store: ArtifactStore) -> list[StoredFile]:
    """The files ArtifactStore writes (job folders, ``uploads``) and temporary leftovers at the top.

    Anything else someone put in the directory is not ours to judge, so it is not listed.
    """
    root = store.root
    if not root.is_dir():
        return []
    found: list[StoredFile] = []
    for entry in root.iterdir():
        if not (entry.name.isdigit() or entry.name == UPLOADS or entry.name.startswith(TMP_PREFIX)):
            continue
        for path in _walk(entry):
            try:
                stat = path.lstat()
            except FileNotFoundError:  # removed while we looked (a temporary file renamed into place)
                continue
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            found.append(StoredFile(path.relative_to(root).as_posix(), stat.st_size, modified))
    return sorted(found, key=lambda f: f.path)


def _walk(entry: Path) -> Iterator[Path]:
    if entry.is_symlink() or entry.is_file():
        yield entry
        return
    for dirpath, _dirs, files in os.walk(entry):
        for name in files:
            yield Path(dirpath) / name


class ArtifactFiles(Protocol):
    """Where the files gc and doctor judge are kept: the artifact directory, or (s3) the bucket."""

    #: For messages: "the artifact directory", "s3://bucket/prefix/".
    where: str

    def scan(self) -> list[StoredFile]:
        """Every file kept, as :func:`scan_files` lists them."""
        ...

    def exists(self, relative: str) -> bool:
        """Is this file (a row's path the scan may not have listed) kept? Raises when it cannot tell."""
        ...

    def delete(self, paths: Iterable[str]) -> list[str]:
        """Delete each one (an absent one is already gone); the paths that could not be deleted."""
        ...


class FolderFiles:
    """The artifact directory is the storage (``BEATFORGE_ARTIFACT_BACKEND=local``)."""

    where = "the artifact directory"

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def scan(self) -> list[StoredFile]:
        return scan_files(self.store)

    def exists(self, relative: str) -> bool:
        return _exists(self.store, relative)

    def delete(self, paths: Iterable[str]) -> list[str]:
        return delete_files(self.store, paths)


def delete_files(store: ArtifactStore, paths: Iterable[str]) -> list[str]:
    """Delete each file (a missing one is already gone) and the folders left empty; the paths that failed."""
    failed: list[str] = []
    folders: set[Path] = set()
    for relative in paths:
        try:
            path = store.resolve(relative)
            path.unlink(missing_ok=True)
        except (OSError, UnsafeArtifactPath) as exc:
            log.warning("could not delete an artifact file", extra={"path": relative, "error": repr(exc)})
            failed.append(relative)
            continue
        folders.update(p for p in path.parents if p.is_relative_to(store.root) and p != store.root)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.name == UPLOADS and folder.parent == store.root:
            continue
        try:
            folder.rmdir()
        except OSError:  # not empty (other files of the job), or gone: either way nothing to do
            continue
    return failed


def _exists(store: ArtifactStore, relative: str) -> bool:
    """For rows the scan did not list (a path outside the layout ``scan_files`` knows): is the file there?"""
    try:
        return store.resolve(relative).is_file()
    except UnsafeArtifactPath:
        return False


class BucketFiles:
    """The bucket is the storage (``BEATFORGE_ARTIFACT_BACKEND=s3``): objects under the artifact prefix, named by
    the same relative paths the rows store. Every failure to list or look up raises (a :class:`StorageError`):
    an unreachable bucket must never read as an empty one."""

    def __init__(self, backend: S3Artifacts) -> None:
        from storage import objects  # boto3: only here, with the s3 back end chosen

        self.backend, self._objects = backend, objects
        target = backend.target
        self._prefix = f"{target.prefix.strip('/')}/" if target.prefix.strip("/") else ""
        self.where = target.uri(self._prefix)

    def scan(self) -> list[StoredFile]:
        found: list[StoredFile] = []
        for obj in self._objects.list_objects(self.backend.client, self.backend.target):
            relative = obj.key.removeprefix(self._prefix)
            folder = relative.split("/", 1)[0]
            if "/" in relative and (folder.isdigit() or folder == UPLOADS):  # the layout the rows use, as scan_files
                found.append(StoredFile(relative, obj.size, obj.modified.astimezone(UTC)))
        return sorted(found, key=lambda f: f.path)

    def exists(self, relative: str) -> bool:
        try:
            key = self.backend.key(relative)
        except UnsafeArtifactPath:
            return False
        return self._objects.head(self.backend.client, self.backend.target, key) is not None

    def delete(self, paths: Iterable[str]) -> list[str]:
        keys: dict[str, str] = {}
        failed: list[str] = []
        for relative in paths:
            try:
                keys[self.backend.key(relative)] = relative
            except UnsafeArtifactPath:
                failed.append(relative)
        failed += [keys[k] for k in self._objects.delete_objects(self.backend.client, self.backend.target, list(keys))]
        delete_files(self.backend.store, keys.values())  # this machine's cached copies (a failure there is logged)
        return failed


def kept_files(settings: Settings, store: ArtifactStore) -> ArtifactFiles:
    """Where the configured back end keeps the files (``store``: this machine's artifact directory).

    Raises:
        ArtifactBackendError: the s3 back end is chosen but cannot work (no bucket, no boto3).
    """
    backend = open_backend(settings, store)
    return BucketFiles(backend) if isinstance(backend, S3Artifacts) else FolderFiles(store)
