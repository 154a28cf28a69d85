"""Dead-letter topics for ops: summarise, show, and re-drive records after a fix.

Re-driving publishes each dead letter's original key and value bytes back to its
source topic (with an attempts header, so a record that fails again is recorded
with attempts + 1) and then commits the dead-letter topic's offset for the
``vitrina-dlq-redrive`` group, so the same letter is never re-driven twice.

A truncated letter (an oversized key or value keeps only its first bytes) is never re-driven as it
is: its original is read again from the source position the letter points to and checked against the
letter's sizes and SHA-256. When the source no longer has it (retention, compaction, a recreated
topic) the redrive is refused before anything is sent, naming the letters; ``skip_unrestorable``
re-drives the others and marks those done without sending them.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, TopicPartition

from infra.settings import Settings
from streams.kafka.codec import Codec, DecodeError
from streams.kafka.tail import Record, tail
from streams.kafka.deadletter import original_digest
from streams.ops.group_offsets import committed
from streams.kafka.producer import EventProducer
from streams.kafka.topics import DLQ_PREFIX, TOPICS, admin_client, full_name, require_key, spec

REDRIVE_GROUP = "vitrina-dlq-redrive"
ATTEMPTS_HEADER = "vitrina-attempts"


def dlq_topics() -> list[str]:
    return [DLQ_PREFIX + s.name for s in TOPICS if s.dead_letter]


@dataclass
class DlqSummary:
    topic: str
    total: int = 0
    reasons: Counter = field(default_factory=Counter)
    agents: Counter = field(default_factory=Counter)
    pending: int = 0  # not yet re-driven


def summarise(settings: Settings, codec: Codec, topics: list[str] | None = None) -> list[DlqSummary]:
    admin = admin_client(settings)
    summaries = []
    for topic in topics or dlq_topics():
        summary = DlqSummary(topic)
        try:
            done = committed(admin, REDRIVE_GROUP, full_name(settings, topic), [0])
            records = list(tail(settings, codec, topic, idle_timeout_s=1.0))
        except KeyError:  # topic not created yet: nothing dead-lettered
            summaries.append(summary)
            continue
        for record in records:
            summary.total += 1
            if record.value:
                summary.reasons[record.value["reason_code"]] += 1
                summary.agents[record.value["agent"]] += 1
            if done.get(record.partition) is None or record.offset >= done[record.partition]:
                summary.pending += 1
        summaries.append(summary)
    return summaries


def explain(record: Record, codec: Codec) -> dict:
    """A dead letter as JSON-friendly data, with the original value decoded when it now decodes."""
    letter = dict(record.value or {})
    letter["dlq_offset"] = record.offset
    source = letter.get("source_topic")
    if letter.get("truncated"):
        letter["decoded_now"] = None
        letter["still_failing"] = (f"truncated letter (original value {letter.get('value_size')} bytes, key "
                                   f"{letter.get('key_size')} bytes): the original is at {source} partition "
                                   f"{letter.get('source_partition')} offset {letter.get('source_offset')}")
    elif source and letter.get("value") is not None:
        try:
            letter["decoded_now"] = codec.decode(letter["value"], spec(source).schema)
        except (DecodeError, KeyError) as exc:
            letter["decoded_now"] = None
            letter["still_failing"] = str(exc)
    return letter


@dataclass
class RedrivePlan:
    topic: str
    letters: list[Record]
    next_offset: int | None


def plan_redrive(settings: Settings, codec: Codec, source: str, reason: str | None = None) -> RedrivePlan:
    topic = DLQ_PREFIX + source
    admin = admin_client(settings)
    start = committed(admin, REDRIVE_GROUP, full_name(settings, topic), [0]).get(0) or 0
    letters, last = [], None
    for record in tail(settings, codec, topic, idle_timeout_s=1.0):
        if record.offset < start or record.value is None:
            continue
        last = record.offset
        if reason is None or record.value["reason_code"] == reason:
            letters.append(record)
    return RedrivePlan(topic, letters, None if last is None else last + 1)


class Unrestorable(Exception):
    """The original of a truncated letter cannot be read again from its source position."""


class RedriveRefused(RuntimeError):
    def __init__(self, problems: list[tuple[Record, str]]) -> None:
        lines = [f"dead letter at offset {record.offset} (source {record.value['source_topic']} partition "
                 f"{record.value['source_partition']} offset {record.value['source_offset']}): {why}"
                 for record, why in problems]
        super().__init__(f"refusing to re-drive: {len(problems)} truncated dead letter(s) whose original cannot be "
                         "read again from the source, and re-driving the truncated bytes would publish a different "
                         "record; nothing was sent. Re-drive the others with --skip-unrestorable (these are then "
                         "marked done without being sent).\n  " + "\n  ".join(lines))
        self.problems = problems


def read_original(settings: Settings, letter: dict, timeout_s: float = 30.0) -> tuple[bytes | None, bytes | None]:
    """Key and value of the record a truncated letter points to, read from the source topic and checked
    against the letter (sizes and SHA-256); raises ``Unrestorable`` with the reason."""
    from streams.kafka.offsets import probe_consumer

    name = full_name(settings, letter["source_topic"])
    partition, offset = letter["source_partition"], letter["source_offset"]
    consumer = probe_consumer(settings)
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
        if offset < low:
            raise Unrestorable(f"no longer in the topic (retention): the partition starts at offset {low}")
        consumer.assign([TopicPartition(name, partition, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    raise Unrestorable("the partition ends before that offset")
                raise Unrestorable(f"reading the source failed: {message.error()}")
            if message.offset() != offset:
                raise Unrestorable(f"offset {offset} is gone (compacted); the next record is at {message.offset()}")
            key, value = message.key(), message.value()
            if (len(key) if key is not None else None) != letter.get("key_size") or \
                    (len(value) if value is not None else None) != letter.get("value_size") or \
                    original_digest(key, value) != letter.get("original_sha256"):
                raise Unrestorable("the record there is not the one dead-lettered (size or SHA-256 differs)")
            return key, value
        raise Unrestorable(f"no answer from the source within {timeout_s:.0f}s")
    finally:
        consumer.close()


def redrive(settings: Settings, plan: RedrivePlan, skip_unrestorable: bool = False) -> int:
    """Re-publish the plan's letters (originals of truncated ones read again from the source) and mark
    the dead-letter topic done up to the plan's end; returns how many were sent."""
    payloads: list[tuple[Record, bytes | None, bytes | None]] = []
    problems: list[tuple[Record, str]] = []
    for record in plan.letters:
        letter = record.value
        if not letter.get("truncated"):
            payloads.append((record, letter["key"], letter["value"]))
            continue
        try:
            payloads.append((record, *read_original(settings, letter)))
        except Unrestorable as exc:
            problems.append((record, str(exc)))
    if problems and not skip_unrestorable:
        raise RedriveRefused(problems)
    for record, key, _ in payloads:  # before sending any: a compacted topic refuses keyless records
        require_key(record.value["source_topic"], key)
    largest = max((len(key or b"") + len(value or b"") for _, key, value in payloads), default=0)
    producer = EventProducer(settings, **{"message.max.bytes": max(1_000_000, largest + 64 * 1024)})
    for record, key, value in payloads:
        letter = record.value
        producer._producer.produce(  # original bytes, untouched
            full_name(settings, letter["source_topic"]), value=value, key=key,
            headers=[(ATTEMPTS_HEADER, str(letter.get("attempts", 1) + 1).encode())],
            on_delivery=producer._on_delivery)  # a failed delivery fails flush(): nothing is marked done
        producer._producer.poll(0)
    producer.flush()
    if plan.next_offset is not None:
        request = ConsumerGroupTopicPartitions(REDRIVE_GROUP, [TopicPartition(full_name(settings, plan.topic), 0, plan.next_offset)])
        admin = admin_client(settings)  # keep the handle alive until the future resolves
        admin.alter_consumer_group_offsets([request], request_timeout=30)[REDRIVE_GROUP].result(timeout=60)
    return len(payloads)
