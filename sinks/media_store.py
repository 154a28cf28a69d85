"""The S3 side of uploads: originals in, content-addressed outputs out, per-asset manifests, and
signed playback URLs (an object key alone never plays: Mail.Ru's hot-link protection).

Layout in the media bucket:
    originals/<upload_id>/<file name>      what the uploader sent (kept while its asset lives; duplicates are
                                           references; deleted when the upload is rejected: delete_rejected_original)
    assets/<asset_id>/...                  renditions, thumbnails, playlists (processors.media.layout)
    assets/<asset_id>/manifest.json        written LAST: its presence means the asset is complete
The manifest makes dedupe survive the loss of the agent's table (a replay with a new consumer group
finds it and links instead of transcoding). Blocking minio calls; async callers use a thread.
"""
from __future__ import annotations

import contextlib
import io
import json
import mimetypes
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

from minio import Minio
from minio.error import S3Error

from infra.object_store import object_store
from infra.settings import Settings
from processors.media import layout
from processors.media.content_key import CHUNK_SIZE, ContentKey, ContentKeyHasher
from processors.media.pipeline import OutputFile
from processors.media.signing import MAX_TTL_S, VerifyResult, sign_url, verify

ORIGINALS = "originals"
MANIFEST_NAME = "manifest.json"
PART_SIZE = 16 * 1024 * 1024
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

BytesCallback = Callable[[int], None]  # bytes transferred so far


class MissingObject(LookupError):
    """The object (or its bucket) does not exist."""


def safe_file_name(name: str) -> str:
    """The last path component with anything but [A-Za-z0-9._-] replaced, never empty or hidden."""
    base = os.path.basename(name.replace("\\", "/")).strip()
    cleaned = _UNSAFE.sub("_", base).strip("._") or "upload"
    stem, dot, suffix = cleaned.rpartition(".")
    if dot and len(cleaned) > 120:
        cleaned = stem[: 110] + "." + suffix[:9]
    return cleaned[:120]


def original_key(upload_id: str, file_name: str) -> str:
    return f"{ORIGINALS}/{safe_file_name(upload_id)}/{safe_file_name(file_name)}"


def manifest_key(asset_id: str) -> str:
    return layout.asset_prefix(asset_id) + MANIFEST_NAME


def _is_missing(error: S3Error) -> bool:
    return error.code in _MISSING


class _CountingReader:
    """File wrapper that reports progress as minio reads it (streamed, never the whole file in memory)."""

    def __init__(self, handle: BinaryIO, on_bytes: BytesCallback | None) -> None:
        self._handle = handle
        self._on_bytes = on_bytes
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self.read_bytes += len(chunk)
        if self._on_bytes is not None and chunk:
            self._on_bytes(self.read_bytes)
        return chunk


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str
    etag: str


class MediaStore:
    def __init__(self, settings: Settings, client: Minio | None = None) -> None:
        self.settings = settings
        self.bucket = settings.media_bucket
        self.client = client or object_store(settings)

    # -- originals ---------------------------------------------------------------------------

    def put_original(self, path: str | Path, key: str, on_bytes: BytesCallback | None = None) -> int:
        """Stream a local file to ``key`` (multipart above PART_SIZE); returns its size."""
        path = Path(path)
        size = path.stat().st_size
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with open(path, "rb") as handle:
            self.client.put_object(self.bucket, key, _CountingReader(handle, on_bytes), length=size,
                                   part_size=PART_SIZE, content_type=content_type)
        return size

    def delete_rejected_original(self, upload_id: str, key: str) -> bool:
        """Delete a rejected upload's original. Only a key under the upload's own prefix
        (originals/<upload_id>/) is touched: the object key comes from the request, and a rejected request
        must never delete another upload's original or an asset's objects. True when it was deleted."""
        prefix = f"{ORIGINALS}/{safe_file_name(upload_id)}/"
        if not key.startswith(prefix) or "/" in key[len(prefix):] or ".." in key:
            return False
        if self.stat(key) is None:
            return False
        self.client.remove_object(self.bucket, key)
        return True

    def download_hashing(self, key: str, dest: str | Path, on_bytes: BytesCallback | None = None) -> ContentKey:
        """Stream ``key`` to ``dest`` while computing its content key; ``dest`` appears only when complete."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        hasher = ContentKeyHasher()
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as error:
            if _is_missing(error):
                raise MissingObject(f"s3://{self.bucket}/{key} does not exist") from None
            raise
        done = 0
        try:
            with open(part, "wb") as out:
                for chunk in response.stream(CHUNK_SIZE):
                    hasher.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if on_bytes is not None:
                        on_bytes(done)
            os.replace(part, dest)
        finally:
            response.close()
            response.release_conn()
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        return hasher.result()

    # -- objects -----------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            found = self.client.stat_object(self.bucket, key)
        except S3Error as error:
            if _is_missing(error):
                return None
            raise
        return ObjectInfo(size=int(found.size or 0), content_type=found.content_type or "application/octet-stream",
                          etag=(found.etag or "").strip('"'))

    def upload_outputs(self, files: Iterable[OutputFile]) -> tuple[int, int]:
        """Upload in the given order (playlists last), skipping objects already there with the same
        size: content-addressed keys make a repeated or replayed upload a no-op. Returns (put, skipped)."""
        put = skipped = 0
        for f in files:
            existing = self.stat(f.object_key)
            if existing is not None and existing.size == f.size_bytes:
                skipped += 1
                continue
            self.client.fput_object(self.bucket, f.object_key, str(f.path), content_type=f.content_type,
                                    part_size=PART_SIZE)
            put += 1
        return put, skipped

    def read(self, key: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        """Stream an object (or a byte range of it); raises MissingObject."""
        try:
            response = self.client.get_object(self.bucket, key, offset=offset, length=length)
        except S3Error as error:
            if _is_missing(error):
                raise MissingObject(f"s3://{self.bucket}/{key} does not exist") from None
            raise
        try:
            yield from response.stream(256 * 1024)
        finally:
            response.close()
            response.release_conn()

    def download(self, key: str, dest: str | Path) -> Path:
        """Stream an object to a local file (raises MissingObject)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            for chunk in self.read(key):
                out.write(chunk)
        return dest

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True))

    # -- manifests ---------------------------------------------------------------------------

    def read_manifest(self, asset_id: str) -> dict[str, Any] | None:
        try:
            data = b"".join(self.read(manifest_key(asset_id)))
        except MissingObject:
            return None
        try:
            manifest = json.loads(data)
        except ValueError:
            return None  # a damaged manifest is treated as absent: the asset is produced again
        return manifest if isinstance(manifest, dict) and "fields" in manifest and "owner" in manifest else None

    def write_manifest(self, asset_id: str, owner: Mapping[str, str], fields: Mapping[str, Any],
                       source_object_key: str | None = None, **extra: Any) -> str:
        """`source_object_key`: the original it was made from (what `vitrina quality recompute` reads)."""
        record = {"asset_id": asset_id, "owner": dict(owner), "fields": dict(fields),
                  "written_at": datetime.now(timezone.utc).isoformat(), **extra}
        if source_object_key:
            record["source_object_key"] = source_object_key
        body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        key = manifest_key(asset_id)
        self.client.put_object(self.bucket, key, io.BytesIO(body), length=len(body), content_type="application/json")
        return key


