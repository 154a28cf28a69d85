"""One processor on one source topic: an aiokafka consumer-group member with changelog-backed state.

Loop: poll a batch (up to ``Settings.engine_max_records``) -> decode (bad records to ``dlq.<topic>``)
-> ``processor.process(partition, store, events, out)`` per partition -> ``processor.tick(out)``
(timers) -> every ``Settings.engine_commit_s`` a checkpoint: changed state keys to the changelog,
then wait for every send of the period (outputs and changelog) to be acknowledged, then commit the
source offsets. A crash replays at most one period; the ``applied`` marker in the changelog makes
the replayed records no-ops for the state, and outputs carry their origin offsets so downstream state
skips them too.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from confluent_kafka import OFFSET_BEGINNING, KafkaError as ConfluentError, KafkaException as ConfluentException
from confluent_kafka import TopicPartition as ConfluentPartition
from prometheus_client import Counter, Gauge

from infra.logs import get_logger
from infra.settings import Settings, load
from streams.runtime import replay_mode
from streams.kafka.codec import Codec, default_codec
from streams.kafka.deadletter import dead_letter, dlq_topic_for, encode_dead_letter
from streams.kafka.partitioner import CachedPartitioner
from streams.runtime.engine import processor_group
from streams.runtime.engine.store import PartitionStore
from streams.runtime.records import DecodeCache, Inbound, Refused, attempts_of, decode_record
from streams.runtime.metrics import BATCH_SECONDS, DEAD_LETTERS, EVENTS_IN, EVENTS_OUT
from streams.kafka.topics import TopicSpec, explain_invalid_record, full_name, is_compacted, require_key


explain_invalid_record()  # a refused batch fails the checkpoint as INVALID_RECORD with its cause, not UnknownError()

# one per worker process: the processors reading the same topic decode each record once between them
DECODED = DecodeCache()
DECODE_LOOKUPS = Gauge("vitrina_decode_cache_lookups", "Decoded-value cache lookups of this worker's processors",
                       ["result"])
DECODE_LOOKUPS.labels(result="hit").set_function(lambda: DECODED.hits)
DECODE_LOOKUPS.labels(result="miss").set_function(lambda: DECODED.misses)

STATE_KEYS = Gauge("vitrina_engine_state_keys", "Keys held in memory", ["processor"])
RESTORED = Counter("vitrina_engine_restored_records_total", "Changelog records read at assignment", ["processor"])
REDELIVERED = Counter("vitrina_engine_redelivered_total", "Records at or below the applied marker, skipped",
                      ["processor"])
CHECKPOINTS = Counter("vitrina_engine_checkpoints_total", "Checkpoints (changelog + commit)", ["processor"])


class Processor(Protocol):
    name: str            # consumer group "<app id>.<name>", changelog "<app id>.<name>-changelog"
    sources: tuple[TopicSpec, ...]  # co-partitioned (same partition count and key): partition p of each
                                    # goes to the same member (range assignment) and the same store

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: "Output") -> None: ...

    async def tick(self, out: "Output", stores: dict[int, PartitionStore]) -> None: ...


def group_id(settings: Settings, processor_name: str) -> str:
    return processor_group(settings.app_id, processor_name)


def changelog_spec(settings: Settings, processor_name: str, partitions: int) -> TopicSpec:
    return TopicSpec(f"{group_id(settings, processor_name)}-changelog", "", "", partitions, -1, compacted=True,
                     description="Engine state changelog (compacted).", dead_letter=False)


class OutputFailed(RuntimeError):
    """A send could not even be queued (e.g. the broker is away). Not a problem of the record being
    processed: the runner stops and its successor replays from the last checkpoint, instead of keeping
    the state the batch changed while its outputs (co-view contributions) were lost."""


class SinkFailed(OutputFailed):
    """A view write (Redis, S3) failed: like a failed send, the batch is not the records' fault. The
    runner stops, and its successor restores the state of the last checkpoint and processes the records
    since then again once the sink answers (the supervisor backs off up to 30 s between attempts)."""


@asynccontextmanager
async def sink_write(sink: str) -> AsyncIterator[None]:
    """Wrap a processor's view write: any failure in it becomes ``SinkFailed`` (never a dead letter)."""
    try:
        yield
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the client raises, the sink is what failed
        raise SinkFailed(f"writing {sink} failed: {exc!r}") from exc


