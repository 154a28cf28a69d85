"""Uploads you can follow (Mail.Ru: the record exists from the first event and says where it stands).

    PENDING -> INSPECTING -> ENCODING (percent, stage) -> READY | REJECTED

Pure: the status records (the `vitrina.UploadStatus` event and the Redis status view share them), the
mapping from pipeline progress to a status, a throttle so a long encode publishes a handful of
updates rather than one per ffmpeg progress block, and the rule that a final status is never replaced
by a progress one (a late progress write, or a request redelivered after its answer).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

PENDING, INSPECTING, ENCODING, READY, REJECTED = "PENDING", "INSPECTING", "ENCODING", "READY", "REJECTED"
LIFECYCLE = (PENDING, INSPECTING, ENCODING, READY, REJECTED)
FINAL = frozenset({READY, REJECTED})
# the terminal answers' `status` values in the Redis view (kept: clients read PROCESSED / REJECTED)
FINAL_VIEW_STATUSES = frozenset({"PROCESSED", "REJECTED"})


def status_event(upload_id: str, uploader_id: str, status: str, *, percent: int = 0, stage: str | None = None,
                 asset_id: str | None = None, reason_code: str | None = None, message: str | None = None,
                 at: datetime | None = None) -> dict[str, Any]:
    """A vitrina.UploadStatus record."""
    if status not in LIFECYCLE:
        raise ValueError(f"unknown upload status {status!r}")
    return {"upload_id": upload_id, "uploader_id": uploader_id, "status": status, "stage": stage,
            "percent": max(0, min(100, int(percent))), "asset_id": asset_id, "reason_code": reason_code,
            "message": message, "updated_at": at or datetime.now(timezone.utc)}


def progress_view(event: Mapping[str, Any], private: bool = False) -> dict[str, Any]:
    """The Redis status view of an upload still in progress (same keys as the final views)."""
    return {"status": event["status"], "state": event["status"], "upload_id": event["upload_id"],
            "uploader_id": event["uploader_id"], "asset_id": event.get("asset_id"), "deduplicated": False,
            "private": bool(private), "original_upload_id": None, "reason_code": None, "message": None,
            "stage": event.get("stage"), "percent": event.get("percent", 0), "updated_at": event["updated_at"]}


def status_of_progress(stage: str, fraction: float) -> tuple[str, int]:
    """processors.media.pipeline.Progress (stage, overall fraction) -> (status, percent)."""
    percent = max(0, min(99, int(fraction * 100)))     # 100 only when READY
    return (INSPECTING if stage in ("inspect", "complexity") else ENCODING), percent


@dataclass
class Throttle:
    """Publish a progress status when the status or stage changes, or every `step` percent."""
    step: int = 10
    _last: tuple[str, str | None, int] | None = None

    def due(self, status: str, stage: str | None, percent: int) -> bool:
        if self._last is None or self._last[:2] != (status, stage) or percent >= self._last[2] + self.step:
            self._last = (status, stage, percent)
            return True
        return False
