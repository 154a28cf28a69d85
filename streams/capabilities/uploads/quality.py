"""Quality as its own job (Netflix VQS): recompute the VMAF of a stored asset's renditions over the
WHOLE title, without re-encoding (`vitrina quality recompute ASSET_ID`).

Reads the asset's manifest, downloads its original (the manifest's `source_object_key`; manifests
written before it existed: the one object under `originals/<owner upload id>/`) and each rendition,
scores every rendition with `processors.media.quality.measure_quality` (time-aligned, every
`n_subsample`-th frame, no time limit), then writes the scores into the manifest (`quality`,
`quality_scope: whole_title`, `quality_recomputed_at`) and the asset's Redis view, which the API serves.
Answers already recorded in the dedupe table keep the qualities they were given.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from infra.settings import Settings
from processors.media import Limits, MediaTools, Rejection, inspect
from processors.media.ladder import Recipe
from processors.media.quality import measure_quality
from sinks.media_store import MediaStore
from sinks.redis_views import asset_key
from sinks.upload_views import view_json, asset_view


class RecomputeError(RuntimeError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _recipe_of(rendition: dict[str, Any]) -> Recipe:
    hd = min(int(rendition["width"]), int(rendition["height"])) >= 720
    return Recipe(name=rendition["name"], width=int(rendition["width"]), height=int(rendition["height"]),
                  video_kbps=int(rendition.get("video_kbps") or 1), audio_kbps=None,
                  fps_cap=60.0 if hd else 30.0)


def source_key_of(store: MediaStore, manifest: dict[str, Any]) -> str:
    key = manifest.get("source_object_key")
    if key:
        return str(key)
    upload_id = (manifest.get("owner") or {}).get("upload_id")
    candidates = store.list_keys(f"originals/{upload_id}/") if upload_id else []
    if len(candidates) != 1:
        raise RecomputeError("NO_ORIGINAL", f"cannot tell the original of this asset ({len(candidates)} candidates)")
    return candidates[0]


def recompute_quality(settings: Settings, asset_id: str, *, n_subsample: int = 5,
                      max_seconds: float | None = None, tools: MediaTools | None = None,
                      store: MediaStore | None = None, redis_client: Any = None) -> dict[str, Any]:
    """New whole-title scores for every rendition of `asset_id`; raises RecomputeError."""
    store = store or MediaStore(settings)
    tools = tools or MediaTools.from_env()
    manifest = store.read_manifest(asset_id)
    if manifest is None:
        raise RecomputeError("UNKNOWN_ASSET", f"no manifest for asset {asset_id!r}")
    fields = dict(manifest["fields"])
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="vitrina-vqs-"))
    try:
        source_key = source_key_of(store, manifest)
        source = store.download(source_key, workdir / ("original" + Path(source_key).suffix[:10]))
        info = inspect(source, Limits.from_env(), tools)
        if isinstance(info, Rejection):
            raise RecomputeError("BAD_ORIGINAL", f"the original no longer inspects: {info.code.value}")
        renditions, report = [], {}
        for rendition in fields.get("renditions") or []:
            local = store.download(rendition["object_key"], workdir / Path(rendition["object_key"]).name)
            scores = measure_quality(source, info, local, _recipe_of(rendition), tools=tools,
                                     max_seconds=max_seconds, n_subsample=n_subsample)
            report[rendition["name"]] = {"before": rendition.get("quality") or {}, "after": scores}
            renditions.append({**rendition, "quality": scores})
        fields["renditions"] = renditions
        now = datetime.now(timezone.utc).isoformat()
        extra = {k: v for k, v in manifest.items()
                 if k not in ("asset_id", "owner", "fields", "written_at", "source_object_key")}
        extra.update({"quality_scope": "whole_title" if max_seconds is None else f"first_{max_seconds:g}s",
                      "quality_recomputed_at": now, "quality_n_subsample": n_subsample})
        store.write_manifest(asset_id, manifest["owner"], fields, source_key, **extra)
        if redis_client is None:
            import redis as redis_lib
            redis_client = redis_lib.Redis.from_url(settings.redis_url)
        redis_client.set(asset_key(asset_id), view_json(asset_view(asset_id, manifest["owner"], fields)))
        return {"asset_id": asset_id, "source_object_key": source_key, "renditions": report,
                "duration_s": info.duration_s, "elapsed_s": round(time.monotonic() - started, 3),
                "scope": extra["quality_scope"]}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
