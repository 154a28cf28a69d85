"""Hostile input on the real stack: oversized records and forged internal headers lose no good event.

* An oversized record (key + value over VITRINA_MAX_EVENT_BYTES) is dead-lettered by every agent that
  reads it, as OVERSIZED with only the first VITRINA_DEAD_LETTER_KEEP_BYTES of the value, the original
  size and SHA-256, and its source position; no agent crashes, so the good events of its batch count.
* ``vitrina-origin`` is trusted only on internal topics: on ``playback`` a forged or malformed value
  is ignored (counted in vitrina_untrusted_headers_total), on an internal topic a malformed one is a
  BAD_HEADER dead letter; neither the Faust agents nor the co-view engine crash or stall.
* ``vitrina dlq redrive`` re-reads a truncated letter's original from its source position and refuses
  (or with skip_unrestorable skips) a letter whose original is gone.

The shared session worker runs every agent; ids are unique per test. Every test has one deadline.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Producer

from sinks.redis_views import history_key, plays_key
from streams.kafka.codec import default_codec
from streams.kafka.tail import tail
from streams.kafka.deadletter import KEEP_BYTES, MAX_EVENT_BYTES, dead_letter, encode_dead_letter, original_digest
from streams.runtime.inbound import INTERNAL_TOPICS
from streams.kafka.producer import producer_config
from streams.kafka.topics import TOPICS, full_name

T0 = datetime.now(timezone.utc) - timedelta(hours=6)
MIN = 60_000
DURATION_MS = 90 * MIN
PLAYBACK_AGENTS = {"playback-by-item", "viewer-history", "ranking-label-join", "coview-sessions",
                   "ranking-gate-samples"}
CRASH_MARKS = ("Crashed reason", "Restarting dead", "engine_restart", "engine_failed", "dead_letter_write_failed",
               "engine_checkpoint_failed")


class Deadline:
    """One time budget per test (every wait takes from it)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def wait(self, predicate, what: str, poll_s: float = 0.5):
        while True:
            found = predicate()
            if found:
                return found
            if time.monotonic() > self.end:
                raise AssertionError(f"deadline passed waiting for {what}")
            time.sleep(poll_s)


class RawProducer:
    """Bytes and headers as a hostile producer sends them; remembers where each record landed."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.producer = Producer(producer_config(settings, **{"message.max.bytes": 8 * 1024 * 1024}))
        self.positions: dict[int, tuple[int, int]] = {}  # send number -> (partition, offset)
        self.errors: list[str] = []
        self.sent = 0

    def send(self, topic: str, value: bytes, key: bytes, headers: list | None = None) -> int:
        number = self.sent
        self.sent += 1

        def delivered(err, msg, number=number):
            if err is not None:
                self.errors.append(str(err))
            else:
                self.positions[number] = (msg.partition(), msg.offset())

        self.producer.produce(full_name(self.settings, topic), value=value, key=key, headers=headers,
                              on_delivery=delivered)
        self.producer.poll(0)
        return number

    def flush(self) -> None:
        assert self.producer.flush(60) == 0 and not self.errors, self.errors


def playback(user: str, item: str, kind: str, position_ms: int, at: datetime) -> dict:
    return {"event_id": str(uuid.uuid4()), "session_id": f"s-{user}", "user_id": user, "device_id": f"d-{user}",
            "device_type": "TV", "os": "tizen 7", "app_version": "4.0.0", "item_id": item, "event_type": kind,
            "position_ms": position_ms, "duration_ms": DURATION_MS, "network_kbps": 8000, "buffered_ratio": 0.9,
            "stall_ms": 0, "bitrate_kbps": 6000, "event_time": at}


def viewing(user: str, items: list[str]) -> list[dict]:
    """START then STOP at 30 of 90 minutes per title: every title ends up in continue-watching."""
    events = []
    for n, item in enumerate(items):
        at = T0 + timedelta(minutes=40 * n)
        events += [playback(user, item, "START", 0, at), playback(user, item, "STOP", 30 * MIN, at + timedelta(minutes=30))]
    return events


def junk(size: int) -> bytes:
    return b"\x00junk" + os.urandom(size - 5)


def letters(settings, source: str, keys: set[bytes]) -> list[dict]:
    return [r.value for r in tail(settings, default_codec(), f"dlq.{source}", idle_timeout_s=1.0)
            if r.value and r.value["key"] in keys]


def plays(views, item: str) -> int:
    return int(views.hget(plays_key(item), "plays") or 0)


def resumed(views, viewer: str) -> dict[str, int]:
    raw = views.get(history_key(viewer))
    return {c["item_id"]: c["position_ms"] for c in json.loads(raw)["continue"]} if raw else {}


class WorkerWatch:
    """What the shared worker logs and counts from now on: no crash, no engine restart."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.log_start = worker.log_path.stat().st_size if worker.log_path.exists() else 0
        self.restarts = worker.counter("vitrina_engine_restarts_total")

    def new_log(self) -> str:
        with open(self.worker.log_path, "rb") as handle:
            handle.seek(self.log_start)
            return handle.read().decode("utf-8", "replace")

    def assert_no_crash(self) -> None:
        assert self.worker.alive(), self.worker.log_tail(60)
        log = self.new_log()
        found = [mark for mark in CRASH_MARKS if mark in log]
        assert not found, f"{found} in the worker log:\n{log[-6000:]}"
        assert self.worker.counter("vitrina_engine_restarts_total") == self.restarts


