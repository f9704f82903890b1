"""Storage errors: what a caller can act on, wrapping SQLAlchemy's where it matters."""

from __future__ import annotations


class StorageError(Exception):
    """Base class for storage failures."""


class JobNotFound(StorageError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job #{job_id} does not exist")
        self.job_id = job_id


class UnsafeArtifactPath(StorageError):
    """A relative artifact path that would escape the artifact directory."""
