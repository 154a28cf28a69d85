"""Redis views of uploads: the asset (what the read API signs playback URLs for) and the status
of each upload. Keys from sinks.redis_views; values are JSON strings written with SET."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from sinks.redis_views import asset_key, upload_status_key

PROCESSED, REJECTED = "PROCESSED", "REJECTED"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True,
                      default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


def asset_view(asset_id: str, owner: Mapping[str, str], fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"asset_id": asset_id, "owner": dict(owner), "fields": dict(fields)}


def processed_status(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": PROCESSED, "upload_id": event["upload_id"], "uploader_id": event["uploader_id"],
            "asset_id": event["asset_id"], "deduplicated": event["deduplicated"],
            "original_upload_id": event["original_upload_id"], "reason_code": None, "message": None,
            "updated_at": datetime.now(timezone.utc)}


def rejected_status(event: Mapping[str, Any], asset_id: str | None) -> dict[str, Any]:
    return {"status": REJECTED, "upload_id": event["upload_id"], "uploader_id": event["uploader_id"],
            "asset_id": asset_id, "deduplicated": False, "original_upload_id": None,
            "reason_code": event["reason_code"], "message": event["message"],
            "updated_at": datetime.now(timezone.utc)}


async def write_upload_views(redis: Any, asset: dict[str, Any] | None, statuses: list[dict[str, Any]]) -> None:
    """One pipeline: the asset view (if any) and every answered upload's status."""
    async with redis.pipeline(transaction=False) as pipe:
        if asset is not None:
            pipe.set(asset_key(asset["asset_id"]), _dumps(asset))
        for status in statuses:
            pipe.set(upload_status_key(status["upload_id"]), _dumps(status))
        await pipe.execute()