def check_truncated(letter: dict, original: bytes, key: bytes, source: str, position: tuple[int, int]) -> None:
    assert letter["reason_code"] == "OVERSIZED", letter["error"]
    assert letter["truncated"] is True
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (source, *position)
    assert letter["value_size"] == len(original) and letter["value"] == original[:KEEP_BYTES]
    assert letter["key"] == key and letter["key_size"] == len(key)
    assert letter["original_sha256"] == original_digest(key, original)
    assert str(len(original)) in letter["error"]


def test_one_oversized_record_among_good_events_loses_none_of_them(worker, views, topics):
    """120 good playback events around one 1.5 MB record: every play and history counted, one truncated
    dead letter per agent reading playback, no agent crash. (Before: the letter exceeded the producer's
    1 MB limit, the agents crashed and their whole in-flight batch was committed unprocessed.)"""
    deadline = Deadline(85)
    watch = WorkerWatch(worker)
    codec = default_codec()
    tag = uuid.uuid4().hex[:8]
    viewers = [f"hi-{tag}-u{n}" for n in range(12)]
    items = [f"hi-{tag}-m{n}" for n in range(5)]
    good = [(e, user) for user in viewers for e in viewing(user, items)]
    assert len(good) == 120
    big = junk(1_500_000)

    producer = RawProducer(topics)
    for event, user in good[:60]:
        producer.send("playback", codec.encode("vitrina.PlaybackEvent", event), user.encode())
    big_number = producer.send("playback", big, viewers[0].encode())  # in the partition (and batch) of good ones
    for event, user in good[60:]:
        producer.send("playback", codec.encode("vitrina.PlaybackEvent", event), user.encode())
    producer.flush()
    position = producer.positions[big_number]

    deadline.wait(lambda: all(plays(views, item) == len(viewers) for item in items),
                  f"{len(viewers)} plays of each of {items}")
    expected = {item: 30 * MIN for item in items}
    deadline.wait(lambda: all(resumed(views, user) == expected for user in viewers),
                  "every viewer's history with all five titles in continue-watching")

    def by_agent():
        found = [l for l in letters(topics, "playback", {viewers[0].encode()})
                 if (l["source_partition"], l["source_offset"]) == position]
        return found if {l["agent"] for l in found} == PLAYBACK_AGENTS else None

    found = deadline.wait(by_agent, f"a dead letter of the oversized record from each of {sorted(PLAYBACK_AGENTS)}")
    assert len(found) == len(PLAYBACK_AGENTS), [l["agent"] for l in found]
    for letter in found:
        check_truncated(letter, big, viewers[0].encode(), "playback", position)
    assert all(plays(views, item) == len(viewers) for item in items)  # nothing counted twice meanwhile
    watch.assert_no_crash()


SIZES = (943_718, 1_500_000, 3_000_000, 5_000_000)  # 0.9 MiB .. 5 MB
READERS = {"playback": PLAYBACK_AGENTS, "sessions": {"coview-sessions"}, "uploads.requested": {"upload-hasher"},
           "ranking.impressions": {"showcase-impressions", "ranking-label-join"}}


