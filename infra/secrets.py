"""Secrets of the embedded (dev) stack, generated once into the data dir.

A dev stack must not run on secrets everybody knows (a published default JWT key lets anyone mint a
token for any user). When a secret is not configured and ``VITRINA_ENV`` is not ``production``, it is
generated on first use into ``<data_dir>/secrets/<name>`` (mode 0600) and read from there afterwards,
so every process of the same stack (API, workers, ``vitrina token``) agrees on it. In production a
missing secret is an error that names its variable (``api/security.py``).
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from dataclasses import replace
from urllib.parse import urlsplit

from infra.settings import (
    REDIS_PASSWORD_SECRET,
    S3_CREDENTIALS_SECRET,
    Settings,
    read_dev_s3_credentials,
    uses_dev_s3_credentials,
    with_redis_password,
)


class MissingSecretError(RuntimeError):
    """A secret that production must be given, named by its environment variable."""

    def __init__(self, variable: str, why: str) -> None:
        super().__init__(f"{variable} must be set in production: {why}")
        self.variable = variable


def secrets_dir(settings: Settings) -> Path:
    return settings.data_dir / "secrets"


def dev_secret(settings: Settings, name: str, variable: str, *, nbytes: int = 32,
               generate: Callable[[], str] | None = None) -> str:
    """The dev secret ``name``: read from the data dir, or created there atomically (first writer wins).
    ``generate`` makes the value (default: ``nbytes`` random bytes, URL-safe base64)."""
    if settings.env == "production":
        raise MissingSecretError(variable, "no generated secrets outside the embedded dev stack")
    folder = secrets_dir(settings)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process is writing it right now
            value = path.read_text(encoding="ascii").strip()
            if value:
                return value
            import time
            time.sleep(0.02)
        raise RuntimeError(f"{path} stays empty: delete it to have it generated again") from None
    value = generate() if generate is not None else secrets.token_urlsafe(nbytes)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
    return value


def ensure_dev_redis_password(settings: Settings) -> Settings:
    """Settings whose Redis URL carries a password: the one given, else (dev) the data dir's generated
    one, created now. The embedded Redis starts with ``--requirepass`` from the URL, so no local process
    reads or writes the views without it."""
    if urlsplit(settings.redis_url).password or settings.env == "production":
        return settings
    password = dev_secret(settings, REDIS_PASSWORD_SECRET, "VITRINA_REDIS_URL", nbytes=24)
    return replace(settings, redis_url=with_redis_password(settings.redis_url, password))


def _new_s3_credentials() -> str:
    # an AWS-shaped access key (20 upper-case characters) and a 40-character secret
    return f"VT{secrets.token_hex(9).upper()}\n{secrets.token_urlsafe(30)}"


def ensure_dev_s3_credentials(settings: Settings) -> Settings:
    """Settings with S3 credentials of their own: the ones configured, else (dev, the published defaults)
    the data dir's generated access key and secret, created now. The embedded SeaweedFS accepts only
    them (``EmbeddedStack`` writes its S3 identity from these settings); production is never changed
    (it refuses the defaults, api/hardening.py)."""
    if settings.env == "production" or not uses_dev_s3_credentials(settings):
        return settings
    access_key, secret_key = dev_secret(settings, S3_CREDENTIALS_SECRET, "VITRINA_S3_ACCESS_KEY/VITRINA_S3_SECRET_KEY",
                                        generate=_new_s3_credentials).splitlines()[:2]
    return replace(settings, s3_access_key=access_key.strip(), s3_secret_key=secret_key.strip())


def record_dev_s3_credentials(settings: Settings) -> None:
    """Write the credentials the embedded S3 starts with into the data dir (dev only), so that every
    process of the stack that is not given them (default credentials) finds them: also when the stack
    was started with configured ones, e.g. settings carried over from another data dir."""
    if settings.env == "production" or uses_dev_s3_credentials(settings):
        return
    if read_dev_s3_credentials(settings.data_dir) == (settings.s3_access_key, settings.s3_secret_key):
        return
    folder = secrets_dir(settings)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / S3_CREDENTIALS_SECRET
    temporary = folder / f".{S3_CREDENTIALS_SECRET}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"{settings.s3_access_key}\n{settings.s3_secret_key}\n")
    os.replace(temporary, path)  # readers see the old or the new pair, never half of one


def ensure_dev_secrets(settings: Settings) -> Settings:
    """Every generated secret of the embedded stack: the Redis password and the S3 credentials."""
    return ensure_dev_s3_credentials(ensure_dev_redis_password(settings))
