"""Dedupe of uploads by content key (Mail.Ru: MD5 + size right after upload; on a hit, skip
transcoding and link the existing result). A pure state machine over one JSON value per asset id,
kept by the uploads agent in a changelog-backed table.

States:
    IN_PROGRESS  {"owner": {...}, "waiters": [{...}], "attempts": n, "since_ms": t}
    DONE         {"owner": {...}, "fields": <UploadProcessed fields of the asset>}
    REJECTED     {"owner": {...}, "reason_code": ..., "message": ...}
A retriable failure (ENCODE_FAILED) deletes the state, so the next upload of the same bytes tries
again. "owner" is the upload that produced (or is producing) the asset; waiters are other uploads
of the same bytes that arrived while it was in progress and are answered when it finishes.

The agent keeps every event of an in-progress asset unacknowledged until the job finishes, so a
crash leads to redelivery: the redelivered events find IN_PROGRESS without a running job and
restart it (``attempts`` counts restarts; after ``max_attempts`` the uploads are refused with
ENCODE_FAILED instead of crash-looping on a poison file).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

IN_PROGRESS, DONE, REJECTED = "IN_PROGRESS", "DONE", "REJECTED"
MAX_ATTEMPTS = 3
ENCODE_FAILED = "ENCODE_FAILED"


@dataclass(frozen=True)
class Uploader:
    """One upload's request: who asked, and whether the video is private to them (states written
    before ``private`` existed read as public, as the schema's default says)."""

    upload_id: str
    uploader_id: str
    private: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "uploader_id": self.uploader_id, "private": self.private}

    @classmethod
    def of(cls, data: dict[str, Any]) -> "Uploader":
        return cls(str(data["upload_id"]), str(data["uploader_id"]), bool(data.get("private", False)))


class Decision(str, Enum):
    START = "START"                  # (re)start the job; the new state is IN_PROGRESS
    JOIN = "JOIN"                    # a job for this asset is running: wait for it
    ANSWER_DONE = "ANSWER_DONE"      # link to the finished asset (a dedupe hit unless it is the owner)
    ANSWER_REJECTED = "ANSWER_REJECTED"
    GIVE_UP = "GIVE_UP"              # too many restarts: refuse every recipient with ENCODE_FAILED


def in_progress(owner: Uploader, now_ms: int) -> dict[str, Any]:
    return {"status": IN_PROGRESS, "owner": owner.as_dict(), "waiters": [], "attempts": 1, "since_ms": now_ms}


def _with_waiter(state: dict[str, Any], who: Uploader) -> dict[str, Any]:
    known = {state["owner"]["upload_id"]} | {w["upload_id"] for w in state["waiters"]}
    if who.upload_id in known:
        return state
    return {**state, "waiters": [*state["waiters"], who.as_dict()]}


def on_request(state: dict[str, Any] | None, who: Uploader, *, job_running: bool, now_ms: int,
               max_attempts: int = MAX_ATTEMPTS) -> tuple[dict[str, Any] | None, Decision]:
    """What to do with an upload of this asset, and the state to store (None = delete)."""
    if state is None:
        return in_progress(who, now_ms), Decision.START
    status = state["status"]
    if status == DONE:
        return state, Decision.ANSWER_DONE
    if status == REJECTED:
        return state, Decision.ANSWER_REJECTED
    joined = _with_waiter(state, who)
    if job_running:
        return joined, Decision.JOIN
    # IN_PROGRESS but nothing runs it here: the worker that ran it crashed or lost the partition
    if joined["attempts"] >= max_attempts:
        return None, Decision.GIVE_UP
    return {**joined, "attempts": joined["attempts"] + 1, "since_ms": now_ms}, Decision.START


def is_new_waiter(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    return bool(before and after and len(after.get("waiters", ())) > len(before.get("waiters", ())))


def retry(state: dict[str, Any], now_ms: int, max_attempts: int = MAX_ATTEMPTS) -> dict[str, Any] | None:
    """The running job failed in a retriable way: the state of the next attempt, or None to give up."""
    if state["attempts"] >= max_attempts:
        return None
    return {**state, "attempts": state["attempts"] + 1, "since_ms": now_ms}


def recipients(state: dict[str, Any] | None, also: Uploader | None = None) -> list[Uploader]:
    """Everyone who waits for the answer of an in-progress asset: owner first, no upload twice."""
    found: list[Uploader] = []
    if state:
        found = [Uploader.of(state["owner"])] + [Uploader.of(w) for w in state.get("waiters", ())]
    if also is not None:
        found.append(also)
    seen: set[str] = set()
    unique = []
    for who in found:
        if who.upload_id not in seen:
            seen.add(who.upload_id)
            unique.append(who)
    return unique


def finished(owner: Uploader, fields: dict[str, Any]) -> dict[str, Any]:
    return {"status": DONE, "owner": owner.as_dict(), "fields": dict(fields)}


def refused(owner: Uploader, reason_code: str, message: str) -> dict[str, Any]:
    return {"status": REJECTED, "owner": owner.as_dict(), "reason_code": reason_code, "message": message}


def processed_event(done: dict[str, Any], who: Uploader, now: datetime) -> dict[str, Any]:
    """The UploadProcessed record answering ``who`` from a DONE state."""
    owner = Uploader.of(done["owner"])
    duplicate = who.upload_id != owner.upload_id
    fields = done["fields"]
    return {
        "upload_id": who.upload_id, "uploader_id": who.uploader_id, "asset_id": fields["asset_id"],
        "deduplicated": duplicate, "original_upload_id": owner.upload_id if duplicate else None,
        "private": who.private, "duration_s": float(fields["duration_s"]), "source_width": int(fields["source_width"]),
        "source_height": int(fields["source_height"]), "renditions": list(fields["renditions"]),
        "thumbnails": list(fields["thumbnails"]), "hls_master_key": fields.get("hls_master_key"),
        # a linked duplicate cost no transcoding
        "processing_s": 0.0 if duplicate else float(fields.get("processing_s", 0.0)),
        "processed_at": now,
    }


def rejected_event(who: Uploader, reason_code: str, message: str, now: datetime) -> dict[str, Any]:
    return {"upload_id": who.upload_id, "uploader_id": who.uploader_id, "reason_code": reason_code,
            "message": message, "rejected_at": now}