def test_oversized_values_on_every_input_topic_each_leave_one_dead_letter_per_reader(worker, topics):
    """Values of 0.9-5 MB on four input topics: one (truncated) dead letter per record and agent that reads
    the topic, none missing, none twice. (Before: 59 of 126 were missing, with 14 agent crashes.)"""
    deadline = Deadline(85)
    watch = WorkerWatch(worker)
    tag = uuid.uuid4().hex[:8]
    producer = RawProducer(topics)
    sent: dict[str, list[tuple[bytes, bytes, int]]] = {}
    for topic in READERS:
        for size in SIZES:
            key, value = f"hi-{tag}-{topic}-{size}".encode(), junk(size)
            sent.setdefault(topic, []).append((key, value, producer.send(topic, value, key)))
    producer.flush()
    assert all(size > MAX_EVENT_BYTES for size in SIZES)

    def complete():
        found = {topic: letters(topics, topic, {key for key, _, _ in records}) for topic, records in sent.items()}
        want = sum(len(records) * len(READERS[topic]) for topic, records in sent.items())
        return found if sum(len(v) for v in found.values()) >= want else None

    found = deadline.wait(complete, "every dead letter of the oversized records")
    for topic, records in sent.items():
        for key, value, number in records:
            mine = [l for l in found[topic] if l["key"] == key]
            assert sorted(l["agent"] for l in mine) == sorted(READERS[topic]), (topic, len(value), mine)
            for letter in mine:
                check_truncated(letter, value, key, topic, producer.positions[number])
    watch.assert_no_crash()


def engine_caught_up(settings, processor: str, topic: str) -> bool:
    from streams.runtime.engine.runner import group_id
    from streams.ops.lag import group_lag

    rows = group_lag(settings, group_id(settings, processor), [topic])
    return bool(rows) and all(row.committed is not None and row.lag == 0 for row in rows)


MALFORMED = [b"garbage", b"1:x", b"\xff\xfe", b"", b"-1:-1", b"9" * 5000 + b":1", b"1:2:3", b"0:99999999999999999999999"]


def test_forged_and_malformed_origin_headers_change_nothing(worker, views, topics):
    """On playback, vitrina-origin is not vitrina's: 20 events carrying a forged "0:0" and events with
    malformed values are all counted exactly once, the co-view engine keeps up (lag back to 0), nothing
    crashes. On the internal playback.by-item a malformed value is a BAD_HEADER dead letter.
    (Before: "0:0" counted 1 of 20, a malformed value crashed the agents and looped the engine.)"""
    deadline = Deadline(85)
    watch = WorkerWatch(worker)
    codec = default_codec()
    tag = uuid.uuid4().hex[:8]
    forged_item, malformed_item, internal_item = (f"hi-{tag}-forged", f"hi-{tag}-malformed", f"hi-{tag}-internal")
    untrusted = worker.counter("vitrina_untrusted_headers_total", topic="playback")
    producer = RawProducer(topics)
    forged_users = [f"hi-{tag}-f{n}" for n in range(20)]
    for user in forged_users:
        event = playback(user, forged_item, "START", 0, T0)
        producer.send("playback", codec.encode("vitrina.PlaybackEvent", event), user.encode(),
                      [("vitrina-origin", b"0:0")])
    malformed_users = [f"hi-{tag}-b{n}" for n in range(len(MALFORMED))]
    for user, header in zip(malformed_users, MALFORMED):
        for event in viewing(user, [malformed_item]):
            producer.send("playback", codec.encode("vitrina.PlaybackEvent", event), user.encode(),
                          [("vitrina-origin", header), ("vitrina-attempts", b"9" * 5000)])
    # a hostile write to an internal topic: a malformed origin there is a dead letter, not a crash
    bad_internal = playback(f"hi-{tag}-i", internal_item, "START", 0, T0)
    producer.send("playback.by-item", codec.encode("vitrina.PlaybackEvent", bad_internal), internal_item.encode(),
                  [("vitrina-origin", b"not-a-position")])
    producer.flush()

    deadline.wait(lambda: plays(views, forged_item) == 20, "20 plays of the title with forged origins")
    deadline.wait(lambda: plays(views, malformed_item) == len(MALFORMED), "every play with a malformed origin")
    expected = {malformed_item: 30 * MIN}
    deadline.wait(lambda: all(resumed(views, user) == expected for user in malformed_users),
                  "the histories of the viewers with malformed origins")
    deadline.wait(lambda: all(views.get(history_key(user)) for user in forged_users),
                  "the histories of the viewers with forged origins")
    internal = deadline.wait(lambda: letters(topics, "playback", {internal_item.encode()}),
                             "the BAD_HEADER dead letter of the internal record")
    assert [(l["agent"], l["reason_code"], l["source_topic"]) for l in internal] == \
        [("play-counter", "BAD_HEADER", "playback.by-item")]
    assert internal[0]["value"] == codec.encode("vitrina.PlaybackEvent", bad_internal)
    deadline.wait(lambda: engine_caught_up(topics, "coview-sessions", "playback"),
                  "the co-view engine's committed offsets at the end of playback")
    assert plays(views, forged_item) == 20 and plays(views, malformed_item) == len(MALFORMED)
    assert plays(views, internal_item) == 0
    assert not letters(topics, "playback", {u.encode() for u in forged_users + malformed_users})
    assert worker.counter("vitrina_untrusted_headers_total", topic="playback") >= \
        untrusted + len(forged_users) + 2 * len(MALFORMED)
    watch.assert_no_crash()


