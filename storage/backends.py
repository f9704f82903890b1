"""Where finished artifacts live for good: the local artifact folder, or an S3 bucket (``BEATFORGE_ARTIFACT_BACKEND``).

Both back ends keep the same relative paths (``<job id>/<name>``) the rows store, and both keep a local copy
under the :class:`ArtifactStore` root, because everything that makes or posts a file (encoders, Pillow,
discord.py's uploads) wants a path. What differs is who may rely on that folder:

* ``local``: the folder *is* the storage, shared by the bot and the workers (one machine or one volume).
  Publishing is a no-op and links come from the bot's own file server (``bot/file_server.py``).
* ``s3``: the bucket is the storage. A worker writes in its own folder as before, then :meth:`publish` uploads
  every file of the job, checked by size and checksum, before the job may be recorded done; the bot and the
  workers :meth:`fetch` a file into their folder (a cache) when they need it, and big files get presigned links.

boto3 (``storage/objects.py``) is imported only when the ``s3`` back end is chosen, so a ``local`` bot never
loads it and an install without it gets one clear sentence instead of an ``ImportError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from beatforge.config import Settings
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.errors import StorageError

if TYPE_CHECKING:
    from storage.objects import S3Target

log = logging.getLogger(__name__)


class ArtifactBackendError(StorageError, RuntimeError):
    """The configured back end cannot work (no bucket, boto3 missing): said once, at start-up."""


class ArtifactsNotStored(StorageError):
    """Not every file of a finished job reached the back end, so the job must not be recorded done. The message's
    first line is for users; the next names the object and the store's reason."""


class ArtifactUnavailable(StorageError, OSError):
    """A recorded file could not be brought here. An ``OSError``, like a missing local file, so whoever handles
    "the file is gone" (a re-post, a delivery retry) handles this too."""


class ArtifactBackend(Protocol):
    #: "local" or "s3", for logs.
    name: str

    async def publish(self, artifacts: Sequence[ArtifactRecord]) -> None:
        """Make a finished job's files durable where every process can read them.

        Raises:
            ArtifactsNotStored: some file is not stored; the job must fail or be retried, never be done.
        """
        ...

    def local_copy(self, artifact: ArtifactRecord) -> Path:
        """A local path holding ``artifact``'s bytes (may download: blocking; async callers use :meth:`fetch`).

        Raises:
            ArtifactUnavailable: it cannot be fetched.
        """
        ...

    async def fetch(self, artifact: ArtifactRecord) -> Path:
        """:meth:`local_copy` off the event loop."""
        ...

    async def fetch_path(self, relative_path: str) -> Path:
        """A local copy of a file known only by its relative path (an upload, a take a job's parameters name), checked
        against the size and checksum stored with it (s3), since there is no row to check it against.

        Raises:
            ArtifactUnavailable: it is not stored, or cannot be fetched whole.
        """
        ...

    def link(self, relative_path: str, ttl_s: float) -> tuple[str, int] | None:
        """A URL anyone may download the file from for ``ttl_s`` seconds and the unix second it expires, or None
        when this back end has none of its own (local: the bot's file server signs links)."""
        ...


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact UTF-8 name (RFC 6266 / RFC 5987)."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class LocalArtifacts:
    """The artifact folder is the storage: nothing to publish or fetch."""

    name = "local"

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    async def publish(self, artifacts: Sequence[ArtifactRecord]) -> None:  # noqa: ARG002 (the protocol's)
        return None

    def local_copy(self, artifact: ArtifactRecord) -> Path:
        return self.store.resolve(artifact.path)

    async def fetch(self, artifact: ArtifactRecord) -> Path:
        return self.local_copy(artifact)

    async def fetch_path(self, relative_path: str) -> Path:
        return self.store.resolve(relative_path)  # whoever reads it says if it is missing, as before s3 existed

    def link(self, relative_path: str, ttl_s: float) -> tuple[str, int] | None:  # noqa: ARG002 (the protocol's)
        return None


