"""Faust's ProducerBuffer.flush (before every offset commit) waits for every queued table changelog
record however slow the producer is (streams/runtime/faust_flush.py). Unpatched, it returned after the first
0.1 s without a sent message, and offsets were committed ahead of the changelog (found by
tests/integration/test_worker_group.py: plays lost after a worker was killed)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace


async def test_flush_waits_for_a_producer_slower_than_a_tenth_of_a_second():
    from faust.transport.producer import ProducerBuffer

    from streams.runtime.faust_flush import activate

    activate()
    published: list[int] = []

    async def publish_message(fut, wait=False):  # noqa: ANN001 - Faust's channel signature
        await asyncio.sleep(0.25)
        published.append(fut.n)

    channel = SimpleNamespace(publish_message=publish_message)
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    await buffer.start()
    try:
        for n in range(3):
            buffer.put(SimpleNamespace(n=n, message=SimpleNamespace(channel=channel)))
        await asyncio.wait_for(buffer.flush(), timeout=10)
        assert published == [0, 1, 2]
        assert buffer.size == 0
    finally:
        await buffer.stop()