def test_internal_topics_are_exactly_those_without_a_dead_letter_topic():
    """vitrina-origin is trusted on INTERNAL_TOPICS only; each has a dead-letter destination upstream."""
    assert INTERNAL_TOPICS == {s.name for s in TOPICS if not s.dead_letter}
    assert {"playback", "sessions", "uploads.requested"}.isdisjoint(INTERNAL_TOPICS)


@pytest.fixture
def private_topics(topics):
    """The registry's topics under a private prefix, with no worker reading them."""
    from streams.kafka.topics import ensure_topics

    settings = dataclasses.replace(topics, topic_prefix=f"hi-{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings)
    return settings


def test_redrive_reads_a_truncated_letters_original_from_the_source_or_refuses(private_topics):
    """A truncated letter is re-driven with its original bytes, re-read from its source position and
    checked; a letter whose original is not there makes the redrive refuse before sending anything,
    unless skip_unrestorable (then it is marked done without being sent)."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.ops import dlq

    settings, codec = private_topics, default_codec()
    deadline = Deadline(85)
    big, other = junk(1_500_000), junk(900_000)
    producer = RawProducer(settings)
    big_at = producer.send("playback", big, b"viewer-big")
    other_at = producer.send("playback", other, b"viewer-other")
    producer.flush()
    restorable = dead_letter("playback", *producer.positions[big_at], "playback-by-item", "OVERSIZED", "too big",
                             b"viewer-big", big)
    # points to a record that is not the one it truncated (as after a topic was recreated)
    gone = dead_letter("playback", *producer.positions[other_at], "playback-by-item", "OVERSIZED", "too big",
                       b"viewer-other", junk(900_000))
    assert restorable["truncated"] and gone["truncated"]
    for letter in (restorable, gone):
        producer.send("dlq.playback", encode_dead_letter(codec, letter), letter["key"])
    producer.flush()

    plan = deadline.wait(lambda: (p := dlq.plan_redrive(settings, codec, "playback")) and len(p.letters) == 2 and p,
                         "two pending letters")
    shown = dlq.explain(plan.letters[0], codec)
    assert shown["decoded_now"] is None and "truncated" in shown["still_failing"]
    with pytest.raises(dlq.RedriveRefused) as refused:
        dlq.redrive(settings, plan)
    assert "not the one dead-lettered" in str(refused.value) and f"offset {plan.letters[1].offset}" in str(refused.value)
    assert len(dlq.plan_redrive(settings, codec, "playback").letters) == 2, "a refused redrive marks nothing done"

    assert dlq.redrive(settings, plan, skip_unrestorable=True) == 1
    assert dlq.plan_redrive(settings, codec, "playback").letters == []

    partition = producer.positions[big_at][0]
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"hi-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(full_name(settings, "playback"), partition, 0)])

        def redriven():
            message = consumer.poll(0.5)
            if message is None or message.error() or message.key() != b"viewer-big" \
                    or message.offset() == producer.positions[big_at][1]:
                return None
            return message

        message = deadline.wait(redriven, "the re-driven original", poll_s=0)
        assert message.value() == big, "the original bytes, not the truncated ones"
        assert dict(message.headers())["vitrina-attempts"] == b"2"
    finally:
        consumer.close()


def set_max_message_bytes(settings, topic: str, value: int) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    from streams.kafka.topics import admin_client

    resource = ConfigResource(ResourceType.TOPIC, full_name(settings, topic), incremental_configs=[
        ConfigEntry("max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET)])
    admin = admin_client(settings)  # kept alive until the futures resolve
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)

    def applied() -> bool:
        described = ConfigResource(ResourceType.TOPIC, full_name(settings, topic))
        configs = admin.describe_configs([described])[described].result(timeout=30)
        return configs["max.message.bytes"].value == str(value)

    Deadline(30).wait(applied, f"max.message.bytes={value} on {topic}", poll_s=0.2)


def catalogue_title(item: str) -> dict:
    from demo.catalogue import synthetic_titles

    return {**synthetic_titles(1)[0], "item_id": item, "title": f"Title {item}"}


@pytest.mark.parametrize("module, source, agent", [
    ("plays", "playback", "playback-by-item"),        # engine processors (the runtime contract)
    ("coview", "playback", "coview-sessions"),
    ("catalogue", "catalogue.titles", "catalogue-titles"),  # a Faust agent (streams/runtime/inbound.py)
])
def test_a_dead_letter_the_broker_refuses_keeps_its_record_uncommitted_until_written(
        private_topics, module, source, agent):
    """dlq.<topic> refuses every letter (max.message.bytes 1024): the agent (Faust) or the processor
    (engine) retries and commits nothing past the bad record; once the topic takes the letter, it is
    written once and everything around it is in the views exactly once. A Faust agent holds the later
    events back; an engine processor goes on processing them, fails its checkpoint, restarts from the
    last one and applies them once (outputs deduplicated downstream by origin). (Before: Faust logged
    the failed send and committed; the engine's changelog marked the record applied, so the restarted
    processor skipped it: the letter was lost either way.)"""
    import redis

    from infra.ports import pick_free_ports
    from streams.ops.group_offsets import committed
    from streams.ops.supervisor import start_worker
    from streams.kafka.topics import admin_client

    settings, codec = private_topics, default_codec()
    tag = uuid.uuid4().hex[:6]
    app_id, prefix = f"hi-{tag}", f"hi-{tag}:"
    engine = module != "catalogue"
    worker = start_worker(settings, web_port=pick_free_ports(1)[0], name=app_id, ready_timeout_s=80, extra_env={
        "VITRINA_APP_ID": app_id, "VITRINA_AGENTS": module, "VITRINA_VIEW_PREFIX": prefix})
    try:
        deadline = Deadline(85)
        watch = WorkerWatch(worker)
        set_max_message_bytes(settings, f"dlq.{source}", 1024)
        key, first, second = f"{tag}-u", f"{tag}-first", f"{tag}-second"
        producer = RawProducer(settings)
        if source == "playback":
            values = [codec.encode("vitrina.PlaybackEvent", playback(key, item, "START", 0, T0)) for item in (first, second)]
        else:
            values = [codec.encode("vitrina.CatalogueTitle", catalogue_title(item)) for item in (first, second)]
        # one key: the three records in one partition, in this order
        producer.send(source, values[0], key.encode())
        bad = producer.send(source, junk(4096), key.encode())
        producer.send(source, values[1], key.encode())
        producer.flush()
        partition, bad_offset = producer.positions[bad]
        group = app_id + (f".{agent}" if engine else "")
        topic = full_name(settings, source)

        def at() -> int:
            return committed(admin_client(settings), group, topic, [partition])[partition] or 0

        deadline.wait(lambda: "MessageSizeTooLarge" in watch.new_log(), "the broker refusing the dead letter")
        time.sleep(3)  # anything that would commit past the record has had the time to
        assert at() <= bad_offset, "committed past a record whose dead letter was not written"
        assert not letters(settings, source, {key.encode()})
        retried = "vitrina_engine_restarts_total" if engine else "vitrina_dead_letter_write_failures_total"
        deadline.wait(lambda: worker.counter(retried) > 0, retried)  # a failed checkpoint restarts a processor

        set_max_message_bytes(settings, f"dlq.{source}", 8 * 1024 * 1024)
        deadline.wait(lambda: letters(settings, source, {key.encode()}), "the dead letter, once accepted")
        deadline.wait(lambda: at() > bad_offset + 1, "the commit past the bad record")
        found = letters(settings, source, {key.encode()})
        assert [(l["agent"], l["source_offset"]) for l in found] == [(agent, bad_offset)]
        if module == "plays":
            deadline.wait(lambda: views_plays(settings, prefix, second) == 1, "the play after the bad record")
            time.sleep(2)  # a double count would show now
            assert views_plays(settings, prefix, first) == 1 and views_plays(settings, prefix, second) == 1
        if module == "catalogue":
            client = redis.Redis.from_url(settings.redis_url)
            deadline.wait(lambda: client.exists(f"{prefix}title:{second}"), "the title after the bad record")
            assert client.exists(f"{prefix}title:{first}")
    except AssertionError:
        print(worker.log_tail(80))
        raise
    finally:
        worker.stop()


def views_plays(settings, prefix: str, item: str) -> int:
    import redis

    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        return int(client.hget(f"{prefix}plays:{item}", "plays") or 0)
    finally:
        client.close()
