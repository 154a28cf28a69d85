"""Signed playback URLs (Mail.Ru: an object key alone must never be enough to play a video).

    sign_url(key_id, path, expires_at, secret) -> "/assets/<id>/720p.mp4?exp=...&kid=...&sig=..."

The HMAC-SHA256 covers the key id, the exact path and the expiry, so a signature cannot be moved to
another object or extended. `key_id` names the secret, so secrets can be rotated: verify() accepts a
mapping {key_id: secret}. Comparison is constant-time (hmac.compare_digest).

Parsing is strict, so that no two spellings of one URL verify: exactly one ``exp``, ``kid`` and ``sig``
each (a second ``sig`` is refused, not "the last wins"), ``exp`` a canonical decimal integer (no sign,
no leading zero, no spaces or separators), and an expiry further away than ``max_ttl_s`` (7 days) is
refused at verification too, not only when URLs are issued: a leaked or forged long-lived URL is no use.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timezone
from enum import Enum
from typing import Mapping
from urllib.parse import parse_qs, quote, urlencode, urlsplit

EXP, KID, SIG = "exp", "kid", "sig"
MAX_TTL_S = 7 * 24 * 3600
_CANONICAL_EXP = re.compile(r"[1-9][0-9]{0,11}")


class VerifyResult(str, Enum):
    OK = "OK"
    EXPIRED = "EXPIRED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    MISSING_SIGNATURE = "MISSING_SIGNATURE"
    EXPIRY_TOO_FAR = "EXPIRY_TOO_FAR"


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
           params: Mapping[str, str] | None = None, max_ttl_s: int = MAX_TTL_S) -> VerifyResult:
    """Check a signed URL (or a path plus its query params). The signature is checked before the
    expiry, so EXPIRED and EXPIRY_TOO_FAR are only reported for URLs that were genuinely issued."""
    parts = urlsplit(url_or_path)
    query = parse_qs(parts.query, keep_blank_values=True)
    if params:
        for name, value in params.items():
            query.setdefault(name, []).append(value)
    path = parts.path
    if any(len(query.get(name, ())) > 1 for name in (SIG, EXP, KID)):
        return VerifyResult.BAD_SIGNATURE  # two signatures, expiries or key ids: which one was meant?
    raw_exp, sig = query.get(EXP, [""])[0], query.get(SIG, [""])[0]
    if not sig or not raw_exp or KID not in query:
        return VerifyResult.MISSING_SIGNATURE
    key_id = query[KID][0]
    if not _CANONICAL_EXP.fullmatch(raw_exp):
        return VerifyResult.BAD_SIGNATURE
    expires = int(raw_exp)
    if isinstance(secret, Mapping):
        chosen = secret.get(key_id)
        if chosen is None:
            return VerifyResult.BAD_SIGNATURE
    else:
        chosen = secret
    expected = signature(key_id, path, expires, chosen)
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii", errors="replace")):
        return VerifyResult.BAD_SIGNATURE
    moment = _epoch(now)
    if moment >= expires:
        return VerifyResult.EXPIRED
    if expires - moment > max_ttl_s:
        return VerifyResult.EXPIRY_TOO_FAR
    return VerifyResult.OK


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
