"""Faust's table recovery on verified high watermarks (Tansu only; see ``streams/kafka/tansu_compat.py``).

``activate()`` wraps ``AIOKafkaConsumerThread._highwaters``: every changelog end Faust is answered is
checked by reading (``tansu_compat.verified_end_offsets``), so a worker restoring a table reads the
changelog to its true end. ``streams/runtime/app.py`` switches it on when the broker needs it
(``streams.kafka.broker_capabilities``). Set ``VITRINA_VERIFY_HIGHWATERS=0`` (``Settings.verify_highwaters``)
to turn it off on Tansu too.
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping

from infra.logs import get_logger
from infra.settings import Settings, load
from streams.kafka.offsets import probe_consumer
from streams.kafka.tansu_compat import verified_end_offsets

log = get_logger("vitrina.tansu_compat")
_ORIGINAL_ATTR = "_vitrina_unverified_highwaters"


def verified_ends(partitions: Mapping[Any, int | None]) -> dict[Any, int | None]:
    """{tp: answered end} -> {tp: end verified by fetching} (blocking; run it off the event loop)."""
    consumer = probe_consumer(load())
    try:
        ends = verified_end_offsets(consumer, [(tp.topic, tp.partition) for tp in partitions])
        verified: dict[Any, int | None] = {}
        for tp, answered in partitions.items():
            true_end = ends[(tp.topic, tp.partition)]
            if answered is None or true_end != answered:
                log.info("highwater_corrected", topic=tp.topic, partition=tp.partition,
                         answered=answered, verified=true_end)
            verified[tp] = true_end if answered is None else max(answered, true_end)
        return verified
    finally:
        consumer.close()


def activate(settings: Settings) -> bool:
    """Patch Faust's aiokafka driver once per process; returns whether the patch is active."""
    if not settings.verify_highwaters:
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
