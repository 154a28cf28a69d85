"""Signed playback URLs (Mail.Ru: an object key alone must never be enough to play a video).

    sign_url(key_id, path, expires_at, secret) -> "/assets/<id>/720p.mp4?exp=...&kid=...&sig=..."

The HMAC-SHA256 covers the key id, the exact path and the expiry, so a signature cannot be moved to
another object or extended. `key_id` names the secret, so secrets can be rotated: verify() accepts a
mapping {key_id: secret}. Comparison is constant-time (hmac.compare_digest).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone
from enum import Enum
from typing import Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

EXP, KID, SIG = "exp", "kid", "sig"


class VerifyResult(str, Enum):
    OK = "OK"
    EXPIRED = "EXPIRED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    MISSING_SIGNATURE = "MISSING_SIGNATURE"


Secret = str | bytes
Secrets = Secret | Mapping[str, Secret]


def _epoch(moment: datetime | int | float) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware UTC time")
        return int(moment.timestamp())
    return int(moment)


def _bytes(secret: Secret) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _normalise(path: str) -> str:
    path = "/" + path.lstrip("/")
    return quote(path, safe="/-._~%")


def signature(key_id: str, path: str, expires: int, secret: Secret) -> str:
    message = f"{key_id}\n{_normalise(path)}\n{expires}".encode("utf-8")
    digest = hmac.new(_bytes(secret), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_url(key_id: str, path: str, expires_at: datetime | int | float, secret: Secret,
             base_url: str = "") -> str:
    """Signed URL for an object path (e.g. an S3 key or '/assets/<id>/720p.mp4')."""
    if not secret:
        raise ValueError("empty signing secret")
    expires = _epoch(expires_at)
    query = urlencode({EXP: expires, KID: key_id, SIG: signature(key_id, path, expires, secret)})
    return f"{base_url.rstrip('/')}{_normalise(path)}?{query}"


def verify(url_or_path: str, secret: Secrets, now: datetime | int | float,
           params: Mapping[str, str] | None = None) -> VerifyResult:
    """Check a signed URL (or a path plus its query params). The signature is checked before the
    expiry, so EXPIRED is only reported for URLs that were genuinely issued."""
    parts = urlsplit(url_or_path)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if params:
        query.update(params)
    path = parts.path
    if not query.get(SIG) or not query.get(EXP) or KID not in query:
        return VerifyResult.MISSING_SIGNATURE
    try:
        expires = int(query[EXP])
    except ValueError:
        return VerifyResult.BAD_SIGNATURE
    key_id = query[KID]
    if isinstance(secret, Mapping):
        chosen = secret.get(key_id)
        if chosen is None:
            return VerifyResult.BAD_SIGNATURE
    else:
        chosen = secret
    expected = signature(key_id, path, expires, chosen)
    if not hmac.compare_digest(expected.encode("ascii"), query[SIG].encode("ascii", errors="replace")):
        return VerifyResult.BAD_SIGNATURE
    if _epoch(now) >= expires:
        return VerifyResult.EXPIRED
    return VerifyResult.OK


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
