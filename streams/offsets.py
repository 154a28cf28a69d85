"""Partition offsets: ends, and the first offset at or after a timestamp.

Kafka answers timestamp lookups from its time index (ListOffsets). Tansu (the
embedded broker) answers 0 for every timestamp and reports stale high
watermarks, so lookups are verified by reading the record at the answered
offset and, when the answer is wrong, found by binary search over the log,
which assumes timestamps non-decreasing within a partition (true for
LogAppendTime and for producers stamping in order).
"""
from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from infra.settings import Settings


def probe_consumer(settings: Settings, **overrides: Any) -> Consumer:
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
    return Consumer(config)


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
    """The next offset to be written, verified by reading (watermarks can be stale on Tansu)."""
    from streams.tansu_compat import verified_end
    return verified_end(consumer, topic, partition)


def end_offsets(consumer: Consumer, partitions: list[tuple[str, int]],
                known: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
    """``end_offset`` of many partitions at once (read together: about one fetch wait in all);
    ``known``: ends verified earlier, where reading may start."""
    from streams.tansu_compat import verified_end_offsets
    return verified_end_offsets(consumer, partitions, known=known)


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
    at = _record_at(consumer, topic, partition, answered) if answered < end else None
    before = _record_at(consumer, topic, partition, answered - 1) if answered > 0 else None
    at_ok = at is None or at.timestamp()[1] >= timestamp_ms
    before_ok = before is None or before.timestamp()[1] < timestamp_ms
    if at_ok and before_ok:
        return answered
    return _first_at_or_after(consumer, topic, partition, timestamp_ms, end)
