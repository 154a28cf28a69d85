"""Faust commits source offsets only once the table changelog writes before them are sent.

A table write (``table[key] = value``) does not send its changelog record: it queues it in Faust's
ProducerBuffer, drained by a background task. Before committing, Faust's consumer calls
``producer.flush()``, whose first step, ``ProducerBuffer.flush()``, gives up as soon as the draining
task has not sent a message for 0.1 s (faust-streaming 0.15: ``flush_atmost`` returns on the first
timeout of its 0.1 s wait). On a busy worker that is common; the offsets were then committed while
changelog records of the events below them were still in memory. A worker killed at that point left
committed offsets ahead of its tables: the worker taking its partitions over restored older table
state and never saw those events again. tests/integration/test_worker_group.py lost plays that way (a by-item
partition with 0 changelog records but a committed offset, the counts of its titles short).

``activate()`` makes ``ProducerBuffer.flush()`` wait until the queue is empty and the message the
task took last was handed to the Kafka producer (whose own flush, the next step, waits for delivery).
``wait_until_ebb`` (back-pressure, ``flush_atmost(n)``) is unchanged.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

_PATCHED = "_vitrina_flush_patch"


def activate() -> None:
    """Patch Faust's ProducerBuffer once per process (idempotent)."""
    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer, _PATCHED, False):
        return
    send_pending = ProducerBuffer._send_pending

    async def _send_pending(self: Any, fut: Any) -> None:
        self._vitrina_sending = getattr(self, "_vitrina_sending", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._vitrina_sending -= 1

    async def flush(self: Any) -> None:
        """Flush all messages (draining the buffer), however long the producer takes."""
        while True:
            if self.state != "running":  # as Faust's: a stopping buffer with messages left is an error
                if self.size:
                    raise RuntimeError("Cannot flush: Producer not Running")
                return
            if not self.size and not getattr(self, "_vitrina_sending", 0):
                return
            self.message_sent.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)

    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush  # type: ignore[method-assign]
    setattr(ProducerBuffer, _PATCHED, True)
