"""The pure decisions of asset commands (processors.asset_references): every action, every refusal, and
REAP only when the asset is left unreferenced."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from processors.asset_references import (ADD_TO_COLLECTION, ASSET_NOT_FOUND, DELETE_UPLOAD, DELETED, FORBIDDEN,
                                         MISSING_FIELD, NOT_IN_COLLECTION, NOT_THE_UPLOADER, RECOMPUTE_QUALITY,
                                         REMOVE_FROM_COLLECTION, UNKNOWN_ACTION, UNKNOWN_UPLOAD, Outcome, command,
                                         decide, deleted_status, may_play)
from schemas import EVENTS
from streams.kafka.codec import default_codec
from streams.kafka.topics import spec

ASSET = "a" * 32 + "-100"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
VIEW = {"asset_id": ASSET, "owner": {"upload_id": "u-a", "uploader_id": "alice"}, "fields": {}}
PUBLIC_A = {"u-a": "public:alice"}
PRIVATE_A = {"u-a": "private:alice"}


def cmd(action: str, user: str | None = None, upload: str | None = None) -> dict:
    return {"action": action, "asset_id": ASSET, "user_id": user, "upload_id": upload, "reason": None,
            "requested_at": NOW}


def test_add_needs_an_asset_the_user_may_play():
    assert decide(cmd(ADD_TO_COLLECTION, "carol"), VIEW, PUBLIC_A, {}).outcome is Outcome.ADD
    assert decide(cmd(ADD_TO_COLLECTION, "alice"), VIEW, PRIVATE_A, {}).outcome is Outcome.ADD   # own private
    refused = decide(cmd(ADD_TO_COLLECTION, "carol"), VIEW, PRIVATE_A, {})
    assert (refused.outcome, refused.reason, refused.reap) == (Outcome.REFUSE, FORBIDDEN, False)
    # one public upload of the same bytes makes it playable by anyone
    assert decide(cmd(ADD_TO_COLLECTION, "carol"), VIEW, {**PRIVATE_A, "u-b": "public:bob"}, {}).outcome \
        is Outcome.ADD
    assert decide(cmd(ADD_TO_COLLECTION, "carol"), None, {}, {}).reason == ASSET_NOT_FOUND
    assert decide(cmd(ADD_TO_COLLECTION, "carol"), VIEW, PUBLIC_A, {}, tombstoned=True).reason == ASSET_NOT_FOUND
    assert decide(cmd(ADD_TO_COLLECTION), VIEW, PUBLIC_A, {}).reason == MISSING_FIELD
    assert not decide(cmd(ADD_TO_COLLECTION, "carol"), VIEW, PUBLIC_A, {}).reap


def test_remove_reaps_only_the_last_reference():
    refs = {"carol": "1", "dave": "2"}
    assert decide(cmd(REMOVE_FROM_COLLECTION, "carol"), VIEW, {}, refs) == decide(
        cmd(REMOVE_FROM_COLLECTION, "carol"), VIEW, {}, refs)
    assert not decide(cmd(REMOVE_FROM_COLLECTION, "carol"), VIEW, {}, refs).reap          # dave still has it
    assert not decide(cmd(REMOVE_FROM_COLLECTION, "carol"), VIEW, PUBLIC_A, {"carol": "1"}).reap   # an upload
    last = decide(cmd(REMOVE_FROM_COLLECTION, "carol"), VIEW, {}, {"carol": "1"})
    assert (last.outcome, last.reap) == (Outcome.REMOVE_REF, True)
    missing = decide(cmd(REMOVE_FROM_COLLECTION, "erin"), VIEW, {}, {})
    assert (missing.outcome, missing.reason, missing.reap) == (Outcome.REFUSE, NOT_IN_COLLECTION, False)
    # a redelivered removal of an asset whose reap was interrupted: the reap goes on
    assert decide(cmd(REMOVE_FROM_COLLECTION, "carol"), None, {}, {}, tombstoned=True).reap


def test_delete_upload_only_by_its_uploader_and_reap_when_unreferenced():
    both = {"u-a": "public:alice", "u-b": "private:bob"}
    kept = decide(cmd(DELETE_UPLOAD, "alice", "u-a"), VIEW, both, {})
    assert (kept.outcome, kept.reap) == (Outcome.DELETE_UPLOAD_REF, False)
    assert not decide(cmd(DELETE_UPLOAD, "alice", "u-a"), VIEW, PUBLIC_A, {"carol": "1"}).reap   # a collection
    assert decide(cmd(DELETE_UPLOAD, "alice", "u-a"), VIEW, PUBLIC_A, {}).reap
    other = decide(cmd(DELETE_UPLOAD, "mallory", "u-a"), VIEW, both, {})
    assert (other.outcome, other.reason, other.reap) == (Outcome.REFUSE, NOT_THE_UPLOADER, False)
    assert decide(cmd(DELETE_UPLOAD, "alice", "u-x"), VIEW, both, {}).reason == UNKNOWN_UPLOAD
    assert decide(cmd(DELETE_UPLOAD, "alice"), VIEW, both, {}).reason == MISSING_FIELD
    assert decide(cmd(DELETE_UPLOAD, None, "u-a"), VIEW, both, {}).reason == MISSING_FIELD


def test_delete_upload_again_is_idempotent_and_checked_against_the_status_view():
    status = {"upload_id": "u-a", "uploader_id": "alice", "asset_id": ASSET, "status": DELETED}
    again = decide(cmd(DELETE_UPLOAD, "alice", "u-a"), VIEW, {}, {}, upload_status=status)
    assert (again.outcome, again.reap) == (Outcome.DELETE_UPLOAD_REF, False)
    assert decide(cmd(DELETE_UPLOAD, "alice", "u-a"), None, {}, {}, upload_status=status, tombstoned=True).reap
    assert decide(cmd(DELETE_UPLOAD, "bob", "u-a"), VIEW, {}, {}, upload_status=status).reason == NOT_THE_UPLOADER
    elsewhere = {**status, "asset_id": "b" * 32 + "-1"}
    assert decide(cmd(DELETE_UPLOAD, "alice", "u-a"), VIEW, {}, {}, upload_status=elsewhere).reason == UNKNOWN_UPLOAD
    assert decide(cmd(DELETE_UPLOAD, "alice", "u-a"), VIEW, {}, {}, upload_status=None).reason == UNKNOWN_UPLOAD


def test_recompute_and_unknown_actions():
    assert decide(cmd(RECOMPUTE_QUALITY), VIEW, PUBLIC_A, {}).outcome is Outcome.RECOMPUTE
    assert decide(cmd(RECOMPUTE_QUALITY), None, {}, {}).reason == ASSET_NOT_FOUND
    assert decide(cmd(RECOMPUTE_QUALITY), VIEW, {}, {}, tombstoned=True).reason == ASSET_NOT_FOUND
    assert decide(cmd("PURGE", "alice"), VIEW, PUBLIC_A, {}).reason == UNKNOWN_ACTION
    assert not decide(cmd(RECOMPUTE_QUALITY), VIEW, {}, {}).reap


def test_may_play_rule():
    assert may_play(PUBLIC_A, VIEW, None)
    assert not may_play(PRIVATE_A, VIEW, None) and not may_play(PRIVATE_A, VIEW, "carol")
    assert may_play(PRIVATE_A, VIEW, "alice")
    assert may_play({}, VIEW, "alice") and not may_play({}, VIEW, "carol")   # legacy: the view's owner


def test_command_records_name_the_missing_field_and_round_trip_the_schema():
    with pytest.raises(ValueError, match="^user_id"):
        command(ADD_TO_COLLECTION, ASSET, at=NOW)
    with pytest.raises(ValueError, match="^upload_id"):
        command(DELETE_UPLOAD, ASSET, user_id="alice", at=NOW)
    with pytest.raises(ValueError, match="^action"):
        command("PURGE", ASSET, at=NOW)
    with pytest.raises(ValueError, match="^asset_id"):
        command(RECOMPUTE_QUALITY, "", at=NOW)
    assert "vitrina.AssetCommand" in EVENTS
    record = command(DELETE_UPLOAD, ASSET, user_id="alice", upload_id="u-a", reason="mine", at=NOW)
    topic = spec("assets.commands")
    assert (topic.key_field, topic.partitions, topic.dead_letter) == ("asset_id", 6, True)
    codec = default_codec()
    assert codec.decode(codec.encode(topic.schema, record), topic.schema) == record


def test_deleted_status_keeps_the_view_readable():
    view = deleted_status({"status": "PROCESSED", "upload_id": "u-a", "uploader_id": "alice", "asset_id": ASSET,
                           "state": "READY", "percent": 100}, "u-a", "alice", ASSET, NOW)
    assert (view["status"], view["state"], view["uploader_id"], view["asset_id"]) == (DELETED, DELETED, "alice",
                                                                                       ASSET)
    assert deleted_status(None, "u-z", "zed", ASSET, NOW)["status"] == DELETED
