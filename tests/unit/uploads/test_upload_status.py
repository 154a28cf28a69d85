"""Uploads you can follow: status records, progress mapping, throttling (processors/upload_status.py)."""
from __future__ import annotations

import pytest

from processors.upload_status import (ENCODING, FINAL, INSPECTING, PENDING, READY, REJECTED, Throttle,
                                      progress_view, status_event, status_of_progress)
from schemas import EVENTS
from streams.kafka.codec import default_codec
from streams.kafka.topics import spec


def test_progress_maps_to_inspecting_then_encoding_and_never_100_before_ready():
    assert status_of_progress("inspect", 0.0) == (INSPECTING, 0)
    assert status_of_progress("encode", 0.42) == (ENCODING, 42)
    assert status_of_progress("quality", 1.0) == (ENCODING, 99)
    assert FINAL == {READY, REJECTED}


def test_throttle_publishes_each_stage_change_and_every_ten_percent():
    throttle = Throttle(step=10)
    published = [p for p in range(0, 80) if throttle.due(ENCODING, "encode", p)]
    assert published == [0, 10, 20, 30, 40, 50, 60, 70]
    assert throttle.due(ENCODING, "thumbnails", 71) and not throttle.due(ENCODING, "thumbnails", 72)


def test_status_event_round_trips_through_avro_and_feeds_the_view():
    assert "vitrina.UploadStatus" in EVENTS
    event = status_event("up-1", "alice", ENCODING, percent=57, stage="encode", asset_id="a" * 32 + "-10")
    codec = default_codec()
    decoded = codec.decode(codec.encode(spec("uploads.status").schema, event), spec("uploads.status").schema)
    assert {k: decoded[k] for k in ("upload_id", "status", "percent", "stage", "asset_id")} == \
        {"upload_id": "up-1", "status": ENCODING, "percent": 57, "stage": "encode", "asset_id": "a" * 32 + "-10"}
    view = progress_view(event, private=True)
    assert (view["status"], view["state"], view["percent"], view["private"]) == (ENCODING, ENCODING, 57, True)
    with pytest.raises(ValueError):
        status_event("up-1", "alice", "DONE")
    assert status_event("up-1", "alice", PENDING, percent=140)["percent"] == 100
