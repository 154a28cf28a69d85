"""Tansu compatibility: verified high watermarks for Faust's table recovery.

Tansu (v0.6, S3 storage) answers ListOffsets LATEST with a stale value: the base offset of the
partition's LAST BATCH + 1 (or 1), not the offset after its last record; fetching is right. Faust
restores a table by reading its changelog up to that "highwater", so a worker that starts with an
empty local store (new machine, lost disk, a partition moving to another worker) silently came back
with the records of the last changelog batch missing: counts and idempotency marks went backwards
(tests/test_crash_safety.py shows it: 4000 counted plays recovered as 3839).

``activate()`` wraps ``AIOKafkaConsumerThread._highwaters`` so every answer is checked by reading:
``verified_end`` reads forward from the answered offset to the end-of-partition event (Tansu's answer
is stale low, never past the end; a fetch past the end would hang until the poll timeout). On a broker
that answers correctly this costs one empty fetch per partition, and recovery is the only caller, so
it stays on for every broker. ``streams.offsets.end_offset`` uses the same reader.
Set ``VITRINA_VERIFY_HIGHWATERS=0`` to turn it off.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Mapping

from confluent_kafka import Consumer, KafkaError, TopicPartition

from infra.logs import get_logger
from infra.settings import load

log = get_logger("vitrina.tansu_compat")
_ORIGINAL_ATTR = "_vitrina_unverified_highwaters"


class EndNotFound(RuntimeError):
    pass


def _scan_to_end(consumer: Consumer, topic: str, partition: int, start: int, timeout_s: float) -> int | None:
    """Read from ``start`` until end-of-partition; the next offset after the last record, None on timeout.

    Reading forward is the only reliable way on Tansu: a fetch at an offset past the end gets neither
    records nor an end-of-partition event (it waits out the poll), so ``start`` must not be past the end.
    """
    consumer.assign([TopicPartition(topic, partition, start)])
    last = start - 1
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for message in consumer.consume(10_000, 0.1):
            error = message.error()
            if error is None:
                last = message.offset()
            elif error.code() == KafkaError._PARTITION_EOF:
                return max(last + 1, start)
    return None


def verified_end(consumer: Consumer, topic: str, partition: int, timeout_s: float = 60.0) -> int:
    """The next offset to be written, found by reading forward from the broker's (possibly stale) answer."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    for start in dict.fromkeys((max(low, high), low)):  # the answer is never past the end on Tansu; else from the start
        end = _scan_to_end(consumer, topic, partition, start, timeout_s)
        if end is not None:
            return end
    raise EndNotFound(f"no end-of-partition for {topic}[{partition}] within {timeout_s}s")


def verified_ends(partitions: Mapping[Any, int | None]) -> dict[Any, int | None]:
    """{tp: answered end} -> {tp: end verified by fetching} (blocking; run it off the event loop)."""
    from streams.offsets import probe_consumer

    consumer = probe_consumer(load())
    try:
        verified: dict[Any, int | None] = {}
        for tp, answered in partitions.items():
            true_end = verified_end(consumer, tp.topic, tp.partition)
            if answered is None or true_end != answered:
                log.info("highwater_corrected", topic=tp.topic, partition=tp.partition,
                         answered=answered, verified=true_end)
            verified[tp] = true_end if answered is None else max(answered, true_end)
        return verified
    finally:
        consumer.close()


def activate() -> bool:
    """Patch Faust's aiokafka driver once per process; returns whether the patch is active."""
    if os.environ.get("VITRINA_VERIFY_HIGHWATERS", "1") == "0":
        return False
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if hasattr(AIOKafkaConsumerThread, _ORIGINAL_ATTR):
        return True
    original = AIOKafkaConsumerThread._highwaters

    async def _highwaters(self, partitions):  # type: ignore[no-untyped-def]
        answered = await original(self, partitions)
        if self.consumer.in_transaction:
            return answered
        return await asyncio.get_running_loop().run_in_executor(None, verified_ends, dict(answered))

    setattr(AIOKafkaConsumerThread, _ORIGINAL_ATTR, original)
    AIOKafkaConsumerThread._highwaters = _highwaters
    return True
