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
from pathlib import Path

from dataclasses import replace
from urllib.parse import urlsplit

from infra.settings import REDIS_PASSWORD_SECRET, Settings, with_redis_password


class MissingSecretError(RuntimeError):
    """A secret that production must be given, named by its environment variable."""

    def __init__(self, variable: str, why: str) -> None:
        super().__init__(f"{variable} must be set in production: {why}")
        self.variable = variable


def secrets_dir(settings: Settings) -> Path:
    return settings.data_dir / "secrets"


def dev_secret(settings: Settings, name: str, variable: str, *, nbytes: int = 32) -> str:
    """The dev secret ``name``: read from the data dir, or created there atomically (first writer wins)."""
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
    value = secrets.token_urlsafe(nbytes)
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
