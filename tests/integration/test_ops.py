"""Ops tools against the real broker: offset resets with kafka-consumer-groups semantics, DLQ redrive."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import pytest

from sinks.redis_views import plays_key
from streams.ops import dlq
from streams.kafka.codec import default_codec
from streams.kafka.deadletter import dead_letter, encode_dead_letter
from streams.ops.group_offsets import GroupActiveError, committed, execute_reset, plan_reset
from streams.kafka.producer import EventProducer
from streams.kafka.topics import admin_client


from functools import partial

from support.waiting import wait_for as _wait_for

wait_for = partial(_wait_for, timeout_s=300.0)  # the shared worker runs every agent; be patient under load


def playback(item: str) -> dict:
    return dict(event_id=str(uuid.uuid4()), session_id="s", user_id="u-ops", device_id="d", device_type="TV",
                os="tizen", app_version="4.0.0", item_id=item, event_type="START", position_ms=0,
                duration_ms=60_000, network_kbps=None, buffered_ratio=None, stall_ms=0, bitrate_kbps=None,
                event_time=datetime.now(timezone.utc))


def test_offset_reset_strategies_on_an_idle_group(topics):
    settings = topics
    producer = EventProducer(settings)
    producer.publish_many("sessions", [dict(session_id=f"r{i}", user_id=None, device_id="reset-dev", device_type="TV",
                                            kind="START", end_reason=None, event_time=datetime.now(timezone.utc))
                                       for i in range(30)])  # one key: all on one partition
    producer.flush()
    group = f"test-reset-{uuid.uuid4().hex[:6]}"
    latest = plan_reset(settings, group, "sessions", to_latest=True)
    busy = max(latest, key=lambda plan: plan.end)
    assert busy.current is None and busy.end >= 30
    execute_reset(settings, group, latest)
    admin = admin_client(settings)
    assert committed(admin, group, "sessions", [busy.partition])[busy.partition] == busy.end

    shifted = plan_reset(settings, group, "sessions", shift_by=-10, partitions=[busy.partition])
    assert shifted[0].target == busy.end - 10 and shifted[0].lag_after == 10
    execute_reset(settings, group, shifted)
    assert committed(admin, group, "sessions", [busy.partition])[busy.partition] == busy.end - 10

    clamped = plan_reset(settings, group, "sessions", shift_by=-10**9, partitions=[busy.partition])
    assert clamped[0].target == 0
    future = plan_reset(settings, group, "sessions", to_datetime_ms=int(time.time() * 1000) + 3_600_000,
                        partitions=[busy.partition])
    assert future[0].target == busy.end  # nothing at/after a future time: the end


def test_offset_reset_is_refused_while_the_group_is_active(worker, topics):
    settings = topics
    plans = plan_reset(settings, settings.app_id, "playback", to_earliest=True)
    with pytest.raises(GroupActiveError):
        execute_reset(settings, settings.app_id, plans)


def test_redrive_after_fix_is_processed_and_not_redriven_twice(worker, topics, views):
    settings = topics
    codec = default_codec()
    item = f"redrive-{uuid.uuid4().hex[:6]}"
    value = codec.encode("vitrina.PlaybackEvent", playback(item))
    # a letter left by a processing bug that has since been fixed: the original bytes are valid
    letter = dead_letter("playback", 0, 0, "play-counter", "PROCESSING_FAILED", "bug #42", item.encode(), value)
    # and one that still fails
    bad = dead_letter("playback", 0, 1, "playback-by-item", "BAD_MAGIC", "garbage", f"{item}-bad".encode(), b"\x00bad")
    with EventProducer(settings) as producer:
        producer.publish_raw("dlq.playback", encode_dead_letter(codec, letter), item.encode())
        producer.publish_raw("dlq.playback", encode_dead_letter(codec, bad), f"{item}-bad".encode())

    plan = wait_for(lambda: (p := dlq.plan_redrive(settings, codec, "playback"))
                    and {r.value["key"] for r in p.letters} >= {item.encode(), f"{item}-bad".encode()} and p)
    assert dlq.redrive(settings, plan) == len(plan.letters)
    wait_for(lambda: views.hget(plays_key(item), "plays") == "1")

    def failed_again():
        letters = [r.value for r in dlq.plan_redrive(settings, codec, "playback").letters]
        return [l for l in letters if l["key"] == f"{item}-bad".encode()]

    again = wait_for(failed_again)
    assert again[0]["attempts"] == 2 and again[0]["reason_code"] == "BAD_MAGIC"
    assert all(r.value["key"] != item.encode() for r in dlq.plan_redrive(settings, codec, "playback").letters)
