"""Partition offsets: ends, and the first offset at or after a timestamp.

Apache Kafka answers both from its indexes (ListOffsets), and they are used as answered. Tansu
(``VITRINA_BROKER=tansu``) answers 0 for every timestamp and reports stale high watermarks, so on
Tansu only (``streams.kafka.broker_capabilities``) ends are verified by reading and lookups are checked
against the record at the answered offset and, when wrong, found by binary search over the log,
which assumes timestamps non-decreasing within a partition (true for LogAppendTime and for
producers stamping in order).
"""
from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from infra.settings import Settings
from streams.kafka.broker_capabilities import TANSU, BrokerCapabilities, capabilities


class ProbeConsumer(Consumer):
    """A librdkafka consumer that knows what its broker answers right (``broker``)."""

    broker: BrokerCapabilities = TANSU


def _broker_of(consumer: Consumer) -> BrokerCapabilities:
    """Capabilities of the consumer's broker; a plain Consumer gets the safe (verifying) path."""
    return getattr(consumer, "broker", TANSU)


def probe_consumer(settings: Settings, **overrides: Any) -> ProbeConsumer:
    """A consumer for manual assignment; it never joins a group (librdkafka groups hang on Tansu)."""
    config = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": f"vitrina-probe-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        # point reads: an empty fetch must not wait long for data; but Tansu answers nothing at all when
        # assembling a response from S3 takes longer than the wait (10 ms starved large partitions)
        "fetch.wait.max.ms": 200,
    }
    config.update(overrides)
    consumer = ProbeConsumer(config)
    consumer.broker = capabilities(settings)
    return consumer


def partitions_of(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=timeout_s)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        raise KeyError(f"topic {topic!r} does not exist ({info.error if info else 'no metadata'})")
    return sorted(info.partitions)


def _record_at(consumer: Consumer, topic: str, partition: int, offset: int, timeout_s: float = 5.0) -> Any | None:
    consumer.assign([TopicPartition(topic, partition, offset)])
    while True:
        msg = consumer.poll(timeout_s)
        if msg is None:
            return None
        if msg.error():
            return None  # partition EOF: nothing at or after offset
        return msg


def end_offset(consumer: Consumer, topic: str, partition: int) -> int:
    """The next offset to be written (the high watermark; verified by reading on Tansu)."""
    return end_offsets(consumer, [(topic, partition)])[(topic, partition)]


def end_offsets(consumer: Consumer, partitions: list[tuple[str, int]],
                known: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
    """``end_offset`` of many partitions at once. On Tansu they are read together (about one fetch
    wait in all) from ``known``, ends verified earlier, where reading may start."""
    if _broker_of(consumer).verify_ends_by_reading:
        from streams.kafka.tansu_compat import verified_end_offsets
        return verified_end_offsets(consumer, partitions, known=known)
    ends = {}
    for topic, partition in partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        ends[(topic, partition)] = max(high, 0)
    return ends


def _first_at_or_after(consumer: Consumer, topic: str, partition: int, timestamp_ms: int, end: int) -> int:
    lo, hi = 0, end  # answer in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        msg = _record_at(consumer, topic, partition, mid)
        if msg is None:
            hi = mid
            continue
        if msg.offset() > mid:  # compacted/deleted gap: continue from the record actually found
            mid = msg.offset()
        if msg.timestamp()[1] >= timestamp_ms:
            hi = mid
        else:
            lo = mid + 1
    return lo


def offset_for_time(consumer: Consumer, topic: str, partition: int, timestamp_ms: int) -> int:
    answered = consumer.offsets_for_times([TopicPartition(topic, partition, timestamp_ms)], timeout=10)[0].offset
    end = end_offset(consumer, topic, partition)
    if answered == OFFSET_END or answered < 0:
        answered = end
    if _broker_of(consumer).timestamp_lookups:
        return answered
    at = _record_at(consumer, topic, partition, answered) if answered < end else None
    before = _record_at(consumer, topic, partition, answered - 1) if answered > 0 else None
    at_ok = at is None or at.timestamp()[1] >= timestamp_ms
    before_ok = before is None or before.timestamp()[1] < timestamp_ms
    if at_ok and before_ok:
        return answered
    return _first_at_or_after(consumer, topic, partition, timestamp_ms, end)
