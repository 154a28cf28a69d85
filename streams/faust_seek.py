"""After a rebalance, Faust reads a partition the group never committed from its beginning.

Faust drops records the Kafka client already fetched when a rebalance interrupts delivery (the
generation changed, the flow was stopped, or the partition is paused for table recovery) and relies
on ``perform_seek`` ("seek stream partitions to committed offsets", at the end of every recovery)
to read them again. aiokafka's ``seek_to_committed`` seeks only partitions that HAVE a committed
offset; one without stays where the dropped fetch left the client: past the records, often at the
end. Every record of such a partition was then skipped for good: never processed, never committed
(consumer lag = the whole partition forever). A worker taking over the partitions of a killed one
meets this whenever the dead worker had not committed a partition yet (tests/test_worker_group.py:
a playback partition never forwarded, hence plays missing; impressions and catalogue partitions
never read).

``activate()`` makes ``perform_seek`` also seek every stream partition without a committed offset
to its beginning (what ``auto_offset_reset="earliest"`` means for the group). Changelog partitions
are positioned by the table recovery itself and left alone.

The same glitch on a partition WITH a committed offset ended the same way by another route: after
the seek to the committed offset C the next record Faust got was far past C (the client's position
left behind by a dropped fetch), and Faust takes any forward jump in offsets for a compaction gap:
it marks the offsets in between as done and commits past them (a worker skipped 1,300 playback
records that way, the plays, histories and co-view counts of those records never made). A gap is
legitimate only on a compacted topic. ``activate()`` also makes the consumer, on a topic of the
registry that is not compacted, answer such a jump by seeking back to the last position it had and
reading the records again (at most once per position: a log truncated by retention still moves on).
"""
from __future__ import annotations

from typing import Any, AsyncIterator

from infra.logs import get_logger

_PATCHED = "_vitrina_seek_patch"
log = get_logger("vitrina.faust")


def activate() -> None:
    """Patch Faust's consumer once per process (idempotent)."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer, _PATCHED, False):
        return
    perform_seek = Consumer.perform_seek

    async def perform_seek_uncommitted_too(self: Any) -> None:
        await perform_seek(self)
        uncommitted = [tp for tp in self.assignment()
                       if self._committed_offset.get(tp) is None and not self._is_changelog_tp(tp)]
        if uncommitted:
            for tp, offset in (await self.earliest_offsets(*uncommitted)).items():
                await self.seek(tp, offset)

    Consumer.perform_seek = perform_seek_uncommitted_too  # type: ignore[method-assign]
    getmany = Consumer.getmany

    async def getmany_without_jumps(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        async for item in without_jumps(self, getmany(self, timeout), _uncompacted_topics()):
            yield item

    Consumer.getmany = getmany_without_jumps  # type: ignore[method-assign]
    setattr(Consumer, _PATCHED, True)


async def without_jumps(consumer: Any, records: AsyncIterator[tuple[Any, Any]],
                        guarded: frozenset[str]) -> AsyncIterator[tuple[Any, Any]]:
    """``records`` (topic partition, message) of one fetch, except that a partition of a ``guarded``
    topic whose next offset is past the position read so far is sought back to that position and
    the rest of its records in this fetch are dropped (they come again)."""
    reread: dict = consumer.__dict__.setdefault("_vitrina_reread", {})
    jumped: set = set()
    async for tp, message in records:
        if tp in jumped:
            continue
        last = consumer._read_offset.get(tp)
        if (last is not None and message.offset > last + 1 and tp.topic in guarded
                and reread.get(tp) != last):
            reread[tp] = last
            jumped.add(tp)
            log.warning("fetch_jumped_over_records", topic=tp.topic, partition=tp.partition, read_to=int(last),
                        got=message.offset)
            await consumer.seek(tp, last)
            continue
        yield tp, message


def _uncompacted_topics() -> frozenset[str]:
    """Physical names of the registry topics that are not compacted (replay copies included)."""
    global _UNCOMPACTED
    if _UNCOMPACTED is None:
        from infra.settings import load
        from streams import replay_mode
        from streams.topics import all_specs, full_name

        settings = load()
        names = set()
        for spec in all_specs():
            if not spec.compacted:
                names |= {full_name(settings, spec.name), full_name(settings, replay_mode.physical_name(spec.name))}
        _UNCOMPACTED = frozenset(names)
    return _UNCOMPACTED


_UNCOMPACTED: frozenset[str] | None = None
