"""Redis views of uploads: the asset (what the read API signs playback URLs for) and the status
of each upload. Keys from sinks.redis_views; values are JSON strings written with SET."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from processors.asset_references import may_play as _may_play
from sinks.redis_views import asset_access_key, asset_deleted_key, asset_key, upload_status_key

PROCESSED, REJECTED = "PROCESSED", "REJECTED"


def view_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True,
                      default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


def asset_view(asset_id: str, owner: Mapping[str, str], fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"asset_id": asset_id, "owner": dict(owner), "fields": dict(fields)}


def processed_status(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": PROCESSED, "upload_id": event["upload_id"], "uploader_id": event["uploader_id"],
            "asset_id": event["asset_id"], "deduplicated": event["deduplicated"],
            "private": bool(event.get("private", False)),
            "original_upload_id": event["original_upload_id"], "reason_code": None, "message": None,
            "state": "READY", "stage": None, "percent": 100, "updated_at": datetime.now(timezone.utc)}


def rejected_status(event: Mapping[str, Any], asset_id: str | None) -> dict[str, Any]:
    return {"status": REJECTED, "upload_id": event["upload_id"], "uploader_id": event["uploader_id"],
            "asset_id": asset_id, "deduplicated": False, "original_upload_id": None,
            "reason_code": event["reason_code"], "message": event["message"],
            "state": "REJECTED", "stage": None, "percent": 100, "updated_at": datetime.now(timezone.utc)}


# An asset's access entry (and its view) is written only while the asset has no tombstone, and the reaper
# (sinks.asset_references) sets the tombstone only while the access hash is empty: the two are mutually
# exclusive, so a dedupe hit either lands before the reap (the asset is referenced again and stays) or is
# refused (the caller sees False and transcodes afresh) -- never an entry on an asset whose files are gone.
_HSET_UNLESS_TOMBSTONE = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
_SET_UNLESS_TOMBSTONE = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


async def claim_access_entry(redis: Any, asset_id: str, upload_id: str, uploader_id: str, private: bool) -> bool:
    """Write one upload's access entry unless the asset is tombstoned (reaped); False when refused."""
    entry = access_entry({"private": private, "uploader_id": uploader_id})
    return bool(int(await redis.eval(_HSET_UNLESS_TOMBSTONE, 2, asset_access_key(asset_id),
                                     asset_deleted_key(asset_id), upload_id, entry)))


async def write_upload_views(redis: Any, asset: dict[str, Any] | None, statuses: list[dict[str, Any]]) -> list[str]:
    """One pipeline: the asset view (if any), every answered upload's status, and for processed uploads
    the asset's access entry (uploader -> private | public). The asset view and the access entries are
    written only if the asset has no tombstone; returns the upload ids whose entry was refused so."""
    entries: list[tuple[int, str]] = []   # (position in the pipeline's answers, upload id)
    count = 0
    async with redis.pipeline(transaction=False) as pipe:
        if asset is not None:
            pipe.eval(_SET_UNLESS_TOMBSTONE, 2, asset_key(asset["asset_id"]), asset_deleted_key(asset["asset_id"]),
                      view_json(asset))
            count += 1
        for status in statuses:
            pipe.set(upload_status_key(status["upload_id"]), view_json(status))
            count += 1
            if status["status"] == PROCESSED:
                pipe.eval(_HSET_UNLESS_TOMBSTONE, 2, asset_access_key(status["asset_id"]),
                          asset_deleted_key(status["asset_id"]), status["upload_id"], access_entry(status))
                entries.append((count, status["upload_id"]))
                count += 1
        results = await pipe.execute()
    return [upload for at, upload in entries if not int(results[at])]


# A progress status (PENDING / INSPECTING / ENCODING) never replaces a final one: a late progress write
# or a redelivered request after the answer leaves the PROCESSED / REJECTED view as it is. The views are
# written by view_json (no spaces), so the check is a plain substring test.
_SET_UNLESS_FINAL = """
local current = redis.call('GET', KEYS[1])
if current and (string.find(current, '"status":"PROCESSED"', 1, true)
                or string.find(current, '"status":"REJECTED"', 1, true)
                or string.find(current, '"status":"DELETED"', 1, true)) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


async def write_progress_views(redis: Any, statuses: list[dict[str, Any]]) -> int:
    """Progress views of uploads in flight; returns how many were written (final ones are kept)."""
    written = 0
    for status in statuses:
        written += int(await redis.eval(_SET_UNLESS_FINAL, 1, upload_status_key(status["upload_id"]),
                                        view_json(status)))
    return written


# -- who may play an asset ------------------------------------------------------------------------
# One stored asset serves every upload of the same content (dedupe), each with its own privacy: the
# access hash holds upload_id -> "<private|public>:<uploader_id>". An asset is playable by anyone when
# one of its uploads is public, else only by the uploaders of its private uploads (and ops). An asset
# with no entry (views older than this rule) is private to the uploader named in the asset view.

def access_entry(status: Mapping[str, Any]) -> str:
    return f"{'private' if status.get('private') else 'public'}:{status['uploader_id']}"


def may_play(entries: Mapping[str, str], asset: Mapping[str, Any] | None, user_id: str | None) -> bool:
    """Whether ``user_id`` (None: a guest) may get playback URLs of an asset (ops are let in before);
    the rule lives in processors.asset_references (the collection decisions use it too)."""
    return _may_play(entries, asset, user_id)
