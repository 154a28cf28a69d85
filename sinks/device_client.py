"""Device runtime: download the current ranking model and score a local candidate pool.

What an app does (GRF): ask which version is current (the read API's
``/v1/models/{name}/current``, or Redis directly for a backend process), download the
TFLite file from object storage (the CDN role), check its sha256 against the manifest,
load it into LiteRT and rank the ~24 cached candidates with the same feature code the
trainer used (``DeviceRanker``; no TensorFlow). A download that fails the check is never
used or cached; the previously loaded model stays active.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from processors.ranking.artifacts import FLOAT_KIND, sha256_hex
from processors.ranking.device import DeviceRanker, RankedCandidate
from processors.ranking.errors import ModelIntegrityError


class ManifestSource(Protocol):
    def current_model(self, name: str = "ranking") -> dict: ...


class RedisManifestSource:
    """Reads the pointer from Redis (backend processes; devices use the read API client)."""

    def __init__(self, settings: Any) -> None:
        from sinks.redis_views import sync_client
        self.redis = sync_client(settings)

    def current_model(self, name: str = "ranking") -> dict:
        import json

        from sinks.redis_views import model_current_key
        raw = self.redis.get(model_current_key(name))
        if raw is None:
            raise ModelIntegrityError("no_current_model", f"no Production version of {name!r}", field="name")
        return json.loads(raw)


class DeviceModelClient:
    def __init__(self, settings: Any, source: ManifestSource, name: str = "ranking", *, kind: str = FLOAT_KIND,
                 cache_dir: Path | None = None) -> None:
        from infra.object_store import object_store
        self.settings = settings
        self.source = source
        self.name = name
        self.kind = kind
        self.s3 = object_store(settings)
        self.cache_dir = cache_dir
        self.ranker: DeviceRanker | None = None
        self.manifest: dict[str, Any] | None = None

    def _download(self, bucket: str, key: str) -> bytes:
        response = self.s3.get_object(bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def refresh(self) -> DeviceRanker:
        """Load the current version if it changed; raises ModelIntegrityError and keeps the old model otherwise."""
        manifest = self.source.current_model(self.name)
        artifact = (manifest.get("artifacts") or {}).get(self.kind)
        if not isinstance(artifact, Mapping) or not artifact.get("key"):
            raise ModelIntegrityError("artifact_not_in_manifest", f"manifest has no downloadable {self.kind}",
                                      field="artifacts")
        if self.ranker is not None and self.manifest and self.manifest["artifacts"][self.kind]["sha256"] == \
                artifact["sha256"]:
            return self.ranker
        data = self._cached(artifact["sha256"])
        if data is None:
            data = self._download(manifest.get("bucket") or self.settings.models_bucket, artifact["key"])
        ranker = DeviceRanker(manifest, data, kind=self.kind)  # checks sha256 + input signature
        self._store(artifact["sha256"], data)
        self.ranker, self.manifest = ranker, manifest
        return ranker

    def _cached(self, sha256: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{sha256}.tflite"
        if not path.exists():
            return None
        data = path.read_bytes()
        return data if sha256_hex(data) == sha256 else None

    def _store(self, sha256: str, data: bytes) -> None:
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            (self.cache_dir / f"{sha256}.tflite").write_bytes(data)

    def rank(self, request: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]],
             top_k: int | None = None) -> list[RankedCandidate]:
        ranker = self.ranker or self.refresh()
        return ranker.rank(request, candidates, top_k)
