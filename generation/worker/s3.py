"""Optional copy of finished artifacts to S3 or any S3-compatible store (MinIO, R2, B2, moto).

Credentials are never passed in here: boto3 finds them the usual way (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance or container role), so no secret ever sits
in code, in the repository or in ``Settings``. boto3 is synchronous; async callers (the worker) run
:func:`upload_files` in a thread.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from beatforge.config import Settings
from storage.errors import StorageError

#: Explicit types for what beatforge writes, so players and browsers get them right whatever the
#: host's mime database says (``.flac`` and ``.ogg`` are missing or odd on some systems).
CONTENT_TYPES: Final[dict[str, str]] = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".mid": "audio/midi",
    ".midi": "audio/midi",
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".txt": "text/plain; charset=utf-8",
}


class S3ConfigError(StorageError, ValueError):
    """An S3 target that cannot work (no bucket, a prefix with ``..``), caught before any request."""


class UploadFailed(StorageError):
    """A file could not be stored; ``uploaded`` lists the keys that did make it before the failure."""

    def __init__(self, message: str, *, bucket: str, key: str, uploaded: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.key = key
        self.uploaded = list(uploaded)


@dataclass(frozen=True, slots=True)
class S3Target:
    """Where artifacts go: ``s3://<bucket>/<prefix>/...`` on AWS, or on ``endpoint_url`` when set."""

    bucket: str
    prefix: str = ""
    #: ``None`` means AWS itself; e.g. ``http://minio:9000`` or ``https://<account>.r2.cloudflarestorage.com``.
    endpoint_url: str | None = None
    #: ``None`` lets boto3 use ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` / the profile's region.
    region: str | None = None

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket or self.bucket != self.bucket.strip():
            raise S3ConfigError(f"bucket={self.bucket!r} is not a bucket name")
        _check_key_part(self.prefix, what="prefix")
        if self.endpoint_url is not None and not self.endpoint_url.startswith(("http://", "https://")):
            raise S3ConfigError(f"endpoint_url={self.endpoint_url!r} must start with http:// or https://")

    def key_for(self, key_prefix: str, filename: str) -> str:
        """The object key for ``filename``: target prefix, then ``key_prefix``, then the name, '/'-joined."""
        _check_key_part(key_prefix, what="key_prefix")
        parts = [p for part in (self.prefix, key_prefix) for p in part.split("/") if p]
        return "/".join([*parts, filename])

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def make_client(target: S3Target) -> Any:
    """A boto3 S3 client for ``target``, with bounded retries and timeouts so a dead endpoint fails in seconds.

    Path-style addressing works with every S3-compatible server (MinIO and moto have no per-bucket
    DNS); virtual-host style stays the default on AWS itself.
    """
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path" if target.endpoint_url else "auto"},
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=target.endpoint_url, region_name=target.region, config=config)


def content_type_for(path: Path) -> str:
    """The Content-Type stored with ``path``: beatforge's own table first, then the system's, then bytes."""
    suffix = path.suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def upload_files(target: S3Target, files: Sequence[Path], *, key_prefix: str, client: Any | None = None) -> list[str]:
    """Upload ``files`` under ``<target.prefix>/<key_prefix>/<file name>``; returns the object keys, in order.

    Every file is checked before the first request, so a missing file or two files with the same
    name upload nothing. boto3 and botocore failures (no such bucket, access denied, endpoint down)
    become :class:`UploadFailed` naming the bucket and key; keys already uploaded are on the error.
    Pass ``client`` to reuse one (clients are thread-safe); otherwise one is made from ``target``.
    """
    planned: list[tuple[Path, str]] = []
    seen: dict[str, Path] = {}
    for path in files:
        key = target.key_for(key_prefix, path.name)
        if key in seen:
            raise UploadFailed(
                f"{path} and {seen[key]} would both be s3://{target.bucket}/{key}; nothing uploaded",
                bucket=target.bucket,
                key=key,
            )
        if not path.is_file():
            raise UploadFailed(
                f"{path} is not a file, so s3://{target.bucket}/{key} cannot be written; nothing uploaded",
                bucket=target.bucket,
                key=key,
            )
        seen[key] = path
        planned.append((path, key))

    s3 = client if client is not None else make_client(target)
    uploaded: list[str] = []
    for path, key in planned:
        try:
            s3.upload_file(str(path), target.bucket, key, ExtraArgs={"ContentType": content_type_for(path)})
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise UploadFailed(
                f"could not upload {path.name} to s3://{target.bucket}/{key}"
                f"{f' at {target.endpoint_url}' if target.endpoint_url else ''}: {_reason(exc)}"
                f" ({len(uploaded)} of {len(planned)} files uploaded before this)",
                bucket=target.bucket,
                key=key,
                uploaded=uploaded,
            ) from exc
        uploaded.append(key)
    return uploaded


def _check_key_part(value: str, *, what: str) -> None:
    # ".." would not escape a bucket, but it makes keys that tools show and resolve differently.
    if any(part in (".", "..") for part in value.split("/")) or "\\" in value:
        raise S3ConfigError(f"{what}={value!r} must be plain '/'-separated names (no '.', '..' or '\\\\')")


def _reason(exc: Exception) -> str:
    """The useful part of a boto error: S3's error code and message when there is one."""
    cause: BaseException = exc
    # boto3's S3UploadFailedError wraps the ClientError that knows the code.
    while not isinstance(cause, ClientError) and cause.__context__ is not None:
        cause = cause.__context__
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        return f"{code}: {message}" if message else str(code)
    return str(exc)


def s3_target(settings: Settings) -> S3Target | None:
    """The configured bucket, or None when S3 uploads are off (the default)."""
    if not settings.s3_bucket:
        return None
    return S3Target(
        bucket=settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
    )
