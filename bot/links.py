"""Signed, expiring download links to artifact files (for files too big to attach on Discord).

A link is ``<base_url>/files/<relative path>?exp=<unix seconds>&sig=<hex HMAC-SHA256>``; the HMAC covers
the relative path and the expiry, so neither can be changed without the secret. Pure and stdlib-only:
the bot makes links, ``bot/file_server.py`` checks them.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from datetime import timedelta
from urllib.parse import quote, urlencode

#: The URL path prefix the file server serves artifacts under.
FILES_PREFIX = "/files/"


class LinkError(Exception):
    """A download link that must not be served."""


class BadSignature(LinkError):
    """The signature does not match the path and expiry (tampered, malformed, or another secret)."""


class LinkExpired(LinkError):
    """A correctly signed link whose expiry has passed."""

    def __init__(self, expires: int) -> None:
        super().__init__(f"link expired at {expires} (unix time)")
        self.expires = expires


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the link secret must not be empty")
    return key


def sign(relative_path: str, expires: int, *, secret: str | bytes) -> str:
    """Hex HMAC-SHA256 of the path and expiry (a newline cannot be in the signed integer, so no ambiguity)."""
    message = f"{expires}\n{relative_path}".encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def link_path(relative_path: str) -> str:
    """The URL path for an artifact: every character that is not a plain path character is %-quoted."""
    return FILES_PREFIX + quote(relative_path, safe="/")


def expiry(ttl: timedelta | float, *, now: float | None = None) -> int:
    """The unix second a link made at ``now`` (default: the current time) with ``ttl`` expires."""
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if seconds <= 0:
        raise ValueError(f"ttl must be positive, not {seconds} s")
    return math.ceil((time.time() if now is None else now) + seconds)


def make_link(
    base_url: str,
    relative_path: str,
    *,
    secret: str | bytes,
    ttl: timedelta | float,
    now: float | None = None,
) -> str:
    """A link to ``relative_path`` (e.g. ``12/beat.wav``) valid for ``ttl`` (a timedelta or seconds) from ``now``."""
    expires = expiry(ttl, now=now)
    query = urlencode({"exp": expires, "sig": sign(relative_path, expires, secret=secret)})
    return f"{base_url.rstrip('/')}{link_path(relative_path)}?{query}"


def check_link(
    relative_path: str,
    expires: str | int | None,
    signature: str | None,
    *,
    secret: str | bytes,
    now: float | None = None,
) -> int:
    """Return the expiry of a valid link; raise :class:`BadSignature` or :class:`LinkExpired` otherwise.

    The signature is checked first (in constant time), so a forged expiry is a bad signature, never
    "expired".
    """
    if expires is None or signature is None:
        raise BadSignature("the link has no expiry or no signature")
    try:
        expires_at = int(expires)
    except ValueError:
        raise BadSignature(f"malformed expiry {expires!r}") from None
    expected = sign(relative_path, expires_at, secret=secret).encode()
    if not hmac.compare_digest(expected, signature.lower().encode("utf-8", "replace")):
        raise BadSignature("the signature does not match this link")
    if (time.time() if now is None else now) >= expires_at:
        raise LinkExpired(expires_at)
    return expires_at
