"""Producer CLI/API and the tail consumer against the real embedded broker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

from infra.settings import to_env
from streams.kafka.codec import default_codec
from streams.kafka.tail import tail
from streams.kafka.producer import EventProducer
from streams.kafka.topics import TopicSpec, all_specs, ensure_topics


def vitrina(settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **to_env(settings)}, timeout=120)


def session_event(i: int, **overrides) -> dict:
    event = {"session_id": f"s{i}", "user_id": f"u{i}", "device_id": f"d{i}", "device_type": "TV",
             "kind": "START", "end_reason": None, "event_time": "2026-11-22T10:00:00Z"}
    event.update(overrides)
    return event


def test_topics_are_created_idempotently(topics):
    assert ensure_topics(topics) == []  # the fixture created them; nothing left to create
    from streams.kafka.topics import admin_client
    existing = set(admin_client(topics).list_topics(timeout=10).topics)
    assert {s.name for s in all_specs()} <= existing


def test_produce_cli_reports_bad_lines_and_sends_the_good_ones(topics):
    stack = topics
    marker = uuid.uuid4().hex[:8]
    lines = [
        json.dumps(session_event(1, session_id=f"{marker}-1")),
        json.dumps(session_event(2, device_type="FRIDGE")),
        "{broken json",
        json.dumps(session_event(3, session_id=f"{marker}-3", kind="END", end_reason="EXPLICIT")),
        json.dumps({k: v for k, v in session_event(4).items() if k != "device_id"}),
        "",
        json.dumps(session_event(5, session_id=f"{marker}-5", event_time=1795000000000)),
    ]
    result = vitrina(stack, "produce", "sessions", "-", stdin="\n".join(lines) + "\n")
    assert result.returncode == 1, result.stderr
    assert "line 2 field 'device_type'" in result.stderr
    assert "line 3: not valid JSON" in result.stderr
    assert "line 5 field 'device_id': required field is missing" in result.stderr
    assert "3 sent, 3 bad line(s)" in result.stderr
    seen = [r.value["session_id"] for r in tail(stack, default_codec(), "sessions")
            if r.value and r.value["session_id"].startswith(marker)]
    assert sorted(seen) == [f"{marker}-1", f"{marker}-3", f"{marker}-5"]


def test_produce_cli_all_good_exits_zero(topics, tmp_path):
    stack = topics
    path = tmp_path / "ok.jsonl"
    path.write_text("\n".join(json.dumps(session_event(i)) for i in range(10)) + "\n")
    result = vitrina(stack, "produce", "sessions", str(path))
    assert result.returncode == 0, result.stderr
    assert "10 sent, 0 bad line(s)" in result.stderr


def test_records_are_keyed_by_the_registry_key_field(topics):
    stack = topics
    producer = EventProducer(topics)
    marker = uuid.uuid4().hex[:8]
    producer.publish("sessions", {**session_event(1, session_id=marker, user_id=None, device_id="dev-9"),
                                  "event_time": datetime.now(timezone.utc)})
    producer.flush()
    found = [r for r in tail(stack, default_codec(), "sessions") if r.value and r.value["session_id"] == marker]
    assert [r.key for r in found] == ["device:dev-9"]  # guests are keyed by device


def test_tail_since_timestamp_and_undecodable_records(topics):
    stack = topics
    from confluent_kafka.admin import NewTopic
    from streams.kafka.topics import admin_client
    import streams.kafka.topics as registry

    name = f"test.tail.{uuid.uuid4().hex[:6]}"
    admin = admin_client(stack)  # keep the handle alive until the futures resolve
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result()
    test_spec = TopicSpec(name, "vitrina.SessionEvent", "session_id", 2)
    registry._BY_NAME[name] = test_spec  # a throwaway topic known to the registry for this test
    producer = EventProducer(topics)
    for i in range(20):
        producer.publish(test_spec, session_event(i, session_id=f"early-{i}", event_time=datetime.now(timezone.utc)))
    producer.flush()
    time.sleep(1.2)
    cut = int(time.time() * 1000)
    time.sleep(0.2)
    for i in range(7):
        producer.publish(test_spec, session_event(i, session_id=f"late-{i}", event_time=datetime.now(timezone.utc)))
    producer.publish_raw(name, b"not avro at all", b"late-x")
    producer.flush()
    records = list(tail(stack, default_codec(), name, since_ms=cut))
    good = sorted(r.value["session_id"] for r in records if r.value)
    assert good == sorted(f"late-{i}" for i in range(7))
    bad = [r for r in records if r.error]
    assert len(bad) == 1 and bad[0].error.code == "BAD_MAGIC" and bad[0].raw == b"not avro at all"
    assert "raw_base64" in bad[0].to_json()
    assert len(list(tail(stack, default_codec(), name))) == 28
    assert len(list(tail(stack, default_codec(), name, limit=5))) == 5


def test_end_offsets_stay_exact_when_ends_verified_before_are_given(topics):
    """Tansu's high watermark answers lag (on S3 storage they stay near 1), so an end is verified by
    reading; a periodic caller (the lag metric) passes the ends it verified before and reads only
    what was written since. A known end below the real one (anything older) still gives the real end."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic
    from streams.kafka.offsets import end_offsets, probe_consumer
    from streams.kafka.topics import admin_client

    name = f"test.ends.{uuid.uuid4().hex[:6]}"
    admin = admin_client(topics)
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": topics.kafka_bootstrap})

    def send(partition: int, count: int) -> None:
        for i in range(count):
            producer.produce(name, value=b"x%d" % i, partition=partition)
        assert producer.flush(30) == 0

    send(0, 30)
    send(1, 5)
    consumer = probe_consumer(topics)
    try:
        first = end_offsets(consumer, [(name, 0), (name, 1)])
        assert first == {(name, 0): 30, (name, 1): 5}
        send(0, 12)
        assert end_offsets(consumer, [(name, 0), (name, 1)], known=first) == {(name, 0): 42, (name, 1): 5}
        assert end_offsets(consumer, [(name, 0)], known={(name, 0): 3}) == {(name, 0): 42}
    finally:
        consumer.close()
