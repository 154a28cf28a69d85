"""Content key of an original: MD5 + byte size, computed streaming (never the whole file in memory).

Its string form `<md5>-<size>` is the asset id: two uploads with the same key are the same bytes
(Mail.Ru dedupe: skip transcoding and link the existing asset).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

CHUNK_SIZE = 1024 * 1024
_KEY_RE = re.compile(r"^([0-9a-f]{32})-(\d+)$")


@dataclass(frozen=True, order=True)
class ContentKey:
    md5: str
    size: int

    def __str__(self) -> str:
        return f"{self.md5}-{self.size}"

    @property
    def asset_id(self) -> str:
        return str(self)

    @classmethod
    def parse(cls, text: str) -> "ContentKey":
        match = _KEY_RE.match(text.strip().lower())
        if not match:
            raise ValueError(f"not a content key (<32 hex md5>-<size>): {text!r}")
        return cls(md5=match.group(1), size=int(match.group(2)))


class ContentKeyHasher:
    """Incremental form, for feeding chunks as they arrive (e.g. while streaming from S3)."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._size = 0

    def update(self, chunk: bytes) -> None:
        self._md5.update(chunk)
        self._size += len(chunk)

    def result(self) -> ContentKey:
        return ContentKey(md5=self._md5.hexdigest(), size=self._size)


def content_key_of_chunks(chunks: Iterable[bytes]) -> ContentKey:
    hasher = ContentKeyHasher()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.result()


def iter_chunks(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterable[bytes]:
    while True:
        chunk = fileobj.read(chunk_size)
        if not chunk:
            return
        yield chunk


def content_key_of_fileobj(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> ContentKey:
    return content_key_of_chunks(iter_chunks(fileobj, chunk_size))


def content_key_of_path(path: str | Path, chunk_size: int = CHUNK_SIZE) -> ContentKey:
    with open(path, "rb") as fileobj:
        return content_key_of_fileobj(fileobj, chunk_size)
