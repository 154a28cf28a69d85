"""`vitrina produce` against the session's broker: every bad line is reported with its number, field and
reason, every good line arrives exactly once, the file is always read to its end (issue 18, item 5).

Each test writes to topics of its own (a private ``VITRINA_TOPIC_PREFIX``), which no worker reads: the
records here are hostile on purpose (a 4 MiB dead letter, a compacted copy of a topic that refuses
keyless records) and must not reach the agents of the session's worker.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from confluent_kafka.admin import NewTopic

from infra.settings import Settings, to_env
from streams.kafka.codec import default_codec
from streams.kafka.tail import tail
from streams.kafka.producer import LIBRDKAFKA_MESSAGE_MAX_BYTES, topic_record_limit
from streams.kafka.topics import admin_client

VITRINA = str(Path(sys.executable).parent / "vitrina")  # the venv running the tests (not activated in CI)


@pytest.fixture(scope="module")
def private(topics: Settings) -> Iterator[Settings]:
    """Settings whose topic prefix names topics only this module uses: playback, dlq.playback, and a
    compacted dlq.sessions (the broker refuses its keyless dead letters: delivery failures)."""
    settings = replace(topics, topic_prefix=f"badlines-{uuid.uuid4().hex[:8]}.")
    p = settings.topic_prefix
    admin = admin_client(settings)
    rf = settings.replication_factor
    wanted = [NewTopic(f"{p}playback", 3, rf), NewTopic(f"{p}dlq.playback", 1, rf),
              NewTopic(f"{p}dlq.sessions", 1, rf, config={"cleanup.policy": "compact"})]
    for future in admin.create_topics(wanted, operation_timeout=30).values():
        future.result()
    try:
        yield settings
    finally:
        for future in admin.delete_topics([t.topic for t in wanted], operation_timeout=30).values():
            try:
                future.result()
            except Exception:  # noqa: BLE001 - cleanup only
                pass


def produce(settings: Settings, topic: str, data: bytes, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([VITRINA, "produce", topic, "-"], input=data, capture_output=True,
                          env={**os.environ, **to_env(settings)}, timeout=timeout_s)


def playback(event_id: str, **changes) -> dict:
    event = dict(event_id=event_id, session_id="s1", user_id="u1", device_id="d1", device_type="MOBILE",
                 os="android 14", app_version="4.0.0", item_id="m1", event_type="HEARTBEAT", position_ms=60000,
                 duration_ms=600000, event_time="2026-11-22T10:00:00Z")
    event.update(changes)
    return event


def line(event: dict) -> bytes:
    return json.dumps(event).encode()


def with_raw(event: dict, field: str, raw_json: str) -> bytes:
    """The event's line with ``field`` set to a literal piece of JSON (NaN, a 5,000-digit number, ...)."""
    marker = "__RAW__"
    return json.dumps({**event, field: marker}).replace(f'"{marker}"', raw_json).encode()


def arrived(settings: Settings, topic: str, id_field: str, prefix: str) -> Counter:
    return Counter(r.value[id_field] for r in tail(settings, default_codec(), topic)
                   if r.value and str(r.value[id_field]).startswith(prefix))


