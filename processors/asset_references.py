"""References to a stored asset (Mail.Ru: one stored copy, user references to it). Pure: no I/O.

An asset (content key '<md5>-<size>') is stored once however many uploads brought its bytes. What keeps
it alive:
  * its upload entries: the access hash upload_id -> "<private|public>:<uploader>" (one per processed
    upload, written by the transcoder);
  * collection references: user -> added_at ("add to my collection").
A command on ``assets.commands`` (vitrina.AssetCommand, key asset_id) is decided here from the current
views; the asset-commands agent applies the decision (sinks.asset_references). When the last reference
goes (no upload entry and no collection reference) the asset is REAPED: its files and views are deleted
and a tombstone says so (see sinks.asset_references for the atomic part).

Decisions:
  ADD               ADD_TO_COLLECTION by a user who may play the asset (``may_play``: one of its uploads
                    is public, or the user uploaded a private one). Adding twice is harmless.
  REMOVE_REF        REMOVE_FROM_COLLECTION of an asset in the user's collection.
  DELETE_UPLOAD_REF DELETE_UPLOAD by the upload's uploader: its access entry goes, its status view says
                    DELETED. Again for an upload already DELETED: the same (idempotent, finishes a reap).
  RECOMPUTE         RECOMPUTE_QUALITY of an existing asset (VMAF again, no re-encode).
  REFUSE            with a machine-readable ``reason`` (REASONS).
``reap`` tells whether the asset is unreferenced once the decision is applied (only for decisions that
remove a reference, or when the asset is already tombstoned: a reap interrupted by a crash goes on).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Mapping

ADD_TO_COLLECTION = "ADD_TO_COLLECTION"
REMOVE_FROM_COLLECTION = "REMOVE_FROM_COLLECTION"
DELETE_UPLOAD = "DELETE_UPLOAD"
RECOMPUTE_QUALITY = "RECOMPUTE_QUALITY"
ACTIONS = (ADD_TO_COLLECTION, REMOVE_FROM_COLLECTION, DELETE_UPLOAD, RECOMPUTE_QUALITY)

# refusal reasons
ASSET_NOT_FOUND = "ASSET_NOT_FOUND"        # no asset view (never processed, or deleted)
FORBIDDEN = "FORBIDDEN"                    # the user may not play it (private to someone else)
NOT_THE_UPLOADER = "NOT_THE_UPLOADER"      # DELETE_UPLOAD by someone else
UNKNOWN_UPLOAD = "UNKNOWN_UPLOAD"          # no such upload of this asset
NOT_IN_COLLECTION = "NOT_IN_COLLECTION"    # REMOVE_FROM_COLLECTION of an asset the user has not added
MISSING_FIELD = "MISSING_FIELD"            # user_id / upload_id absent where the action needs it
UNKNOWN_ACTION = "UNKNOWN_ACTION"
REASONS = (ASSET_NOT_FOUND, FORBIDDEN, NOT_THE_UPLOADER, UNKNOWN_UPLOAD, NOT_IN_COLLECTION, MISSING_FIELD,
           UNKNOWN_ACTION)

DELETED = "DELETED"   # status of a deleted upload's status view


class Outcome(str, Enum):
    ADD = "ADD"
    REMOVE_REF = "REMOVE_REF"
    DELETE_UPLOAD_REF = "DELETE_UPLOAD_REF"
    RECOMPUTE = "RECOMPUTE"
    REFUSE = "REFUSE"


@dataclass(frozen=True)
class AssetDecision:
    outcome: Outcome
    reason: str | None = None      # REFUSE only
    message: str = ""
    reap: bool = False             # unreferenced once applied: delete files and views

    @property
    def refused(self) -> bool:
        return self.outcome is Outcome.REFUSE


def command(action: str, asset_id: str, *, user_id: str | None = None, upload_id: str | None = None,
            reason: str | None = None, at: datetime) -> dict[str, Any]:
    """A vitrina.AssetCommand record; raises ValueError naming the missing or bad field."""
    if action not in ACTIONS:
        raise ValueError(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    if not asset_id:
        raise ValueError("asset_id: required")
    if action in (ADD_TO_COLLECTION, REMOVE_FROM_COLLECTION, DELETE_UPLOAD) and not user_id:
        raise ValueError(f"user_id: required for {action}")
    if action == DELETE_UPLOAD and not upload_id:
        raise ValueError("upload_id: required for DELETE_UPLOAD")
    return {"action": action, "asset_id": asset_id, "user_id": user_id, "upload_id": upload_id, "reason": reason,
            "requested_at": at}


def may_play(entries: Mapping[str, str], asset: Mapping[str, Any] | None, user_id: str | None) -> bool:
    """Whether ``user_id`` (None: a guest) may play an asset: one of its uploads is public, or the user
    uploaded a private one. An asset with no entry (views older than the access hash) is private to the
    uploader named in the asset view."""
    if not entries:
        owner = ((asset or {}).get("owner") or {}).get("uploader_id")
        return user_id is not None and user_id == owner
    for entry in entries.values():
        visibility, _, uploader = entry.partition(":")
        if visibility == "public" or (user_id is not None and uploader == user_id):
            return True
    return False


def uploader_of(entry: str) -> str:
    return entry.partition(":")[2]


def _refuse(reason: str, message: str, reap: bool = False) -> AssetDecision:
    return AssetDecision(Outcome.REFUSE, reason, message, reap)


def decide(cmd: Mapping[str, Any], asset: Mapping[str, Any] | None, entries: Mapping[str, str],
           refs: Mapping[str, Any], *, upload_status: Mapping[str, Any] | None = None,
           tombstoned: bool = False) -> AssetDecision:
    """The decision for one command.

    ``asset``: the asset view (None when absent); ``entries``: its access hash; ``refs``: its collection
    references user -> added_at; ``upload_status``: the status view of ``cmd['upload_id']`` (DELETE_UPLOAD);
    ``tombstoned``: the asset was (or is being) reaped.
    """
    action, user, upload = cmd.get("action"), cmd.get("user_id"), cmd.get("upload_id")
    if action not in ACTIONS:
        return _refuse(UNKNOWN_ACTION, f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if action == RECOMPUTE_QUALITY:
        if asset is None or tombstoned:
            return _refuse(ASSET_NOT_FOUND, f"no stored asset {cmd.get('asset_id')!r}")
        return AssetDecision(Outcome.RECOMPUTE)
    if not user:
        return _refuse(MISSING_FIELD, f"user_id is required for {action}")

    if action == ADD_TO_COLLECTION:
        if asset is None or tombstoned:
            return _refuse(ASSET_NOT_FOUND, f"no stored asset {cmd.get('asset_id')!r}")
        if not may_play(entries, asset, user):
            return _refuse(FORBIDDEN, f"user {user!r} may not play this asset (private to its uploaders)")
        return AssetDecision(Outcome.ADD)

    if action == REMOVE_FROM_COLLECTION:
        if user not in refs:
            # nothing removed: no reap, except to finish one that was interrupted (tombstone set)
            return _refuse(NOT_IN_COLLECTION, f"asset is not in the collection of {user!r}",
                           reap=tombstoned and not entries and not refs)
        left = {u: v for u, v in refs.items() if u != user}
        return AssetDecision(Outcome.REMOVE_REF, reap=not entries and not left)

    # DELETE_UPLOAD
    if not upload:
        return _refuse(MISSING_FIELD, "upload_id is required for DELETE_UPLOAD")
    entry = entries.get(upload)
    if entry is not None:
        if uploader_of(entry) != user:
            return _refuse(NOT_THE_UPLOADER, f"upload {upload!r} was not uploaded by {user!r}")
        left = {u: e for u, e in entries.items() if u != upload}
        return AssetDecision(Outcome.DELETE_UPLOAD_REF, reap=not left and not refs)
    status = upload_status or {}
    if status.get("asset_id") != cmd.get("asset_id") or not status:
        return _refuse(UNKNOWN_UPLOAD, f"no upload {upload!r} of asset {cmd.get('asset_id')!r}")
    if status.get("uploader_id") != user:
        return _refuse(NOT_THE_UPLOADER, f"upload {upload!r} was not uploaded by {user!r}")
    # an upload without an access entry: already deleted (a redelivered command), or rejected
    return AssetDecision(Outcome.DELETE_UPLOAD_REF, reap=tombstoned and not entries and not refs)


def deleted_status(status: Mapping[str, Any] | None, upload_id: str, uploader_id: str, asset_id: str,
                   at: datetime) -> dict[str, Any]:
    """The status view of a deleted upload: still readable, status and state DELETED."""
    base = dict(status or {"upload_id": upload_id, "uploader_id": uploader_id, "asset_id": asset_id,
                           "deduplicated": False, "original_upload_id": None, "private": False,
                           "reason_code": None, "message": None, "stage": None, "percent": 100})
    return {**base, "status": DELETED, "state": DELETED, "deleted_at": at, "updated_at": at}
