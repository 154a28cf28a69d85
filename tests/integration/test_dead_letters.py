"""Malformed records go to the dead-letter topic with the reason and original bytes; agents keep going."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sinks.redis_views import plays_key
from streams.kafka.codec import default_codec
from streams.kafka.tail import tail
from streams.kafka.producer import EventProducer


def playback(item: str, kind: str = "START") -> dict:
    return dict(event_id=str(uuid.uuid4()), session_id="s", user_id="u1", device_id="d1", device_type="TV",
                os="tizen", app_version="4.0.0", item_id=item, event_type=kind, position_ms=0,
                duration_ms=60_000, network_kbps=None, buffered_ratio=None, stall_ms=0, bitrate_kbps=None,
                event_time=datetime.now(timezone.utc))


from functools import partial

from support.waiting import wait_for as _wait_for

wait_for = partial(_wait_for, timeout_s=300.0)  # the shared worker runs every agent; be patient under load


def test_garbage_goes_to_dlq_and_counting_continues(stack, worker, views):
    item = f"dlq-{uuid.uuid4().hex[:6]}"
    producer = EventProducer(stack)
    codec = default_codec()
    unknown_fingerprint = b"\xc3\x01" + b"\x01" * 8 + b"\x00"
    producer.publish("playback", playback(item))
    producer.publish_raw("playback", b"\x00garbage", f"{item}-bad1".encode())
    producer.publish_raw("playback", unknown_fingerprint, f"{item}-bad2".encode())
    producer.publish_raw("playback", codec.encode("vitrina.PlaybackEvent", playback(item))[:-3], f"{item}-bad3".encode())
    producer.publish("playback", playback(item))
    producer.flush()

    wait_for(lambda: views.hget(plays_key(item), "plays") == "2")

    # Every agent that consumes `playback` reports the bad records it skipped, each under its own name.
    def dead_letters():
        found = [r.value for r in tail(stack, codec, "dlq.playback")
                 if r.value and (r.value["key"] or b"").decode().startswith(item)]
        by_counter = [d for d in found if d["agent"] == "playback-by-item"]
        return (found, by_counter) if len(by_counter) == 3 else None

    found, by_counter = wait_for(dead_letters)
    letters = {d["key"].decode(): d for d in by_counter}
    assert letters[f"{item}-bad1"]["reason_code"] == "BAD_MAGIC"
    assert letters[f"{item}-bad1"]["value"] == b"\x00garbage"
    assert letters[f"{item}-bad2"]["reason_code"] == "UNKNOWN_FINGERPRINT"
    assert letters[f"{item}-bad2"]["value"] == unknown_fingerprint
    assert letters[f"{item}-bad3"]["reason_code"] == "BODY_DECODE_FAILED"
    for letter in found:
        assert letter["source_topic"] == "playback"
        assert letter["source_offset"] >= 0 and letter["error"]
    reported = {(d["agent"], d["key"].decode()) for d in found}
    assert len(reported) == len(found), "an agent dead-lettered the same record twice"
    assert worker.alive()
