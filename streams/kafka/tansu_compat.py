"""Tansu compatibility: verified high watermarks for Faust's table recovery.

Tansu (v0.6, S3 storage) answers ListOffsets LATEST with a stale value: the base offset of the
partition's LAST BATCH + 1 (or 1), not the offset after its last record; fetching is right. Faust
restores a table by reading its changelog up to that "highwater", so a worker that starts with an
empty local store (new machine, lost disk, a partition moving to another worker) silently came back
with the records of the last changelog batch missing: counts and idempotency marks went backwards
(tests/integration/test_crash_safety.py shows it: 4000 counted plays recovered as 3839).

``streams/runtime/faust_highwaters.py`` wraps ``AIOKafkaConsumerThread._highwaters`` so every answer is checked
by reading: ``verified_end`` reads forward from the answered offset to the end-of-partition event (Tansu's answer
is stale low, never past the end; a fetch past the end would hang until the poll timeout).
``streams.kafka.offsets.end_offsets`` uses the same reader. Everything here is switched on for Tansu only
(``streams.kafka.broker_capabilities``); on Apache Kafka the plain client calls are used.
"""
from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from infra.logs import get_logger

log = get_logger("vitrina.tansu_compat")


class EndNotFound(RuntimeError):
    pass


def verified_end_offsets(consumer: Consumer, partitions: list[tuple[str, int]], timeout_s: float = 60.0,
                         known: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
    """The next offset to be written of each (topic, partition), found by reading forward from the
    broker's (possibly stale) answer to the end-of-partition event.

    Reading is the only reliable way on Tansu: its answer is stale low (never past the end), and a fetch
    at an offset past the end gets neither records nor an end-of-partition event. All partitions are read
    together (one fetch round covers them), so the cost is about one fetch wait, not one per partition.
    A partition whose answer turns out not to be a readable position is read again from its start.
    ``known``: ends verified earlier (a log's end only grows), so a periodic caller reads only what was
    written since, not the whole log again when the broker's answer is far behind.
    """
    starts: dict[tuple[str, int], int] = {}
    lows: dict[tuple[str, int], int] = {}
    for topic, partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        starts[(topic, partition)], lows[(topic, partition)] = max(low, high, (known or {}).get((topic, partition), 0)), low
    ends = _read_to_ends(consumer, starts, timeout_s / 2)
    retry = {tp: lows[tp] for tp in starts if tp not in ends and lows[tp] != starts[tp]}
    if retry:
        ends.update(_read_to_ends(consumer, retry, timeout_s / 2))
    missing = [tp for tp in starts if tp not in ends]
    if missing:
        raise EndNotFound(f"no end-of-partition for {missing} within {timeout_s}s")
    return ends


def _read_to_ends(consumer: Consumer, starts: dict[tuple[str, int], int], timeout_s: float) -> dict[tuple[str, int], int]:
    if not starts:
        return {}
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
    last = {tp: offset - 1 for tp, offset in starts.items()}
    ends: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout_s
    while len(ends) < len(starts) and time.monotonic() < deadline:
        first = consumer.poll(0.5)  # returns at once with an event; consume() would wait out its timeout
        if first is None:
            continue
        for message in [first] + (consumer.consume(10_000, 0.05) if first.error() is None else []):
            tp = (message.topic(), message.partition())
            error = message.error()
            if error is None:
                last[tp] = message.offset()
            elif error.code() == KafkaError._PARTITION_EOF and tp in starts and tp not in ends:
                ends[tp] = max(last[tp] + 1, starts[tp])
    consumer.unassign()
    return ends


def verified_end(consumer: Consumer, topic: str, partition: int, timeout_s: float = 60.0) -> int:
    return verified_end_offsets(consumer, [(topic, partition)], timeout_s)[(topic, partition)]