def test_every_bad_line_is_reported_and_every_good_line_arrives_once(private):
    m = uuid.uuid4().hex[:8]
    good = [f"{m}-g{i}" for i in range(8)]
    # (line bytes, field named in the report or "" when the line has no field, words of the reason)
    cases: list[tuple[bytes, str | None, str]] = [
        (b"\xef\xbb\xbf" + line(playback(good[0])), None, ""),  # a file saved with a BOM
        (line(playback(f"{m}-b")).replace(b"android 14", b"andr\xc3\x28id \xff"), "", "not valid UTF-8"),
        (line(playback(good[1])), None, ""),
        (with_raw(playback(f"{m}-b"), "position_ms", "9" * 5000), "position_ms", "5000 digits"),
        (with_raw(playback(f"{m}-b"), "os", "[" * 100_000 + "]" * 100_000), "", "nested deeper"),
        (line(playback(f"{m}-b", event_time=10 ** 17)), "event_time", "outside the timestamps consumers can decode"),
        (line(playback(f"{m}-b", event_time="9999-12-31T23:30:00-01:00")), "event_time", "outside the timestamps"),
        (line(playback(good[2])), None, ""),
        (with_raw(playback(f"{m}-b"), "buffered_ratio", "NaN"), "buffered_ratio", "not a finite number"),
        (with_raw(playback(f"{m}-b"), "buffered_ratio", "Infinity"), "buffered_ratio", "not a finite number"),
        (with_raw(playback(f"{m}-b"), "buffered_ratio", "1e400"), "buffered_ratio", "not a finite number"),
        (with_raw(playback(f"{m}-b"), "buffered_ratio", "9" * 400), "buffered_ratio", "out of range for float"),
        (line(playback(f"{m}-b", buffered_ratio=1.5)), "buffered_ratio", "within 0..1"),
        (line(playback(f"{m}-b", position_ms=-1)), "position_ms", "must not be negative"),
        (line(playback(f"{m}-b", duration_ms=-600000)), "duration_ms", "must not be negative"),
        (line(playback(good[3])), None, ""),
        (line(playback("")), "event_id", "must not be empty"),
        (line(playback(f"{m}-b", device_id="")), "device_id", "must not be empty"),
        (line(playback(f"{m}-b", user_id="")), "user_id", "must not be empty"),
        (line(playback(f"{m}-b", item_id=" ")), "item_id", "must not be empty"),
        (line(playback(f"{m}-b", os="\ud800")), "os", "lone surrogate"),
        (line(playback(good[4], user_id=None, buffered_ratio=0.5, stall_ms=0)), None, ""),  # a guest: keyed by device
        (b"", None, ""),  # blank lines are skipped, not bad
        (b"{broken json", "", "not valid JSON"),
        (b"[1, 2]", "", "expected an object"),
        (line(playback(good[5], event_time=1795000000000)), None, ""),
        (b"\xef\xbb\xbf" + line(playback(f"{m}-b")), "", "not valid JSON"),  # a BOM is only skipped on line 1
        (line(playback(good[6])), None, ""),
        (line(playback(good[7])), None, ""),  # the last line has no newline
    ]
    data = b"\n".join(raw for raw, _, _ in cases)
    result = produce(private, "playback", data)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, stderr
    bad = [(n, field, words) for n, (_, field, words) in enumerate(cases, start=1) if field is not None]
    reported = [row for row in stderr.splitlines() if row.startswith("-: line ")]
    assert len(reported) == len(bad), stderr
    for n, field, words in bad:
        where = f"-: line {n} field '{field}': " if field else f"-: line {n}: "
        rows = [row for row in reported if row.startswith(where)]
        assert len(rows) == 1 and words in rows[0], (n, field, words, stderr)
    assert f"{len(good)} sent, {len(bad)} bad line(s) of {len(cases)} line(s) read" in stderr, stderr
    assert arrived(private, "playback", "event_id", m) == Counter(good)  # each good line exactly once


def dead_letter(marker: str, value: str | None = "payload", key: str | None = None) -> dict:
    return {"source_topic": "playback", "source_partition": 0, "source_offset": 7, "agent": marker,
            "reason_code": "BAD_MAGIC", "error": "not avro", "key": key, "value": value,
            "failed_at": "2026-11-22T10:00:00Z", "attempts": 1}


