"""Tansu compatibility: verified high watermarks for Faust's table recovery.

Tansu (v0.6, S3 storage) answers ListOffsets LATEST with a stale value: the base offset of the
partition's LAST BATCH + 1 (or 1), not the offset after its last record; fetching is right. Faust
restores a table by reading its changelog up to that "highwater", so a worker that starts with an
empty local store (new machine, lost disk, a partition moving to another worker) silently came back
with the records of the last changelog batch missing: counts and idempotency marks went backwards
(tests/test_crash_safety.py shows it: 4000 counted plays recovered as 3839).

``activate()`` wraps ``AIOKafkaConsumerThread._highwaters`` so every answer is checked by reading:
``streams.offsets.end_offset`` probes at the answered offset and, when a record is there, searches
(exponential, then binary) for the true end. On a broker that answers correctly this costs one empty
fetch per partition, and recovery is the only caller, so it stays on for every broker.
Set ``VITRINA_VERIFY_HIGHWATERS=0`` to turn it off.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Mapping

from infra.logs import get_logger
from infra.settings import load

log = get_logger("vitrina.tansu_compat")
_ORIGINAL_ATTR = "_vitrina_unverified_highwaters"


def verified_ends(partitions: Mapping[Any, int | None]) -> dict[Any, int | None]:
    """{tp: answered end} -> {tp: end verified by fetching} (blocking; run it off the event loop)."""
    from streams.offsets import end_offset, probe_consumer

    settings = load()
    consumer = probe_consumer(settings)
    try:
        verified: dict[Any, int | None] = {}
        for tp, answered in partitions.items():
            true_end = end_offset(consumer, tp.topic, tp.partition)
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
