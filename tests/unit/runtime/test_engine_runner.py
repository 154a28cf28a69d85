"""The engine runner's contract without a broker: checkpoints, restore, rebalance, bad input, failures.

The Kafka clients are replaced by in-memory fakes (the only mocks here, so that each step of a
checkpoint and a crash between two of them can be placed exactly); the real-broker behaviour of the same
runner is covered by tests/integration/test_coview_crash_safety.py and tests/faults/.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError

from infra.settings import load
from streams.kafka.codec import default_codec
from streams.kafka.topics import full_name, spec
from streams.runtime.engine.runner import Output, Runner, SinkFailed, sink_write
from streams.runtime.engine.store import APPLIED_PREFIX, PartitionStore
from streams.runtime.records import Inbound

PLAYBACK = spec("playback")
OUT_TOPIC = "playback.by-item"
CODEC = default_codec()
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def playback_bytes(n: int, item: str = "t1") -> bytes:
    return CODEC.encode(PLAYBACK.schema, {
        "event_id": f"e{n}", "session_id": "s1", "user_id": "u1", "device_id": "d1", "device_type": "TV",
        "os": "tizen", "app_version": "1", "item_id": item, "event_type": "START", "position_ms": 0,
        "duration_ms": 60_000, "network_kbps": 8000, "buffered_ratio": 0.5, "stall_ms": 0, "bitrate_kbps": 6000,
        "event_time": T0})


@dataclass
class Record:
    offset: int
    value: bytes
    key: bytes | None = b"u1"
    headers: tuple = ()
    timestamp: int = 0


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    offset: int


@dataclass
class FakeCluster:
    partitions: dict[str, set[int]] = field(default_factory=dict)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


@dataclass
class FakeClient:
    cluster: FakeCluster = field(default_factory=FakeCluster)


@dataclass
class FakeProducer:
    """Acknowledges every send at once (or refuses when ``down``); keeps the log of every topic."""

    sent: list[Sent] = field(default_factory=list)
    down: bool = False
    client: Any = None  # aiokafka's metadata (``client.cluster``); None: partitions never known here

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = FakeClient()

    async def send(self, topic, value=None, key=None, partition=None, headers=None):
        if self.down:
            raise ConnectionError("broker away")
        offset = sum(1 for s in self.sent if s.topic == topic and s.partition == partition)
        self.sent.append(Sent(topic, key, value, partition, offset))
        future = asyncio.get_running_loop().create_future()
        future.set_result(type("Metadata", (), {"offset": offset})())
        return future

    def log(self, topic: str, partition: int) -> list[tuple[bytes | None, bytes | None]]:
        return [(s.key, s.value) for s in self.sent if s.topic == topic and s.partition == partition]


@dataclass
class FakeConsumer:
    commits: list[dict] = field(default_factory=list)
    seeks: list[tuple[Any, int]] = field(default_factory=list)
    fail_commit: bool = False

    async def commit(self, offsets):
        if self.fail_commit:
            raise CommitFailedError("rebalance under way")
        self.commits.append({(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()})

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))


class Counting:
    """Counts events per item and forwards each one; raises for items named 'bug'."""

    name = "test-counting"
    sources = (PLAYBACK,)

    def __init__(self, fail_sink: bool = False) -> None:
        self.fail_sink = fail_sink
        self.assigned_calls: list[list[int]] = []
        self.revoked_calls: list[list[int]] = []

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: Output) -> None:
        for event in events:
            item = event.value["item_id"]
            if item == "bug":
                raise ValueError("a bug in the processor")
            store[item] = store.get(item, 0) + 1
            await out.send(OUT_TOPIC, event.raw, key=item.encode(), partition=partition)
        if self.fail_sink:
            async with sink_write("views"):
                raise ConnectionError("redis away")

    async def tick(self, out: Output, stores: dict[int, PartitionStore]) -> None:
        return None

    def assigned(self, partitions, stores) -> None:
        self.assigned_calls.append(list(partitions))

    def revoked(self, partitions) -> None:
        self.revoked_calls.append(list(partitions))


def make_runner(processor, producer: FakeProducer, consumer: FakeConsumer | None = None) -> Runner:
    runner = Runner(processor, load())
    runner.producer = producer
    runner.consumer = consumer or FakeConsumer()
    runner.out = Output(producer, runner.settings, runner.name, runner.codec)
    reads: list[dict] = []

    async def read_changelog(partitions, known):
        reads.append(dict(known))
        ends = {p: len(producer.log(runner.changelog_topic, p)) for p in partitions}
        return {p: producer.log(runner.changelog_topic, p) for p in partitions if known.get(p) != ends[p]}, ends

    runner._read_changelog = read_changelog  # type: ignore[method-assign]
    runner.changelog_reads = reads  # type: ignore[attr-defined]
    return runner


def source_topic(runner: Runner) -> str:
    return full_name(runner.settings, PLAYBACK.name)


def records(offsets: range, item: str = "t1") -> list[Record]:
    return [Record(o, playback_bytes(o, item)) for o in offsets]


def test_a_checkpoint_acknowledges_outputs_then_writes_state_and_marker_then_commits():
    async def scenario():
        producer, consumer = FakeProducer(), FakeConsumer()
        runner = make_runner(Counting(), producer, consumer)
        await runner.assign([0])
        await runner._process(source_topic(runner), 0, records(range(5)))
        await runner.checkpoint()
        topics = [s.topic for s in producer.sent]
        out_name = full_name(runner.settings, OUT_TOPIC)
        assert topics == [out_name] * 5 + [runner.changelog_topic] * 2  # outputs first, then the state
        changelog = producer.log(runner.changelog_topic, 0)
        assert changelog == [(b"t1", b"5"), (APPLIED_PREFIX + b"playback", b"4")]  # marker last
        assert consumer.commits == [{(source_topic(runner), 0): 5}]
        await runner.checkpoint()  # nothing new: nothing written, nothing committed again
        assert len(producer.sent) == 7 and len(consumer.commits) == 1
    asyncio.run(scenario())


def test_a_crash_between_changelog_and_commit_applies_nothing_twice():
    """The commit fails after the changelog was written (the crash window): a fresh runner restores the
    state with its marker, the uncommitted records come again, and only the new ones count."""
    async def scenario():
        producer = FakeProducer()
        first = make_runner(Counting(), producer, FakeConsumer(fail_commit=True))
        await first.assign([0])
        await first._process(source_topic(first), 0, records(range(5)))
        await first.checkpoint()  # changelog written, commit refused: offsets stay at 0

        second = make_runner(Counting(), producer)
        await second.assign([0])
        assert second.stores[0].get("t1") == 5 and second.stores[0].applied_offset("playback") == 4
        await second._process(source_topic(second), 0, records(range(8)))  # redelivered from offset 0
        assert second.stores[0].get("t1") == 8  # = one uninterrupted pass over offsets 0..7
        await second.checkpoint()
        assert second.consumer.commits[-1] == {(source_topic(second), 0): 8}
        forwarded = [s for s in producer.sent if s.topic == full_name(second.settings, OUT_TOPIC)]
        assert len(forwarded) == 8  # the skipped records were not sent again
    asyncio.run(scenario())


def test_a_revoked_partition_is_kept_and_reused_when_its_changelog_did_not_move():
    async def scenario():
        producer = FakeProducer()
        processor = Counting()
        runner = make_runner(processor, producer)
        await runner.assign([0, 1])
        await runner._process(source_topic(runner), 1, records(range(3)))
        await runner.revoke([1])  # checkpoints first, then keeps partition 1 as standby
        assert 1 not in runner.stores and runner.standby[1].get("t1") == 3
        assert processor.revoked_calls == [[1]]
        kept = runner.standby[1]
        await runner.assign([1])  # nobody wrote its changelog meanwhile: reused, not read again
        assert runner.stores[1] is kept
        assert runner.changelog_reads[-1] == {1: kept.changelog_end}
        assert processor.assigned_calls == [[0, 1], [1]]

        other = make_runner(Counting(), producer)  # another worker took it and wrote more
        await other.assign([1])
        await other._process(source_topic(other), 1, records(range(3, 5)))
        await other.checkpoint()
        await runner.revoke([1])
        await runner.assign([1])  # the changelog moved: restored from it
        assert runner.stores[1] is not kept and runner.stores[1].get("t1") == 5
    asyncio.run(scenario())


def test_records_fetched_before_the_state_is_restored_are_read_again():
    async def scenario():
        runner = make_runner(Counting(), FakeProducer())
        await runner._process(source_topic(runner), 3, records(range(10, 12)))
        assert [(tp.partition, offset) for tp, offset in runner.consumer.seeks] == [(3, 10)]
        assert runner.stores == {}
    asyncio.run(scenario())


def test_bad_records_are_dead_lettered_with_their_reason_and_the_partition_goes_on():
    async def scenario():
        producer = FakeProducer()
        runner = make_runner(Counting(), producer)
        await runner.assign([0])
        batch = [Record(0, playback_bytes(0)), Record(1, b"\x00garbage"),
                 Record(2, playback_bytes(2), headers=(("vitrina-attempts", b"3"),)),
                 Record(3, playback_bytes(3))]
        await runner._process(source_topic(runner), 0, batch)
        await runner._process(source_topic(runner), 0, [Record(4, playback_bytes(4, "bug"), headers=(
            ("vitrina-attempts", b"2"),))])
        await runner.checkpoint()
        letters = [CODEC.decode(s.value, "vitrina.DeadLetter") for s in producer.sent
                   if s.topic == full_name(runner.settings, "dlq.playback")]
        assert [(l["source_offset"], l["reason_code"]) for l in letters] == [(1, "BAD_MAGIC"),
                                                                          (4, "PROCESSING_FAILED")]
        assert letters[1]["attempts"] == 2 and "a bug in the processor" in letters[1]["error"]
        assert runner.stores[0].get("t1") == 3 and runner.stores[0].applied_offset("playback") == 4
        assert runner.consumer.commits[-1] == {(source_topic(runner), 0): 5}
    asyncio.run(scenario())


def test_a_failed_view_write_stops_the_runner_without_dead_letters_or_progress():
    """A sink (Redis) that fails is not the records' fault: no dead letter, no marker moved; the error
    reaches the supervisor, whose fresh runner restores the last checkpoint and processes them again."""
    async def scenario():
        producer = FakeProducer()
        runner = make_runner(Counting(fail_sink=True), producer)
        await runner.assign([0])
        with pytest.raises(SinkFailed):
            await runner._process(source_topic(runner), 0, records(range(3)))
        assert runner.stores[0].applied_offset("playback") == -1
        assert not any(s.topic.endswith("dlq.playback") for s in producer.sent)
    asyncio.run(scenario())


def test_a_send_that_cannot_be_queued_stops_the_runner():
    async def scenario():
        producer = FakeProducer()
        runner = make_runner(Counting(), producer)
        await runner.assign([0])
        producer.down = True
        from streams.runtime.engine.runner import OutputFailed
        with pytest.raises(OutputFailed):
            await runner._process(source_topic(runner), 0, records(range(2)))
        assert runner.stores[0].applied_offset("playback") == -1
    asyncio.run(scenario())


def test_changelog_records_per_partition_are_counted_once_per_checkpoint():
    async def scenario():
        producer = FakeProducer()
        runner = make_runner(Counting(), producer)
        await runner.assign([0])
        for start in range(0, 30, 3):  # ten batches, one checkpoint
            await runner._process(source_topic(runner), 0, records(range(start, start + 3), f"t{start % 2}"))
        await runner.checkpoint()
        keys = Counter(key for key, _ in producer.log(runner.changelog_topic, 0))
        assert keys == {b"t0": 1, b"t1": 1, APPLIED_PREFIX + b"playback": 1}
    asyncio.run(scenario())


def test_a_replay_worker_marks_applied_only_up_to_its_range_end(monkeypatch):
    """A replay (or rebuild) worker reads up to its range's end: records beyond it are not processed and
    not marked applied, so its catch-up under the same group (same changelog) reads them after the
    swap. Before: the marker took the batch's last offset and the catch-up skipped the records that
    arrived during the rebuild (tests/faults/test_redis_loss.py, traffic during the rebuild)."""
    from streams.runtime import replay_mode

    monkeypatch.setenv("VITRINA_REPLAY_ID", "t1")
    monkeypatch.setattr(replay_mode, "_bounds", {"playback": {0: 3}})

    async def scenario():
        producer = FakeProducer()
        runner = make_runner(Counting(), producer)
        await runner.assign([0])
        await runner._process(source_topic(runner), 0, records(range(6)))  # offsets 3..5 are beyond the end
        assert runner.stores[0].get("t1") == 3 and runner.stores[0].applied_offset("playback") == 2
        await runner.checkpoint()
        assert runner.consumer.commits[-1] == {(source_topic(runner), 0): 3}
    asyncio.run(scenario())


def test_keyed_outputs_go_to_the_partition_kafka_s_default_partitioner_picks():
    """After the first send to a topic the runner picks a keyed record's partition itself (without
    aiokafka's metadata look-ups per send): the same one aiokafka's default partitioner (Kafka's murmur2)
    picks, so a title's records stay together whoever forwards them."""
    from aiokafka.partitioner import DefaultPartitioner

    async def scenario():
        producer = FakeProducer()
        settings = load()
        physical = full_name(settings, OUT_TOPIC)
        producer.client.cluster.partitions[physical] = set(range(6))
        out = Output(producer, settings, "test", CODEC)
        keys = [f"title-{n}".encode() for n in range(40)]
        for key in keys:
            await out.send(OUT_TOPIC, b"v", key=key)
        await out.send(OUT_TOPIC, b"v", key=b"pinned", partition=5)
        picked = [s.partition for s in producer.sent]
        assert picked[0] is None  # the first send: aiokafka partitions it (and learns the topic's partitions)
        assert picked[1:40] == [DefaultPartitioner()(key, list(range(6)), list(range(6))) for key in keys[1:]]
        assert picked[40] == 5 and len(set(picked[1:40])) == 6
    asyncio.run(scenario())


def test_a_replay_worker_s_dropped_outputs_are_counted_and_need_not_be_built(monkeypatch):
    """A replay (rebuild) worker drops its output events: ``Output.dropped`` says so before the processor
    encodes them, and counts them as dropped like ``send`` does; internal topics (the by-item copy) and a
    normal worker's outputs are sent."""
    from streams.runtime import replay_mode

    def suppressed(topic: str) -> float:
        return replay_mode.REPLAY_SUPPRESSED.labels(topic=topic)._value.get()

    async def scenario(replaying: bool):
        producer = FakeProducer()
        out = Output(producer, load(), "test", CODEC)
        before = suppressed("stats.plays")
        assert out.dropped("stats.plays", 3) is replaying
        assert suppressed("stats.plays") - before == (3 if replaying else 0)
        assert out.dropped(OUT_TOPIC) is False
        await out.send(OUT_TOPIC, b"v", key=b"t1")
        assert [s.topic for s in producer.sent] == [full_name(out.settings, replay_mode.physical_name(OUT_TOPIC))]

    asyncio.run(scenario(False))
    monkeypatch.setenv("VITRINA_REPLAY_ID", "t1")
    asyncio.run(scenario(True))