def test_a_record_over_the_brokers_limit_is_a_bad_line_and_one_under_it_is_sent(private):
    """The producer takes what the broker takes: librdkafka's own limit (1 MB) made a 1-8 MiB record crash
    the command, and one over the broker's limit (8 MiB on the embedded Kafka) is reported with both sizes."""
    limit, _source = topic_record_limit(private, "dlq.playback")
    m = uuid.uuid4().hex[:8]
    under = "a" * (limit // 2)  # 4 MiB on the embedded broker: over librdkafka's default
    over = "b" * (limit + 1024 * 1024)
    lines = [
        line(dead_letter(f"{m}-1")),
        line(dead_letter(f"{m}-2", value=under)),
        line(dead_letter(f"{m}-x", value=over)),
        line(dead_letter(f"{m}-x", value="bytes as latin-1: \u00e9 fine, \u4e2d not")),
        line(dead_letter(f"{m}-x", key="\u0416")),
        line(dead_letter(f"{m}-6", value="\u00ff\u00fe" * 10, key="k\u00e9y")),
    ]
    result = produce(private, "dlq.playback", b"\n".join(lines) + b"\n")
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, stderr
    if limit // 2 > LIBRDKAFKA_MESSAGE_MAX_BYTES:
        assert "line 2" not in stderr, stderr
    row = next(r for r in stderr.splitlines() if r.startswith("-: line 3: "))
    assert "record too large" in row and f"at most {limit:,} bytes" in row, row
    size = int(row.split("record too large: ")[1].split(" bytes")[0].replace(",", ""))
    assert len(over) < size < len(over) + 1000, row
    assert "-: line 4 field 'value': bytes are written as a latin-1 string" in stderr and "U+4E2D" in stderr, stderr
    assert "-: line 5 field 'key': bytes are written as a latin-1 string" in stderr, stderr
    assert "3 sent, 3 bad line(s) of 6 line(s) read" in stderr, stderr
    records = [r.value for r in tail(private, default_codec(), "dlq.playback") if r.value and r.value["agent"].startswith(m)]
    assert Counter(r["agent"] for r in records) == Counter([f"{m}-1", f"{m}-2", f"{m}-6"])
    assert next(r for r in records if r["agent"] == f"{m}-2")["value"] == under.encode()
    assert next(r for r in records if r["agent"] == f"{m}-6")["value"] == b"\xff\xfe" * 10


def test_a_record_the_broker_refuses_is_reported_with_its_line_number(private):
    """A delivery failure names the line: here the broker refuses keyless records, because this copy of
    dlq.sessions is compacted (INVALID_RECORD)."""
    m = uuid.uuid4().hex[:8]
    lines = [line(dead_letter(f"{m}-{n}")) for n in (1, 2, 3)]
    result = produce(private, "dlq.sessions", b"\n".join(lines) + b"\n")
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, stderr
    for n in (1, 2, 3):
        row = next((r for r in stderr.splitlines() if r.startswith(f"-: line {n}: ")), "")
        assert "not delivered" in row and "INVALID_RECORD" in row, stderr
    assert "0 sent, 3 bad line(s) of 3 line(s) read" in stderr, stderr
    assert not arrived(private, "dlq.sessions", "agent", m)


def test_a_file_of_only_bad_lines_is_read_to_its_end(private, tmp_path):
    """Crash cases back to back, from a file: none of them stops the reading."""
    m = uuid.uuid4().hex[:8]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([
        b"\xff\xfe\xfd",
        with_raw(playback(f"{m}-b"), "position_ms", "1" * 4400),
        b"[" * 100_000 + b"]" * 100_000,
        with_raw(playback(f"{m}-b"), "buffered_ratio", "-" + "9" * 400),
        line(playback(f"{m}-last")),
    ]))
    result = subprocess.run([VITRINA, "produce", "playback", str(path)], capture_output=True,
                            env={**os.environ, **to_env(private)}, timeout=120)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, stderr
    for n in range(1, 5):
        assert f"{path}: line {n}" in stderr, stderr
    assert "1 sent, 4 bad line(s) of 5 line(s) read" in stderr, stderr
    assert arrived(private, "playback", "event_id", m) == Counter([f"{m}-last"])