class S3Artifacts:
    """The bucket is the storage; ``store`` is this process's working area and cache, same relative paths."""

    name = "s3"

    def __init__(self, store: ArtifactStore, target: S3Target, client: Any | None = None) -> None:
        from storage import objects

        self.store, self.target = store, target
        self._objects = objects
        #: boto3 clients are thread-safe: one for every upload, download and link of this process.
        self.client = client if client is not None else objects.make_client(target)

    def key(self, relative_path: str) -> str:
        """The object key of a relative artifact path: ``<prefix>/<job id>/<name>``."""
        self.store.resolve(relative_path)  # the same paths only: nothing outside the artifact tree
        path = PurePosixPath(relative_path)
        return self.target.key_for(str(path.parent), path.name)

    async def publish(self, artifacts: Sequence[ArtifactRecord]) -> None:
        await asyncio.to_thread(self._publish, artifacts)

    def _publish(self, artifacts: Sequence[ArtifactRecord]) -> None:
        for done, artifact in enumerate(artifacts):
            key = self.key(artifact.path)
            started = time.monotonic()
            try:
                self._objects.put_verified(
                    self.client,
                    self.target,
                    self.store.resolve(artifact.path),
                    key,
                    size=artifact.bytes,
                    sha256=artifact.sha256,
                )
            except StorageError as exc:
                # First line for the user (the bot shows only that), the rest for whoever reads the row or logs.
                raise ArtifactsNotStored(
                    f"its files could not be stored ({done} of {len(artifacts)} saved)\n{exc}"
                ) from exc
            log.info(
                "artifact stored",
                extra={"key": key, "bytes": artifact.bytes, "seconds": round(time.monotonic() - started, 3)},
            )

    def local_copy(self, artifact: ArtifactRecord) -> Path:
        path = self.store.resolve(artifact.path)
        if path.is_file() and path.stat().st_size == artifact.bytes:
            return path  # made here, or fetched before (written atomically and checked, so whole)
        try:
            return self._objects.download_verified(
                self.client, self.target, self.key(artifact.path), path, size=artifact.bytes, sha256=artifact.sha256
            )
        except StorageError as exc:
            raise ArtifactUnavailable(str(exc)) from exc

    async def fetch(self, artifact: ArtifactRecord) -> Path:
        return await asyncio.to_thread(self.local_copy, artifact)

    async def fetch_path(self, relative_path: str) -> Path:
        return await asyncio.to_thread(self._copy_of_path, relative_path)

    def _copy_of_path(self, relative_path: str) -> Path:
        key = self.key(relative_path)
        try:
            stored = self._objects.head(self.client, self.target, key)
        except StorageError as exc:
            raise ArtifactUnavailable(str(exc)) from exc
        if stored is None:
            raise ArtifactUnavailable(f"{self.target.uri(key)} is not in the bucket")
        path = self.store.resolve(relative_path)
        if path.is_file() and path.stat().st_size == stored.size:
            return path  # made or sent here, or fetched before (as local_copy trusts its cache)
        try:
            # Objects put_verified stored carry their sha256; one without (written by hand) is checked by size.
            return self._objects.download_verified(
                self.client, self.target, key, path, size=stored.size, sha256=stored.sha256
            )
        except StorageError as exc:
            raise ArtifactUnavailable(str(exc)) from exc

    def link(self, relative_path: str, ttl_s: float) -> tuple[str, int] | None:
        ttl = min(ttl_s, self._objects.MAX_PRESIGN_S)
        try:
            url = self._objects.presigned_get(
                self.client,
                self.target,
                self.key(relative_path),
                ttl_s=ttl,
                disposition=content_disposition(PurePosixPath(relative_path).name),
            )
        except StorageError as exc:  # the result still goes out, naming the file as too large instead of linking it
            log.warning("no download link", extra={"path": relative_path, "error": str(exc)})
            return None
        return url, int(time.time() + ttl)


def open_backend(settings: Settings, store: ArtifactStore) -> ArtifactBackend:
    """The back end the settings choose, checked now so a bad configuration stops the process at start-up.

    Raises:
        ArtifactBackendError: s3 without a bucket, a bad target, or without boto3 installed.
    """
    if settings.artifact_backend == "local":
        return LocalArtifacts(store)
    if not settings.s3_bucket:
        raise ArtifactBackendError(
            "BEATFORGE_ARTIFACT_BACKEND=s3 needs BEATFORGE_S3_BUCKET (the bucket to keep them in)"
        )
    try:
        from storage.objects import S3Target
    except ImportError as exc:
        raise ArtifactBackendError(
            f"BEATFORGE_ARTIFACT_BACKEND=s3 needs boto3, which is not installed ({exc}): "
            "pip install -e '.[bot]' (or '.[worker]') again, or set BEATFORGE_ARTIFACT_BACKEND=local"
        ) from exc
    prefix = "/".join(p for p in (settings.s3_prefix.strip("/"), settings.s3_artifact_prefix.strip("/")) if p)
    try:
        target = S3Target(
            bucket=settings.s3_bucket, prefix=prefix, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
    except ValueError as exc:
        raise ArtifactBackendError(f"BEATFORGE_ARTIFACT_BACKEND=s3: {exc}") from exc
    backend = S3Artifacts(store, target)
    log.info("artifacts kept in a bucket", extra={"bucket": target.bucket, "prefix": prefix})
    return backend
