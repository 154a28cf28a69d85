from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from processors.media.signing import VerifyResult, sign_url, signature, verify

SECRET = "s3cret-for-tests"
PATH = "/assets/0123456789abcdef0123456789abcdef-1055736/720p.mp4"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
EXPIRES = NOW + timedelta(hours=1)


def signed(path: str = PATH, expires=EXPIRES, secret=SECRET, key_id: str = "k1") -> str:
    return sign_url(key_id, path, expires, secret)


def tamper(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return f"{parts.path}?{urlencode(query)}"


def drop(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = {k: v for k, v in parse_qsl(parts.query) if k != name}
    return f"{parts.path}?{urlencode(query)}"


CASES = [
    ("valid", lambda: signed(), SECRET, NOW, VerifyResult.OK),
    ("valid one second before expiry", lambda: signed(), SECRET, EXPIRES - timedelta(seconds=1), VerifyResult.OK),
    ("expired exactly at expiry", lambda: signed(), SECRET, EXPIRES, VerifyResult.EXPIRED),
    ("expired later", lambda: signed(), SECRET, EXPIRES + timedelta(days=3), VerifyResult.EXPIRED),
    ("bare object key", lambda: PATH, SECRET, NOW, VerifyResult.MISSING_SIGNATURE),
    ("no sig", lambda: drop(signed(), "sig"), SECRET, NOW, VerifyResult.MISSING_SIGNATURE),
    ("no exp", lambda: drop(signed(), "exp"), SECRET, NOW, VerifyResult.MISSING_SIGNATURE),
    ("no kid", lambda: drop(signed(), "kid"), SECRET, NOW, VerifyResult.MISSING_SIGNATURE),
    ("empty sig", lambda: tamper(signed(), sig=""), SECRET, NOW, VerifyResult.MISSING_SIGNATURE),
    ("other object", lambda: signed().replace("720p.mp4", "1080p.mp4"), SECRET, NOW, VerifyResult.BAD_SIGNATURE),
    ("other asset", lambda: signed().replace("0123", "9123", 1), SECRET, NOW, VerifyResult.BAD_SIGNATURE),
    ("extended expiry", lambda: tamper(signed(), exp=str(int(EXPIRES.timestamp()) + 3600)), SECRET,
     NOW, VerifyResult.BAD_SIGNATURE),
    ("extended expiry after expiry", lambda: tamper(signed(), exp=str(int(EXPIRES.timestamp()) + 86400)), SECRET,
     EXPIRES + timedelta(hours=1), VerifyResult.BAD_SIGNATURE),
    ("garbage exp", lambda: tamper(signed(), exp="tomorrow"), SECRET, NOW, VerifyResult.BAD_SIGNATURE),
    ("wrong secret", lambda: signed(), "another-secret", NOW, VerifyResult.BAD_SIGNATURE),
    ("signed with another secret", lambda: signed(secret="attacker"), SECRET, NOW, VerifyResult.BAD_SIGNATURE),
    ("flipped sig char", lambda: tamper(signed(), sig=("A" if _sig(signed())[0] != "A" else "B") + _sig(signed())[1:]),
     SECRET, NOW, VerifyResult.BAD_SIGNATURE),
    ("non-ascii sig", lambda: tamper(signed(), sig="ü" * 43), SECRET, NOW, VerifyResult.BAD_SIGNATURE),
    ("other key id", lambda: tamper(signed(), kid="k2"), SECRET, NOW, VerifyResult.BAD_SIGNATURE),
    ("rotation: old key still known", lambda: signed(key_id="old", secret="old-secret"),
     {"old": "old-secret", "new": "new-secret"}, NOW, VerifyResult.OK),
    ("rotation: retired key", lambda: signed(key_id="retired", secret="x"), {"new": "new-secret"}, NOW,
     VerifyResult.BAD_SIGNATURE),
    ("full URL with host", lambda: sign_url("k1", PATH, EXPIRES, SECRET, base_url="https://cdn.example.com/"),
     SECRET, NOW, VerifyResult.OK),
    ("epoch seconds", lambda: sign_url("k1", PATH, int(EXPIRES.timestamp()), SECRET), SECRET,
     int(NOW.timestamp()), VerifyResult.OK),
]


def _sig(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["sig"]


@pytest.mark.parametrize("make_url,secret,now,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verify_table(make_url, secret, now, expected):
    assert verify(make_url(), secret, now) == expected


def test_path_plus_params_form():
    url = signed()
    params = dict(parse_qsl(urlsplit(url).query))
    assert verify(PATH, SECRET, NOW, params=params) == VerifyResult.OK
    assert verify(PATH.replace("720p", "240p"), SECRET, NOW, params=params) == VerifyResult.BAD_SIGNATURE


def test_url_shape():
    url = sign_url("k1", PATH.lstrip("/"), EXPIRES, SECRET, base_url="https://cdn.example.com")
    parts = urlsplit(url)
    assert parts.netloc == "cdn.example.com" and parts.path == PATH
    query = dict(parse_qsl(parts.query))
    assert query["exp"] == str(int(EXPIRES.timestamp())) and query["kid"] == "k1"
    assert query["sig"] == signature("k1", PATH, int(EXPIRES.timestamp()), SECRET)
    assert "=" not in query["sig"] and len(query["sig"]) == 43   # 32-byte HMAC, unpadded base64url


def test_bytes_and_str_secrets_agree():
    assert signed(secret=SECRET) == signed(secret=SECRET.encode())


@pytest.mark.parametrize("bad", [datetime(2024, 5, 1, 13, 0)])  # naive
def test_naive_datetime_is_refused(bad):
    with pytest.raises(ValueError):
        sign_url("k1", PATH, bad, SECRET)


def test_empty_secret_is_refused():
    with pytest.raises(ValueError):
        sign_url("k1", PATH, EXPIRES, "")
