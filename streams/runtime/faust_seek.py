"""After a rebalance, Faust reads a partition the group never committed from its beginning.

Faust drops records the Kafka client already fetched when a rebalance interrupts delivery (the
generation changed, the flow was stopped, or the partition is paused for table recovery) and relies
on ``perform_seek`` ("seek stream partitions to committed offsets", at the end of every recovery)
to read them again. aiokafka's ``seek_to_committed`` seeks only partitions that HAVE a committed
offset; one without stays where the dropped fetch left the client: past the records, often at the
end. Every record of such a partition was then skipped for good: never processed, never committed
(consumer lag = the whole partition forever). A worker taking over the partitions of a killed one
meets this whenever the dead worker had not committed a partition yet (tests/integration/test_worker_group.py:
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
reading the records again (a few times per position at most: a log truncated by retention still
moves on). Seeks run in the consumer's thread (``seek_wait``), as Faust's own seek to committed offsets.

Third, commits stuck behind a hole. Faust commits up to the first offset not acknowledged; a record
whose delivery a rebalance cut short (``wait_first`` cancels it when the flow stops, the offset still
counts as read) is never acknowledged, and the partition's commits stopped there for good: consumer
lag never returned to 0 (a trainer partition 7,000 behind, a playback partition 1,900 behind), and a
restart re-read everything after the hole. Faust's check also lets a hole of exactly one record pass
(``min(acked) - committed > 1``; the committed offset is the next one to read), committing past a
record nobody acknowledged, e.g. an upload still held by its transcode job. ``activate()`` makes a
hole right after the committed offset block commits (strictly), and when no record of the hole is
being processed for ``HOLE_GRACE_S`` seconds, reads the partition again from the committed offset
(at-least-once: the records after the hole come again, and every consumer here is idempotent).
"""
from __future__ import annotations

import asyncio
import time
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
        self.__dict__.setdefault("_vitrina_abandoned", {}).clear()  # everything is read again from here
        await perform_seek(self)
        uncommitted = [tp for tp in self.assignment()
                       if self._committed_offset.get(tp) is None and not self._is_changelog_tp(tp)]
        if uncommitted:
            await self.seek_wait(dict(await self.earliest_offsets(*uncommitted)))

    Consumer.perform_seek = perform_seek_uncommitted_too  # type: ignore[method-assign]
    init = Consumer.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807 - wraps Faust's __init__
        init(self, *args, **kwargs)
        self.callback = remember_abandoned(self, self.callback)

    Consumer.__init__ = __init__  # type: ignore[method-assign]
    getmany = Consumer.getmany

    async def getmany_without_jumps(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        async for item in without_jumps(self, getmany(self, timeout), _uncompacted_topics()):
            yield item

    Consumer.getmany = getmany_without_jumps  # type: ignore[method-assign]
    new_offset = Consumer._new_offset

    def new_offset_no_holes(self: Any, tp: Any) -> int | None:
        if hole_after_commit(self, tp, time.monotonic()):
            return None
        return new_offset(self, tp)

    Consumer._new_offset = new_offset_no_holes  # type: ignore[method-assign]
    setattr(Consumer, _PATCHED, True)


HOLE_GRACE_S = 10.0
REREAD_TRIES = 3  # per position: a jump that stays (a log truncated by retention) is let through after that


def hole_after_commit(consumer: Any, tp: Any, now: float) -> bool:
    """Whether the records acknowledged on ``tp`` start after its committed offset (commits wait). A hole
    that nothing being processed can fill for ``HOLE_GRACE_S`` makes the partition be read again."""
    holes: dict = consumer.__dict__.setdefault("_vitrina_holes", {})
    acked = consumer._acked.get(tp)
    committed = consumer._committed_offset.get(tp)
    if not acked or committed is None or consumer._gap.get(tp):
        holes.pop(tp, None)  # nothing to commit, or compaction gaps: Faust's own bookkeeping
        return False
    first = min(acked)
    if first <= committed:
        holes.pop(tp, None)
        return False
    in_flight = any(m.tp == tp and committed <= m.offset < first for m in list(consumer._unacked_messages))
    since = holes.get(tp)
    if in_flight or since is None or since[0] != committed:
        holes[tp] = (committed, now)
    elif now - since[1] >= HOLE_GRACE_S:
        holes.pop(tp, None)
        log.warning("commit_hole_reread", topic=tp.topic, partition=tp.partition, committed=int(committed),
                    first_acked=int(first))
        asyncio.ensure_future(consumer.seek_wait({tp: committed}))
    return True


async def without_jumps(consumer: Any, records: AsyncIterator[tuple[Any, Any]],
                        guarded: frozenset[str]) -> AsyncIterator[tuple[Any, Any]]:
    """``records`` (topic partition, message) of one fetch, except that a partition of a ``guarded``
    topic whose next offset is past the position read so far is sought back to that position and
    the rest of its records in this fetch are dropped (they come again)."""
    reread: dict = consumer.__dict__.setdefault("_vitrina_reread", {})
    abandoned: dict = consumer.__dict__.setdefault("_vitrina_abandoned", {})
    jumped: set = set()
    async for tp, message in records:
        if tp in jumped:
            continue
        cut = abandoned.get(tp)
        if cut is not None and message.offset >= cut:
            if message.offset > cut:  # records after one whose delivery was cut short: read it again first
                jumped.add(tp)
                log.warning("delivery_cut_short_rereading", topic=tp.topic, partition=tp.partition, offset=cut,
                            got=message.offset)
                await consumer.seek_wait({tp: cut})
                continue
            del abandoned[tp]  # here it is again, in order
        last = consumer._read_offset.get(tp)
        if last is not None and message.offset > last + 1 and tp.topic in guarded:
            position, tries = reread.get(tp, (None, 0))
            tries = tries + 1 if position == last else 1
            if tries <= REREAD_TRIES:
                reread[tp] = (last, tries)
                jumped.add(tp)
                log.warning("fetch_jumped_over_records", topic=tp.topic, partition=tp.partition, read_to=int(last),
                            got=message.offset)
                await consumer.seek_wait({tp: last})
                continue
        yield tp, message


def remember_abandoned(consumer: Any, callback: Any) -> Any:
    """Faust's drain loop delivers each record with ``wait_first(callback(message), suspend_flow)``:
    when the flow stops first the delivery is cancelled, yet the offset counts as read and the loop
    goes on with the next records once the flow resumes. The record was then processed after the ones
    behind it or never, and sinks that skip offsets at or below a partition's high-water mark (play
    counts, impression counts) dropped it. The cancelled offset is remembered here; ``without_jumps``
    reads the partition again from it before any later record."""
    abandoned: dict = consumer.__dict__.setdefault("_vitrina_abandoned", {})

    async def deliver(message: Any) -> None:
        try:
            await callback(message)
        except asyncio.CancelledError:
            tp, offset = message.tp, message.offset
            if tp not in abandoned or offset < abandoned[tp]:
                abandoned[tp] = offset
            raise

    return deliver


def _uncompacted_topics() -> frozenset[str]:
    """Physical names of the registry topics that are not compacted (replay copies included)."""
    global _UNCOMPACTED
    if _UNCOMPACTED is None:
        from infra.settings import load
        from streams.runtime import replay_mode
        from streams.kafka.topics import all_specs, full_name

        settings = load()
        names = set()
        for spec in all_specs():
            if not spec.compacted:
                names |= {full_name(settings, spec.name), full_name(settings, replay_mode.physical_name(spec.name))}
        _UNCOMPACTED = frozenset(names)
    return _UNCOMPACTED


_UNCOMPACTED: frozenset[str] | None = None