# -- signed playback URLs -------------------------------------------------------------------

DEFAULT_KEY_ID = "k1"
DEFAULT_TTL_S = 3600


@dataclass(frozen=True)
class PlaybackSigner:
    """Issues and checks playback URLs of media objects.

    The signature covers the object key (as a path, '/assets/<id>/720p.mp4'), the key id and the
    expiry; ``base_url`` is where the serving side mounts the bucket (e.g. 'http://host/media'),
    so the same URL verifies wherever the mount is. ``previous`` holds retired secrets by key id
    that still verify during a rotation.
    """

    secret: str
    key_id: str = DEFAULT_KEY_ID
    base_url: str = ""
    ttl_s: int = DEFAULT_TTL_S
    previous: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> "PlaybackSigner":
        env = os.environ if environ is None else environ
        base = env.get("VITRINA_MEDIA_BASE_URL") or f"http://{settings.api_host}:{settings.api_port}/media"
        previous = tuple(tuple(pair.split(":", 1)) for pair in env.get("VITRINA_URL_SIGNING_PREVIOUS", "").split(",")
                         if ":" in pair)
        return cls(secret=settings.url_signing_key, key_id=env.get("VITRINA_URL_SIGNING_KEY_ID", DEFAULT_KEY_ID),
                   base_url=base.rstrip("/"), ttl_s=int(env.get("VITRINA_URL_TTL_S", DEFAULT_TTL_S)),
                   previous=previous)  # type: ignore[arg-type]

    @property
    def mount_path(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")

    def url(self, object_key: str, ttl_s: int | None = None, now: datetime | None = None) -> str:
        ttl = self.ttl_s if ttl_s is None else ttl_s
        if not 0 < ttl <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be in 1..{MAX_TTL_S}, got {ttl}")
        expires = (now or datetime.now(timezone.utc)) + timedelta(seconds=ttl)
        return sign_url(self.key_id, "/" + object_key.lstrip("/"), expires, self.secret, self.base_url)

    def secrets(self) -> dict[str, str]:
        return {**dict(self.previous), self.key_id: self.secret}

    def object_key(self, url_or_path: str) -> str | None:
        """The object key a serving-side request path refers to (None when outside the mount)."""
        path = urlsplit(url_or_path).path
        mount = self.mount_path
        if mount and not (path == mount or path.startswith(mount + "/")):
            return None
        key = path[len(mount):].lstrip("/")
        return key if key and ".." not in key.split("/") else None

    def verify(self, url_or_path: str, now: datetime | int | float | None = None) -> VerifyResult:
        """For the serving side: OK only for an unexpired URL issued for exactly this object."""
        parts = urlsplit(url_or_path)
        key = self.object_key(url_or_path)
        if key is None:
            return VerifyResult.BAD_SIGNATURE
        relative = "/" + key + (f"?{parts.query}" if parts.query else "")
        return verify(relative, self.secrets(), now if now is not None else datetime.now(timezone.utc))