class _Route:
    """Where sends to one registry topic go, resolved once per ``Output`` (a send used to read the
    replay environment twice and look the topic up three times, per record)."""

    __slots__ = ("physical", "compacted", "sent", "partitions")

    def __init__(self, physical: str | None, compacted: bool, sent: Any) -> None:
        self.physical = physical    # the full topic name; None when a replay worker drops sends to it
        self.compacted = compacted
        self.sent = sent            # the ``vitrina_events_out_total`` child of (topic, agent)
        # the topic's partitions once the producer knew them (after the first send): a keyed record's
        # partition is then picked here, as aiokafka would, without its per-send metadata look-ups
        self.partitions: list[int] | None = None


class Output:
    """Sends of one processor; every send of a checkpoint period is awaited before the commit."""

    def __init__(self, producer: AIOKafkaProducer, settings: Settings, agent: str, codec: Codec,
                 partitioner: CachedPartitioner | None = None) -> None:
        self.producer = producer
        self.settings = settings
        self.agent = agent
        self.codec = codec
        self.partitioner = partitioner or CachedPartitioner()
        self.pending: list[asyncio.Future] = []
        self._routes: dict[str, _Route] = {}

    def _route(self, topic: str) -> _Route:
        """Resolve and remember ``topic``'s route (its first ``send`` or ``dropped``)."""
        physical = None if replay_mode.suppresses(topic) else full_name(self.settings, replay_mode.physical_name(topic))
        route = self._routes[topic] = _Route(physical, is_compacted(topic),
                                             EVENTS_OUT.labels(topic=topic, agent=self.agent))
        return route

    def dropped(self, topic: str, count: int = 1) -> bool:
        """Whether sends to ``topic`` are dropped here (a replay worker's outputs: ``replay_mode``). If so,
        ``count`` sends are counted as dropped, as ``send`` would, and the caller need not build them: a
        rebuild encoded every similar.updated event and stats.plays update only to throw it away."""
        route = self._routes.get(topic) or self._route(topic)
        if route.physical is not None:
            return False
        replay_mode.REPLAY_SUPPRESSED.labels(topic=topic).inc(count)
        return True

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send to a registry topic (a replay worker writes internal topics to its private copy and
        drops the others, like Faust agents). A record without a key for a compacted topic raises
        ``KeylessRecordError``: the broker would refuse its whole batch and fail every checkpoint after."""
        route = self._routes.get(topic) or self._route(topic)
        require_key(topic, key, route.compacted)
        if route.physical is None:
            replay_mode.REPLAY_SUPPRESSED.labels(topic=topic).inc()
            return
        if partition is None and key is not None and route.partitions is not None:
            partition = self.partitioner(key, route.partitions, route.partitions)
        try:
            future = await self.producer.send(route.physical, value=value, key=key, partition=partition,
                                              headers=headers)
        except Exception as exc:  # noqa: BLE001 - any failure to queue is the output's, not the record's
            raise OutputFailed(f"send to {route.physical} failed: {exc!r}") from exc
        self.pending.append(future)
        route.sent.inc()
        if route.partitions is None:
            known = self.producer.client.cluster.partitions_for_topic(route.physical)
            route.partitions = sorted(known) if known else None

    async def dead_letter(self, event_topic: str, partition: int, offset: int, code: str, error: str,
                          key: bytes | None, raw: bytes | None, attempts: int = 1) -> None:
        """Queue a dead letter (a key or value over the keep limit is truncated, with a pointer to the
        original): acknowledged before the checkpoint writes the state that marks its record done."""
        envelope = dead_letter(event_topic, partition, offset, self.agent, code, error, key, raw, attempts,
                               self.settings.dead_letter_keep_bytes)
        await self.send(dlq_topic_for(event_topic), encode_dead_letter(self.codec, envelope), key=envelope["key"])
        DEAD_LETTERS.labels(source=event_topic, agent=self.agent, reason=code).inc()

    async def failed(self, event: Inbound, exc: BaseException) -> None:
        """A decoded event whose processing raised: keep it (original bytes) with the error."""
        get_logger("vitrina.engine", agent=self.agent, topic=event.topic).error(
            "processing_failed", partition=event.partition, offset=event.offset, error=repr(exc))
        await self.dead_letter(event.topic, event.partition, event.offset, "PROCESSING_FAILED",
                               f"{type(exc).__name__}: {exc}", event.key, event.raw, event.attempts)

    async def drain(self) -> list[Any]:
        pending, self.pending = self.pending, []
        return await asyncio.gather(*pending) if pending else []


def read_changelog(settings: Settings, topic: str, partitions: list[int],
                   known_ends: dict[int, int | None], timeout_s: float = 600.0
                   ) -> tuple[dict[int, list[tuple[bytes | None, bytes | None]]], dict[int, int]]:
    """Blocking: the records of each changelog partition whose end moved since ``known_ends`` (others
    are kept from memory), and every partition's end (verified by reading on Tansu, whose high
    watermark is stale: streams/kafka/offsets.py)."""
    from streams.kafka.offsets import end_offsets, probe_consumer

    consumer = probe_consumer(settings)
    try:
        ends = {p: end for (_, p), end in end_offsets(consumer, [(topic, p) for p in partitions]).items()}
        todo = [p for p in partitions if known_ends.get(p) != ends[p]]
        records: dict[int, list[tuple[bytes | None, bytes | None]]] = {p: [] for p in todo}
        open_partitions = {p for p in todo if ends[p] > 0}
        if open_partitions:
            consumer.assign([ConfluentPartition(topic, p, OFFSET_BEGINNING) for p in open_partitions])
        deadline = time.monotonic() + timeout_s
        while open_partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {topic} partitions {sorted(open_partitions)} took over {timeout_s}s")
            for message in consumer.consume(10_000, 0.5):
                partition = message.partition()
                if partition not in open_partitions:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == ConfluentError._PARTITION_EOF:
                        open_partitions.discard(partition)
                    continue
                records[partition].append((message.key(), message.value()))
                if message.offset() + 1 >= ends[partition]:
                    open_partitions.discard(partition)
        return records, ends
    finally:
        consumer.close()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, runner: "Runner") -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runner.revoke(sorted({tp.partition for tp in revoked}))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = self.runner.consumer
        consumer.pause(*assigned)  # no records until the state they update is restored
        try:
            await self.runner.assign(sorted({tp.partition for tp in assigned}))
        except Exception as exc:  # noqa: BLE001 - aiokafka would only log it: the partitions would stay
            # without state for good (every fetched batch sought back). The runner stops instead and the
            # supervisor starts a fresh one (e.g. a changelog just created has no leader yet)
            self.runner.log.error("engine_assign_failed", error=repr(exc))
            self.runner.failure = exc
        finally:
            consumer.resume(*assigned)


class Runner:
    def __init__(self, processor: Processor, settings: Settings | None = None) -> None:
        self.settings = settings or load()
        self.processor = processor
        self.name = processor.name
        self.group = group_id(self.settings, processor.name)
        self.sources = {full_name(self.settings, replay_mode.physical_name(spec.name)): spec
                        for spec in processor.sources}
        if len({spec.partitions for spec in processor.sources}) != 1:
            raise ValueError(f"{processor.name}: sources must have the same partition count")
        self.changelog = changelog_spec(self.settings, processor.name, processor.sources[0].partitions)
        self.changelog_topic = full_name(self.settings, self.changelog.name)
        self.codec = default_codec()
        self.decoded = DECODED
        DECODED.max_entries = self.settings.engine_decode_cache
        self.log = get_logger("vitrina.engine", agent=self.name)
        self.stores: dict[int, PartitionStore] = {}
        self.standby: dict[int, PartitionStore] = {}   # revoked partitions kept in case they come back
        self.changelog_pending: list[tuple[int, asyncio.Future]] = []
        self.committed: dict[tuple[str, int], int] = {}
        self.last_checkpoint = time.monotonic()
        self.commit_interval_s = float(getattr(processor, "commit_interval_s", self.settings.engine_commit_s))
        self.stopping = False
        self.failure: BaseException | None = None  # a checkpoint that failed inside a rebalance callback
        self.done = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.out: Output | None = None

    def assigned_sources(self) -> dict[str, list[int]]:
        """Registry name (as subscribed, replay copies included) -> the partitions this runner holds."""
        partitions = sorted(self.stores)
        if not partitions:
            return {}
        return {replay_mode.physical_name(spec.name): partitions for spec in self.sources.values()}

    async def start(self) -> None:
        from streams.kafka.topics import ensure_topics
        await asyncio.get_running_loop().run_in_executor(None, ensure_topics, self.settings, [self.changelog])
        bootstrap = self.settings.kafka_bootstrap
        # idempotent on Apache Kafka: a batch retried after a broker failure is written once and in order, so
        # a partition never holds a later record of this producer without the earlier ones (downstream
        # dedupe by origin offset takes the highest offset applied as "everything up to here")
        idempotent = self.settings.broker != "tansu"
        partitioner = CachedPartitioner()
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                         enable_idempotence=idempotent,
                                         max_batch_size=1 << 20, max_request_size=8 << 20,
                                         client_id=f"{self.group}-producer", partitioner=partitioner)
        await self.producer.start()
        self.out = Output(self.producer, self.settings, self.name, self.codec, partitioner)
        # Tansu completes a JoinGroup after about half the session timeout: 10 s joins in ~5 s (as for Faust)
        session_timeout_ms = int(self.settings.session_timeout_s * 1000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=self.group, client_id=self.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms or 100,
            max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20,
            session_timeout_ms=session_timeout_ms, heartbeat_interval_ms=max(1_000, session_timeout_ms // 5),
            max_poll_interval_ms=600_000,
            partition_assignment_strategy=(RangePartitionAssignor,))
        self.consumer.subscribe(sorted(self.sources), listener=_Rebalance(self))
        await self.consumer.start()
        self.log.info("engine_started", group=self.group, changelog=self.changelog_topic)

    async def run(self) -> None:
        try:
            await self.start()
            while not self.stopping:
                if self.failure is not None:
                    raise self.failure
                batches = await self.consumer.getmany(timeout_ms=100, max_records=self.settings.engine_max_records)
                for tp, records in batches.items():
                    await self._process(tp.topic, tp.partition, records)
                await self.processor.tick(self.out, self.stores)
                if time.monotonic() - self.last_checkpoint >= self.commit_interval_s:
                    await self.checkpoint()
            await self.checkpoint()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged; the worker's supervisor decides about restarts
            self.log.exception("engine_failed", error=repr(exc))
            raise
        finally:
            await self._close()
            self.done.set()

    async def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping = True
        try:
            await asyncio.wait_for(self.done.wait(), timeout_s)
        except asyncio.TimeoutError:
            self.log.warning("engine_stop_timeout", seconds=timeout_s)

    async def _close(self) -> None:
        for partition in list(self.stores):
            for spec in self.sources.values():
                self.decoded.unregister(spec.name, partition)
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception as exc:  # noqa: BLE001
                    self.log.warning("engine_close_failed", error=repr(exc))

    # -- per batch ------------------------------------------------------------------------------

    async def _process(self, physical: str, partition: int, records: list[Any]) -> None:
        if not records:
            return
        store = self.stores.get(partition)
        if store is None:
            # fetched while the partition's state is still being restored (aiokafka fetches as soon as
            # the assignment is known): read these records again once the state is there
            try:
                self.consumer.seek(TopicPartition(physical, partition), records[0].offset)
            except Exception:  # noqa: BLE001 - no longer assigned: the next owner reads them
                pass
            return
        source = self.sources[physical]
        topic = source.name
        EVENTS_IN.labels(topic=topic, agent=self.name).inc(len(records))
        started = time.perf_counter()
        bounded = replay_mode.active()
        codec, out = self.codec, self.out
        events: list[Inbound] = []
        skipped = 0
        applied = store.applied_offset(topic)
        last = records[-1].offset  # the marker after this batch
        readers = self.decoded.readers_of(source.name, partition)
        for record in records:
            offset = record.offset
            if offset <= applied:
                skipped += 1
                continue
            if bounded and replay_mode.beyond_bound(topic, partition, offset):
                # a replay worker stops at its range's end: what lies beyond is neither processed nor
                # marked applied (a catch-up under the same group restores this marker and must read it)
                replay_mode.REPLAY_DROPPED.labels(topic=topic).inc()
                last = min(last, offset - 1)
                continue
            try:
                events.append(decode_record(codec, source, record.key, record.value, record.headers, partition,
                                            offset, record.timestamp or 0, cache=self.decoded, readers=readers,
                                            max_event_bytes=self.settings.max_event_bytes))
            except Refused as refused:
                self.log.warning("dead_letter", partition=partition, offset=offset, reason=refused.code,
                                 error=refused.text)
                await out.dead_letter(topic, partition, offset, refused.code, refused.text, record.key,
                                      record.value, attempts_of(record.headers))
        if skipped:
            REDELIVERED.labels(processor=self.name).inc(skipped)
        if events:
            try:
                await self.processor.process(partition, store, events, out)
            except OutputFailed:
                raise  # the state may be ahead of what was sent: restart from the last checkpoint
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the partition: keep the batch
                for event in events:
                    await out.failed(event, exc)
        store.mark_applied(topic, last)
        BATCH_SECONDS.labels(agent=self.name).observe(time.perf_counter() - started)

    # -- checkpoints and rebalances ---------------------------------------------------------------

    async def checkpoint(self) -> None:
        if self.producer is None:
            return
        self.last_checkpoint = time.monotonic()
        # outputs and dead letters first: the changelog below carries the applied markers that make a
        # restarted runner skip their records, so it is written only once every send of the period is
        # acknowledged (a failed send fails the checkpoint; the restart replays from the last one)
        await self.out.drain()
        sends: list[tuple[int, asyncio.Future]] = []
        for partition, store in self.stores.items():
            if not store.pending():
                continue
            for key, value in store.take_changes():
                require_key(self.changelog_topic, key, True)
                sends.append((partition, await self.producer.send(
                    self.changelog_topic, key=key, value=value, partition=partition)))
        for partition, future in sends:
            metadata = await future
            store = self.stores.get(partition) or self.standby.get(partition)
            if store is not None:
                store.changelog_end = max(store.changelog_end or 0, metadata.offset + 1)
        offsets = {}
        for physical, spec in self.sources.items():
            for p, store in self.stores.items():
                applied = store.applied_offset(spec.name)
                if applied >= 0 and self.committed.get((physical, p)) != applied + 1:
                    offsets[TopicPartition(physical, p)] = OffsetAndMetadata(applied + 1, "")
        STATE_KEYS.labels(processor=self.name).set(sum(len(s) for s in self.stores.values()))
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # a rebalance is under way: the new owner restores state and marker from the changelog
            self.log.warning("engine_commit_failed", error=repr(exc))
            return
        for tp, meta in offsets.items():
            self.committed[(tp.topic, tp.partition)] = meta.offset
        CHECKPOINTS.labels(processor=self.name).inc()

    async def revoke(self, partitions: list[int]) -> None:
        try:
            await self.checkpoint()
        except Exception as exc:  # noqa: BLE001 - aiokafka would only log it and go on
            # a send of the period (an output, a dead letter) or the changelog failed: the in-memory
            # state is ahead of what is durable, so it must not be kept as standby, and the runner
            # stops (the supervisor starts a fresh one that replays from the last checkpoint)
            self.log.error("engine_checkpoint_failed", during="revoke", error=repr(exc))
            self.failure = exc
            self.standby.clear()
        for partition in partitions:
            store = self.stores.pop(partition, None)
            if store is not None:
                for spec in self.sources.values():
                    self.decoded.unregister(spec.name, partition)
            if store is not None and self.failure is None:
                self.standby[partition] = store
            for physical in self.sources:
                self.committed.pop((physical, partition), None)
        revoked = getattr(self.processor, "revoked", None)
        if revoked is not None:
            revoked(partitions)

    async def _read_changelog(self, partitions: list[int], known: dict[int, int | None]) -> tuple[dict, dict]:
        """``read_changelog`` in a thread, tried again on a broker error for about 8 s: right after the
        changelog topic was created its leader is not known everywhere yet (NOT_LEADER_FOR_PARTITION,
        unknown partition). A failure here fails the rebalance listener, which aiokafka only logs: the
        partitions then stayed assigned without state, their records sought back forever, until the
        next rebalance (seen when three workers started at once)."""
        loop = asyncio.get_running_loop()
        for delay in (0.25, 0.5, 1.0, 2.0, 4.0, None):
            try:
                return await loop.run_in_executor(None, read_changelog, self.settings, self.changelog_topic,
                                                  partitions, known)
            except ConfluentException as exc:
                if delay is None:
                    raise
                self.log.warning("engine_changelog_read_retry", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def assign(self, partitions: list[int]) -> None:
        started = time.perf_counter()
        known = {p: self.standby[p].changelog_end for p in partitions if p in self.standby}
        records, ends = await self._read_changelog(partitions, known)
        restored = 0
        for partition in partitions:
            if partition in records:
                store = PartitionStore(partition)
                restored += store.restore(records[partition])
            else:
                store = self.standby[partition]
            store.changelog_end = ends[partition]
            if partition not in self.stores:
                for spec in self.sources.values():
                    self.decoded.register(spec.name, partition)
            self.stores[partition] = store
            self.standby.pop(partition, None)
        RESTORED.labels(processor=self.name).inc(restored)
        assigned = getattr(self.processor, "assigned", None)
        if assigned is not None:
            assigned(sorted(partitions), self.stores)
        self.log.info("engine_assigned", partitions=sorted(partitions), restored_records=restored,
                      reused=sorted(set(partitions) - set(records)), seconds=round(time.perf_counter() - started, 2))
