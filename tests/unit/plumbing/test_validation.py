"""JSON-lines validation names the line number and the field."""
from __future__ import annotations

import json

import pytest

from streams.kafka.codec import SingleObjectCodec
from streams.kafka.validation import coerce_and_validate


@pytest.fixture(scope="module")
def schema():
    return SingleObjectCodec().store.current("vitrina.PlaybackEvent").expanded


GOOD = dict(event_id="e1", session_id="s1", user_id=None, device_id="d1", device_type="MOBILE", os="android 14",
            app_version="4.0.0", item_id="m1", event_type="HEARTBEAT", position_ms=60000, duration_ms=600000,
            event_time="2026-11-22T10:00:00Z")


def check(schema, **changes):
    record = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            record.pop(key)
        else:
            record[key] = value
    return coerce_and_validate(json.dumps(record), 7, schema)


def test_good_line_gets_defaults_and_a_timestamp(schema):
    record, problem = check(schema)
    assert problem is None
    assert record["stall_ms"] == 0 and record["network_kbps"] is None
    assert record["event_time"].isoformat() == "2026-11-22T10:00:00+00:00"


def test_epoch_millis_timestamp_is_accepted(schema):
    record, problem = check(schema, event_time=1795000000000)
    assert problem is None and record["event_time"] == 1795000000000


@pytest.mark.parametrize("changes, field, words", [
    ({"position_ms": "ten"}, "position_ms", "integer"),
    ({"device_type": "FRIDGE"}, "device_type", "not one of"),
    ({"item_id": ...}, "item_id", "missing"),
    ({"colour": "red"}, "colour", "unknown field"),
    ({"event_time": "yesterday"}, "event_time", "ISO-8601"),
    ({"network_kbps": 1.5}, "network_kbps", "none of"),
    ({"position_ms": 2 ** 64}, "position_ms", "out of range"),
])
def test_bad_field_is_named_with_line_number(schema, changes, field, words):
    record, problem = check(schema, **changes)
    assert record is None
    assert problem.line_no == 7 and problem.field == field and words in problem.reason
    assert str(problem).startswith(f"line 7 field '{field}'")


def test_not_json_is_reported(schema):
    record, problem = coerce_and_validate("{not json", 3, schema)
    assert record is None and problem.line_no == 3 and "not valid JSON" in problem.reason


def test_nested_record_field_path():
    schema = SingleObjectCodec().store.current("vitrina.RankingImpression").expanded
    line = json.dumps(dict(impression_id="i", request_id="r", device_id="d", device_type="TV", item_id="m",
                           position=0, surface="HOME", pxtr={"evr": 0.1, "lvr": 0.1, "svr": "x", "fpr": 0.1},
                           context={}, event_time=0))
    record, problem = coerce_and_validate(line, 1, schema)
    assert problem.field == "pxtr.svr"
