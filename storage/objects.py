"""S3 and S3-compatible object storage (AWS, MinIO, R2, B2, moto): the one place beatforge talks to a bucket.

Two users: the optional copy of loops to a bucket (``upload_files``: the worker's loop jobs, ``beatforge loop``
and ``auto``), and the ``s3`` artifact back end (``storage/backends.py``), which keeps every finished file in a
bucket (``put_verified``), fetches it back (``download_verified``, ``head``) and hands out presigned links
(``presigned_get``) so the bot and the workers need not share a disk; ``beatforge gc`` and ``doctor`` list and
delete its objects (``list_objects``, ``delete_objects``: ``storage/bucket_files.py``).

Credentials are never passed in here: boto3 finds them the usual way (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance or container role), so no secret ever sits
in code, in the repository or in ``Settings``. boto3 is synchronous; async callers run these functions in a
thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from beatforge.config import Settings
from storage.artifacts import sha256_of
from storage.errors import StorageError
from storage.files import atomic_path

log = logging.getLogger(__name__)

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
        # SigV4 everywhere: presigned URLs otherwise default to SigV2, which AWS regions since 2014 refuse.
        signature_version="s3v4",
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
                f"could not upload {path.name} to s3://{target.bucket}/{key}{_at(target)}: {_reason(exc)}"
                f" ({len(uploaded)} of {len(planned)} files uploaded before this)",
                bucket=target.bucket,
                key=key,
                uploaded=uploaded,
            ) from exc
        uploaded.append(key)
    return uploaded


#: The user metadata (``x-amz-meta-sha256``) an artifact's checksum travels under, so a reader can check it.
SHA256_META: Final = "sha256"
#: S3 signs a presigned URL (SigV4) for at most a week.
MAX_PRESIGN_S: Final = 7 * 24 * 3600


class DownloadFailed(StorageError):
    """An object could not be fetched whole: missing, unreachable, or not the bytes that were recorded."""

    def __init__(self, message: str, *, bucket: str, key: str) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.key = key


def put_verified(client: Any, target: S3Target, path: Path, key: str, *, size: int, sha256: str) -> None:
    """Upload ``path`` as ``key`` with its checksum as metadata, then read the object's head back.

    An object counts as stored only once S3 itself reports the size and checksum meant (a proxy that cut the
    body short, or a file changed since it was recorded, must not pass as a finished artifact). A single PUT
    or a multipart upload is all-or-nothing on S3: a failure leaves no partial object under ``key``.

    Raises:
        UploadFailed: the upload or the check failed; the message names the object and S3's reason.
    """
    if not path.is_file() or path.stat().st_size != size:
        found = path.stat().st_size if path.is_file() else "no"
        raise UploadFailed(
            f"{path.name} has {found} bytes, not the {size} recorded; {target.uri(key)} not written",
            bucket=target.bucket,
            key=key,
        )
    extra = {"ContentType": content_type_for(path), "Metadata": {SHA256_META: sha256}}
    try:
        client.upload_file(str(path), target.bucket, key, ExtraArgs=extra)
        head = client.head_object(Bucket=target.bucket, Key=key)
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise UploadFailed(
            f"could not upload {path.name} to {target.uri(key)}{_at(target)}: {_reason(exc)}",
            bucket=target.bucket,
            key=key,
        ) from exc
    stored_size, stored_sha = head.get("ContentLength"), head.get("Metadata", {}).get(SHA256_META)
    if stored_size != size or stored_sha != sha256:
        raise UploadFailed(
            f"{target.uri(key)} holds {stored_size} bytes with sha256 {stored_sha}, not the {size} bytes written",
            bucket=target.bucket,
            key=key,
        )


def download_verified(
    client: Any, target: S3Target, key: str, dest: Path, *, size: int, sha256: str | None = None
) -> Path:
    """Fetch ``key`` into ``dest``: written under a temporary name, renamed only once its size (and checksum,
    when given) match, so a cut-off download is never mistaken for the file. Returns ``dest``.

    Raises:
        DownloadFailed: missing object, unreachable endpoint, or other bytes than recorded.
    """
    with atomic_path(dest) as tmp:
        try:
            client.download_file(target.bucket, key, str(tmp))
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise DownloadFailed(
                f"could not download {target.uri(key)}{_at(target)}: {_reason(exc)}", bucket=target.bucket, key=key
            ) from exc
        got = tmp.stat().st_size
        if got != size:
            raise DownloadFailed(
                f"{target.uri(key)} has {got} bytes, not the {size} recorded", bucket=target.bucket, key=key
            )
        if sha256 is not None and sha256_of(tmp) != sha256:
            raise DownloadFailed(
                f"{target.uri(key)} does not have the recorded sha256 {sha256}", bucket=target.bucket, key=key
            )
    return dest


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What the bucket says about one object: its size, the sha256 ``put_verified`` stored (None for objects
    written by anything else) and when it was written."""

    key: str
    size: int
    sha256: str | None
    modified: datetime


