"""Dead-letter topics for ops: summarise, show, and re-drive records after a fix.

Re-driving publishes each dead letter's original key and value bytes back to its
source topic (with an attempts header, so a record that fails again is recorded
with attempts + 1) and then commits the dead-letter topic's offset for the
``vitrina-dlq-redrive`` group, so the same letter is never re-driven twice.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from infra.settings import Settings
from streams.codec import Codec, DecodeError
from streams.consumer import Record, tail
from streams.group_offsets import committed
from streams.producer import EventProducer
from streams.topics import DLQ_PREFIX, TOPICS, admin_client, full_name, spec

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
    if source and letter.get("value") is not None:
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


def redrive(settings: Settings, plan: RedrivePlan) -> int:
    producer = EventProducer(settings)
    for record in plan.letters:
        letter = record.value
        producer._producer.produce(  # original bytes, untouched
            full_name(settings, letter["source_topic"]), value=letter["value"], key=letter["key"],
            headers=[(ATTEMPTS_HEADER, str(letter.get("attempts", 1) + 1).encode())])
        producer._producer.poll(0)
    producer.flush()
    if plan.next_offset is not None:
        request = ConsumerGroupTopicPartitions(REDRIVE_GROUP, [TopicPartition(full_name(settings, plan.topic), 0, plan.next_offset)])
        admin = admin_client(settings)  # keep the handle alive until the future resolves
        admin.alter_consumer_group_offsets([request], request_timeout=30)[REDRIVE_GROUP].result(timeout=60)
    return len(plan.letters)
