"""After a rebalance, a stream partition without a committed offset is read from its beginning
(streams/runtime/faust_seek.py): aiokafka's seek_to_committed leaves it where a fetch Faust dropped during the
rebalance left it, past records nobody processed (found by tests/integration/test_worker_group.py)."""
from __future__ import annotations

from collections import defaultdict

from faust.types import TP


class FakeConsumer:
    def __init__(self, committed: dict[TP, int | None], changelogs: set[str]) -> None:
        self.committed = committed
        self.changelogs = changelogs
        self._read_offset: dict = defaultdict(lambda: None)
        self._committed_offset: dict = defaultdict(lambda: None)
        self.seeks: list[tuple[TP, int]] = []

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)

    def assignment(self) -> set[TP]:
        return set(self.committed)

    def _is_changelog_tp(self, tp: TP) -> bool:
        return tp.topic in self.changelogs

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: 3 for tp in tps}  # the log starts at 3 (older records deleted)

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        self.seeks.extend(offsets.items())


async def test_partitions_without_a_committed_offset_are_read_from_their_beginning():
    from faust.transport.consumer import Consumer

    from streams.runtime.faust_seek import activate

    activate()
    committed, uncommitted, changelog = TP("playback", 0), TP("playback", 5), TP("app-plays-changelog", 5)
    consumer = FakeConsumer({committed: 120, uncommitted: None, changelog: None}, {"app-plays-changelog"})
    await Consumer.perform_seek(consumer)
    assert consumer.seeks == [(uncommitted, 3)]
    assert consumer._committed_offset[committed] == 120


class Msg:
    def __init__(self, offset: int) -> None:
        self.offset = offset


async def records(items):
    for item in items:
        yield item


async def test_a_jump_over_unread_records_of_a_stream_topic_is_read_again_not_skipped():
    from streams.runtime.faust_seek import REREAD_TRIES, without_jumps

    playback, titles = TP("playback", 2), TP("catalogue.titles", 0)
    consumer = FakeConsumer({}, set())
    consumer._read_offset.update({playback: 608, titles: 10})
    fetch = [(playback, Msg(2483)), (playback, Msg(2484)), (titles, Msg(40)), (titles, Msg(41))]
    got = [(tp, m.offset) async for tp, m in without_jumps(consumer, records(fetch), frozenset({"playback"}))]
    assert got == [(titles, 40), (titles, 41)]  # a compacted topic may have gaps: read on
    assert consumer.seeks == [(playback, 608)]  # the unread 609..2482 come again
    # the same jump again and again (records deleted by retention meanwhile): not a loop, read on
    for _ in range(REREAD_TRIES - 1):
        assert [m async for _, m in without_jumps(consumer, records(fetch[:1]), frozenset({"playback"}))] == []
    again = [(tp, m.offset) async for tp, m in without_jumps(consumer, records(fetch[:1]), frozenset({"playback"}))]
    assert again == [(playback, 2483)]


async def test_contiguous_records_pass():
    from streams.runtime.faust_seek import without_jumps

    playback = TP("playback", 2)
    consumer = FakeConsumer({}, set())
    consumer._read_offset[playback] = 608
    fetch = [(playback, Msg(608)), (playback, Msg(609)), (playback, Msg(610))]
    got = []
    async for tp, m in without_jumps(consumer, records(fetch), frozenset({"playback"})):
        got.append(m.offset)
        consumer._read_offset[tp] = m.offset  # what Faust's drain loop does after delivering a record
    assert got == [608, 609, 610] and consumer.seeks == []


class HeldMsg:
    def __init__(self, tp: TP, offset: int) -> None:
        self.tp, self.offset = tp, offset


async def test_a_hole_after_the_committed_offset_blocks_commits_and_is_read_again_when_nothing_fills_it():
    import asyncio

    from streams.runtime.faust_seek import HOLE_GRACE_S, hole_after_commit

    tp = TP("playback", 5)
    consumer = FakeConsumer({}, set())
    consumer._acked, consumer._gap, consumer._unacked_messages = defaultdict(list), {}, set()
    consumer._committed_offset[tp] = 155
    consumer._acked[tp] = [159, 160, 161]  # 155..158 never acknowledged
    assert hole_after_commit(consumer, tp, now=0.0)  # commits wait
    assert hole_after_commit(consumer, tp, now=HOLE_GRACE_S + 1)
    await asyncio.sleep(0)
    assert consumer.seeks == [(tp, 155)]  # read again from the committed offset


async def test_a_record_being_processed_is_waited_for_even_a_single_one():
    import asyncio

    from streams.runtime.faust_seek import HOLE_GRACE_S, hole_after_commit

    tp = TP("uploads.by-content", 2)
    consumer = FakeConsumer({}, set())
    consumer._acked, consumer._gap = defaultdict(list), {}
    consumer._unacked_messages = {HeldMsg(tp, 7)}  # an upload held by its transcode job
    consumer._committed_offset[tp] = 7
    consumer._acked[tp] = [8]  # Faust alone would commit 9, past the held record
    for now in (0.0, HOLE_GRACE_S * 3):
        assert hole_after_commit(consumer, tp, now)
    await asyncio.sleep(0)
    assert consumer.seeks == []
    consumer._acked[tp] = [7, 8]  # the job finished
    assert not hole_after_commit(consumer, tp, HOLE_GRACE_S * 4)


class TpMsg:
    def __init__(self, tp: TP, offset: int) -> None:
        self.tp, self.offset = tp, offset


async def test_a_delivery_cut_short_is_read_again_before_the_records_after_it():
    import asyncio

    import pytest

    from streams.runtime.faust_seek import remember_abandoned, without_jumps

    tp = TP("ranking.impressions", 5)
    consumer = FakeConsumer({}, set())
    delivered: list[int] = []

    async def slow_callback(message):  # noqa: ANN001 - waits for the flow like Faust's conductor
        await asyncio.sleep(10)
        delivered.append(message.offset)

    deliver = remember_abandoned(consumer, slow_callback)
    task = asyncio.ensure_future(deliver(TpMsg(tp, 161)))  # Faust's wait_first: the flow stopped first
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    consumer._read_offset[tp] = 161  # Faust counts it as read all the same
    fetch = [(tp, TpMsg(tp, 162)), (tp, TpMsg(tp, 163))]
    assert [m async for _, m in without_jumps(consumer, records(fetch), frozenset({tp.topic}))] == []
    assert consumer.seeks == [(tp, 161)]  # 161 first, then 162, 163 again
    again = [(tp, TpMsg(tp, 161)), (tp, TpMsg(tp, 162))]
    assert [m.offset async for _, m in without_jumps(consumer, records(again), frozenset({tp.topic}))] == [161, 162]