def head(client: Any, target: S3Target, key: str) -> StoredObject | None:
    """``key``'s size and stored checksum, or None when there is no such object.

    Only a 404 means "absent": any other failure raises, so a bucket that is unreachable or refuses reads is never
    taken for one whose objects are gone (doctor would drop their rows).

    Raises:
        DownloadFailed: the bucket could not answer.
    """
    try:
        found = client.head_object(Bucket=target.bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise DownloadFailed(
            f"could not look up {target.uri(key)}{_at(target)}: {_reason(exc)}", bucket=target.bucket, key=key
        ) from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise DownloadFailed(
            f"could not look up {target.uri(key)}{_at(target)}: {_reason(exc)}", bucket=target.bucket, key=key
        ) from exc
    meta = found.get("Metadata", {})
    return StoredObject(key, int(found["ContentLength"]), meta.get(SHA256_META), found["LastModified"])


def list_objects(client: Any, target: S3Target) -> list[StoredObject]:
    """Every object under the target's prefix (one listing per 1000 objects; no checksums: a listing has none).

    Raises:
        DownloadFailed: the bucket could not be listed (a half listing would read as missing files).
    """
    under = f"{target.prefix.strip('/')}/" if target.prefix.strip("/") else ""
    found: list[StoredObject] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=under):
            found += [StoredObject(o["Key"], int(o["Size"]), None, o["LastModified"]) for o in page.get("Contents", [])]
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise DownloadFailed(
            f"could not list {target.uri(under)}{_at(target)}: {_reason(exc)}", bucket=target.bucket, key=under
        ) from exc
    return found


def delete_objects(client: Any, target: S3Target, keys: Sequence[str]) -> list[str]:
    """Delete ``keys`` (1000 a request, S3's limit; an absent key counts as deleted); the keys that failed."""
    failed: list[str] = []
    for start in range(0, len(keys), 1000):
        chunk = list(keys[start : start + 1000])
        try:
            answer = client.delete_objects(
                Bucket=target.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            log.warning("could not delete objects", extra={"bucket": target.bucket, "error": _reason(exc)})
            failed += chunk
            continue
        for error in answer.get("Errors", []):
            log.warning("could not delete an object", extra={"key": error.get("Key"), "error": error.get("Code")})
            failed.append(str(error.get("Key")))
    return failed


def presigned_get(client: Any, target: S3Target, key: str, *, ttl_s: float, disposition: str) -> str:
    """A GET URL for ``key`` that works without credentials for ``ttl_s`` seconds (at most a week, S3's limit).

    Signing is local (no request is made); ``disposition`` makes browsers save the file under its own name.

    Raises:
        StorageError: it cannot be signed (no credentials found).
    """
    try:
        url = client.generate_presigned_url(
            "get_object",
            Params={"Bucket": target.bucket, "Key": key, "ResponseContentDisposition": disposition},
            ExpiresIn=max(1, min(int(ttl_s), MAX_PRESIGN_S)),
        )
    except (ClientError, BotoCoreError) as exc:
        raise StorageError(f"cannot sign a link to {target.uri(key)}: {_reason(exc)}") from exc
    return str(url)


def _at(target: S3Target) -> str:
    return f" at {target.endpoint_url}" if target.endpoint_url else ""


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
