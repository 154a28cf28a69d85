"""Compaction for real: on Apache Kafka the compacted topics lose their superseded versions, and every
reader of them (table restore, the engine's restore, ``vitrina rebuild``) still gets the same result.

A private stack (own broker, Redis, ports and data dir) with ``VITRINA_COMPACTION=fast`` (segments
roll after 1 s, streams/kafka/topics.py ``COMPACTION_PROFILES``). Compaction is proved, never assumed: a
log read from the beginning holds fewer records than were written (the sum of the partitions' end
offsets) and only the latest version of each key. A segment rolls only when a record is appended
after ``segment.ms``, so the waits below append one more record per partition while they poll.

* a registry topic (catalogue.titles, several versions per key) is compacted;
* an engine processor's changelog is compacted, and a fresh runner restores exactly the state from it;
* a Faust worker (catalogue, history, plays, showcase, uploads) whose table changelogs were compacted
  loses its local RocksDB and restores its tables from the changelogs, then processes more input; its
  views equal an uninterrupted computation: plays counted exactly and ``vitrina rebuild`` from the
  compacted topics into an emptied Redis giving the same views;
* a record without a key is refused before it reaches a compacted topic, and what the broker and the
  clients do with one that gets through is reported clearly.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import orjson
import pytest

from streams.runtime.engine.store import APPLIED_PREFIX
import redis
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from infra.settings import Settings, to_env
from support.replay import (differences, exact_modules, make_input, pipeline_done, private_settings, quiet,
                             snapshot, start_pipeline_worker, unique, wait_for)

pytestmark = pytest.mark.slow


# -- reading logs --------------------------------------------------------------------------------------

def read_log(settings: Settings, topic: str, timeout_s: float = 30.0) -> tuple[list[tuple[int, int, bytes | None, bytes | None]], int]:
    """Every record of the full topic name ``topic`` as (partition, offset, key, value), and how many
    records were ever written to it (the sum of its partitions' end offsets: no transactions here)."""
    from streams.kafka.offsets import partitions_of, probe_consumer

    consumer = probe_consumer(settings)
    try:
        parts = partitions_of(consumer, topic)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in parts}
        pending = {p for p in parts if ends[p] > 0}
        if pending:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        records: list[tuple[int, int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            assert time.monotonic() < deadline, f"reading {topic} took over {timeout_s}s"
            message = consumer.poll(0.5)
            if message is None:
                continue
            partition = message.partition()
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)
                continue
            if message.offset() < ends[partition]:
                records.append((partition, message.offset(), message.key(), message.value()))
            if message.offset() + 1 >= ends[partition]:
                pending.discard(partition)
        return records, sum(ends.values())
    finally:
        consumer.close()


def latest_per_key(records) -> dict[bytes, bytes | None]:
    latest: dict[bytes, bytes | None] = {}
    for _, _, key, value in sorted(records, key=lambda r: (r[0], r[1])):
        latest[key] = value
    return latest


def repeat_last(settings: Settings, topic: str, records) -> None:
    """Append the last record of every partition once more, unchanged (same key and value: the latest
    state stays the same for every reader). A segment rolls only on an append after ``segment.ms``, so
    this closes the segments holding the superseded versions and hands them to the cleaner."""
    from confluent_kafka import Producer

    from streams.kafka.producer import producer_config

    last: dict[int, tuple[bytes | None, bytes | None]] = {}
    for partition, _, key, value in sorted(records, key=lambda r: (r[0], r[1])):
        last[partition] = (key, value)
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    for partition, (key, value) in last.items():
        producer.produce(topic, value=value, key=key, partition=partition)
    assert producer.flush(30) == 0


def wait_compacted(settings: Settings, topic: str, what: str, timeout_s: float = 60.0):
    """Roll every partition (``repeat_last``, once ``segment.ms`` is over, again every few seconds while
    nothing happens) and poll until the log has fewer records than were written and no key of a
    partition has more than two left: its latest version in the cleaned part of the log and at most
    the repeated one in the active segment. Returns (records, written).

    Rolling at every poll would not do: each roll leaves a closed segment with one dirty record, below
    the cleanable ratio, so the repeated key would pile up copies until ``max.compaction.lag.ms``."""
    records, _ = read_log(settings, topic)
    time.sleep(1.2)  # segment.ms of the fast profile: the next append rolls
    rolled_at = 0.0

    def compacted():
        nonlocal records, rolled_at
        if time.monotonic() - rolled_at > 6.0:
            repeat_last(settings, topic, records)
            rolled_at = time.monotonic()
        records, written = read_log(settings, topic)
        per_key: dict[tuple[int, bytes | None], int] = {}
        for partition, _, key, _ in records:
            per_key[(partition, key)] = per_key.get((partition, key), 0) + 1
        return (records, written) if len(records) < written and max(per_key.values(), default=0) <= 2 else None

    return wait_for(compacted, f"{what} to be compacted", timeout_s, every_s=0.5)


def topic_configs(settings: Settings, *topics: str) -> dict[str, dict[str, str]]:
    """The configuration of each full topic name, as the broker describes it."""
    from confluent_kafka.admin import ConfigResource

    from streams.kafka.topics import admin_client

    admin = admin_client(settings)  # kept until the futures resolve
    resources = {topic: ConfigResource("topic", topic) for topic in topics}

    def described():
        try:
            futures = admin.describe_configs(list(resources.values()))
            return {topic: {name: entry.value for name, entry in futures[resource].result(timeout=30).items()}
                    for topic, resource in resources.items()}
        except KafkaException as exc:  # a topic just created may not be known to the broker yet
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            return None

    return wait_for(described, f"the configuration of {', '.join(topics)}", 30)


def assert_fast_compaction(config: dict[str, str], topic: str) -> None:
    from streams.kafka.topics import COMPACTION_PROFILES

    fast = COMPACTION_PROFILES["fast"].configs()
    assert config["cleanup.policy"] == "compact", (topic, config["cleanup.policy"])
    assert {k: config[k] for k in fast} == fast, (topic, {k: config[k] for k in fast})


# -- the private stack ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def private(tmp_path_factory):
    from infra.stack import EmbeddedStack
    from streams.kafka.topics import ensure_topics

    settings = private_settings(tmp_path_factory.mktemp("compaction-stack"), compaction="fast")
    if settings.broker != "kafka":
        pytest.skip("compaction needs Apache Kafka (Tansu never compacts)")
    stack = EmbeddedStack(settings, die_with_parent=True)
    stack.up()
    try:
        ensure_topics(settings)
        yield settings
    finally:
        stack.down()


@pytest.fixture(scope="module")
def client(private):
    connection = redis.Redis.from_url(private.redis_url, decode_responses=True)
    yield connection
    connection.close()


def namespace(settings: Settings, tag: str, *topics: str) -> Settings:
    """Settings whose topic names carry a fresh prefix, with ``topics`` created."""
    from streams.kafka.topics import ensure_topics, spec

    scoped = dataclasses.replace(settings, topic_prefix=f"{tag}-{uuid.uuid4().hex[:6]}.")
    ensure_topics(scoped, [spec(t) for t in topics])
    return scoped


def test_compacted_registry_topics_get_the_compaction_profile(private):
    """(Faust table changelogs: restored_run; the engine's changelogs: the engine test.)"""
    from streams.kafka.topics import COMPACTION_PROFILES, TOPICS, compaction_configs, full_name

    compacted = [full_name(private, t.name) for t in TOPICS if t.compacted]
    configs = topic_configs(private, *compacted, full_name(private, "playback"))
    for topic in compacted:
        assert_fast_compaction(configs[topic], topic)
    assert configs[full_name(private, "playback")]["cleanup.policy"] == "delete"
    # production defaults: a day per segment, a week at most before anything superseded is cleaned
    production = COMPACTION_PROFILES["production"]
    assert production.segment_ms == 24 * 3600 * 1000 and production.max_compaction_lag_ms == 7 * 24 * 3600 * 1000
    assert compaction_configs(dataclasses.replace(private, compaction="production"))["segment.ms"] == str(production.segment_ms)
    with pytest.raises(ValueError, match="VITRINA_COMPACTION='nope'"):
        compaction_configs(dataclasses.replace(private, compaction="nope"))


# -- (a) a registry topic and an engine changelog ---------------------------------------------------

def test_superseded_versions_of_a_registry_topic_are_compacted_away(private):
    from demo.catalogue import synthetic_titles
    from streams.kafka.codec import default_codec
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import full_name, spec

    settings = namespace(private, "cmp-a", "catalogue.titles")
    topic = full_name(settings, "catalogue.titles")
    titles = synthetic_titles(40, seed=17)
    versions = 5
    with EventProducer(settings) as producer:
        for version in range(1, versions + 1):
            producer.publish_many(spec("catalogue.titles"), [{**t, "title": f"{t['title']} v{version}"} for t in titles])
    records, written = read_log(settings, topic)
    assert written == len(records) == versions * len(titles), "nothing compacted yet: the segment is active"
    final = {t["item_id"]: {**t, "title": f"{t['title']} v{versions}"} for t in titles}
    records, written = wait_compacted(settings, topic, "catalogue.titles")
    assert len(records) < written and written > versions * len(titles)
    codec = default_codec()
    latest = {key.decode(): codec.decode(value, spec("catalogue.titles").schema) for key, value in latest_per_key(records).items()}
    assert set(latest) == set(final)
    assert all(latest[item]["title"] == final[item]["title"] for item in final), "the latest version of every key is kept"
    print(f"catalogue.titles: {written} records written, {len(records)} left after compaction")


class CountingProcessor:
    """An engine processor counting START events per title in its changelog-backed state."""

    commit_interval_s = 0.3

    def __init__(self, name: str) -> None:
        from streams.kafka.topics import spec
        self.name = name
        self.sources = (spec("playback"),)

    async def process(self, partition, store, events, out) -> None:
        for event in events:
            item = event.value["item_id"]
            store[item] = store.get(item, 0) + 1

    async def tick(self, out, stores) -> None:
        return None


def playback_events(items: list[str], n: int, tag: str) -> list[dict]:
    return [dict(event_id=f"{tag}-{k}", session_id="s", user_id=f"u{k % 30}", device_id="d", device_type="TV",
                 os="tizen", app_version="4.0.0", item_id=items[k % len(items)], event_type="START", position_ms=0,
                 duration_ms=60_000, network_kbps=None, buffered_ratio=None, stall_ms=0, bitrate_kbps=None,
                 event_time=datetime.now(timezone.utc)) for k in range(n)]


def test_an_engine_changelog_is_compacted_and_restores_the_same_state(private):
    from streams.runtime.engine.runner import Runner, changelog_spec
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import full_name

    settings = dataclasses.replace(namespace(private, "cmp-e", "playback", "dlq.playback"), app_id=unique("cmp-engine"))
    processor = CountingProcessor("counter")
    changelog = full_name(settings, changelog_spec(settings, processor.name, 6).name)
    items = [f"e-{i}" for i in range(12)]
    producer = EventProducer(settings)

    def publish(n: int, tag: str) -> None:
        producer.publish_many("playback", playback_events(items, n, tag))
        producer.flush()

    def counts(runner: Runner) -> dict[str, int]:
        total: dict[str, int] = {}
        for store in list(runner.stores.values()):
            for item, n in store.items():
                total[item] = total.get(item, 0) + n
        return total

    async def until(runner: Runner, predicate, what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(runner):
            assert not runner.done.is_set(), f"the runner stopped while waiting for {what}"
            assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
            await asyncio.sleep(0.2)

    async def scenario() -> None:
        runner = Runner(processor, settings)
        task = asyncio.create_task(runner.run())
        try:
            publish(600, "p1")
            await until(runner, lambda r: sum(counts(r).values()) == 600, "600 counted")
            await asyncio.sleep(1.5)  # past segment.ms: the next changelog writes roll the segments
            for phase in ("p2", "p3"):
                target = sum(counts(runner).values()) + 600
                publish(600, phase)
                await until(runner, lambda r: sum(counts(r).values()) == target, f"{target} counted")
                await asyncio.sleep(1.2)
            before = counts(runner)
        finally:
            await runner.stop()
            await task
        assert before == {item: 1800 // len(items) for item in items}

        assert_fast_compaction(topic_configs(settings, changelog)[changelog], changelog)
        records, written = await asyncio.get_running_loop().run_in_executor(
            None, wait_compacted, settings, changelog, "the engine changelog")
        assert len(records) < written
        state = {(p, key.decode()): orjson.loads(value) for (p, key), value in latest_per_key(
            [(p, o, (p, k), v) for p, o, k, v in records if not k.startswith(b"\x00")]).items()}
        summed: dict[str, int] = {}
        for (_, item), n in state.items():
            summed[item] = summed.get(item, 0) + n
        assert summed == before, "the latest state record of every key is kept"
        print(f"engine changelog: {written} records written, {len(records)} left after compaction")

        restored = Runner(processor, settings)
        task = asyncio.create_task(restored.run())
        try:
            await until(restored, lambda r: len(r.stores) == 6, "the restored runner's assignment")
            assert counts(restored) == before, "the state restored from the compacted changelog is the state written"
            publish(120, "p4")  # offsets continue exactly: the applied markers survived compaction
            await until(restored, lambda r: sum(counts(r).values()) == 1920, "1920 counted")
            await asyncio.sleep(1.0)
            assert sum(counts(restored).values()) == 1920
        finally:
            await restored.stop()
            await task

    asyncio.run(scenario())


# -- (b) a Faust worker restores its tables from compacted changelogs; (c) rebuild from compacted topics --

def starts_of(events: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        if event["event_type"] == "START":
            counts[event["item_id"]] = counts.get(event["item_id"], 0) + 1
    return counts


def plays_are(client: redis.Redis, expected: dict[str, int]) -> bool:
    pipe = client.pipeline(transaction=False)
    for item in expected:
        pipe.hget(f"vitrina:plays:{item}", "plays")
    return all(found is not None and int(found) == expected[item] for found, item in zip(pipe.execute(), expected))


@pytest.fixture(scope="module")
def restored_run(private, client, tmp_path_factory):
    """The pipeline (catalogue, history, plays, showcase, uploads) into ``vitrina:``, in three phases:

    1. catalogue, shelves, impressions and a third of the playback; the worker counts it;
    2. every title but the first of each partition edited, another third of the playback; the worker
       stops, its table changelogs are compacted (proved), its local RocksDB is deleted;
    3. a fresh worker under the same app id restores its tables from the compacted changelogs; the
       edited titles get their final version back and the last third of the playback comes.

    Returns (input, views after phase 3 with showcases refreshed, the first-of-partition titles)."""
    from sinks.redis_views import PREFIX
    from streams.kafka.producer import EventProducer
    from streams.ops.replay import refresh_derived_views
    from streams.kafka.topics import full_name, spec

    client.flushall()
    started = time.monotonic()
    say = lambda what: print(f"[{time.monotonic() - started:6.1f}s] {what}")  # noqa: E731
    data = make_input(titles=80, requests=300, seed=5)
    third = len(data.playback) // 3
    chunks = [data.playback[:third], data.playback[third:2 * third], data.playback[2 * third:]]
    producer = EventProducer(private)
    producer.publish_many(spec("catalogue.titles"), data.titles)
    producer.publish_many(spec("catalogue.shelves"), data.shelves)
    producer.publish_many(spec("ranking.impressions"), data.impressions)
    producer.publish_many(spec("playback"), chunks[0])
    producer.flush()
    # the first title of each partition is never published again: its record survives compaction at
    # offset 0, followed by a gap (the superseded versions of the others), which Faust's commits must pass
    records, _ = read_log(private, full_name(private, "catalogue.titles"))
    unedited = {key.decode() for _, offset, key, _ in records if offset == 0}
    edited = [t for t in data.titles if t["item_id"] not in unedited]
    assert len(unedited) == spec("catalogue.titles").partitions and edited

    app_id = unique("cmp-worker")
    local = tmp_path_factory.mktemp("cmp-worker")
    say("phase 1 published")
    worker = start_pipeline_worker(private, app_id, data_dir=local, name=f"{app_id}-1")
    say("worker 1 ready")
    try:
        wait_for(lambda: plays_are(client, starts_of(chunks[0])), "phase 1 counted", 90)
        time.sleep(1.2)  # past segment.ms: phase 2's changelog writes start new segments
        producer.publish_many(spec("catalogue.titles"), [{**t, "title": t["title"] + " (edited)"} for t in edited])
        producer.publish_many(spec("playback"), chunks[1])
        producer.flush()
        wait_for(lambda: plays_are(client, starts_of(chunks[0] + chunks[1])), "phase 2 counted", 90)
        say("phase 2 counted")
        quiet(worker, seconds=3.0)
    finally:
        worker.stop()
    say("worker 1 stopped")

    # engine state changelogs (streams/runtime/engine/): "<app id>.<processor>-changelog"
    changelogs = {name: f"{app_id}.{name}-changelog" for name in ("play-counter", "viewer-history")}
    for changelog, config in topic_configs(private, *changelogs.values()).items():
        assert_fast_compaction(config, changelog)  # created by the engine with the compaction profile
    for name, changelog in changelogs.items():
        compacted, written = wait_compacted(private, changelog, changelog)
        print(f"{changelog}: {written} records written, {len(compacted)} left after compaction")
        if name == "play-counter":
            latest = {k.decode(): json.loads(v)["plays"] for k, v in latest_per_key(compacted).items()
                      if not k.startswith(APPLIED_PREFIX)}
            assert latest == starts_of(chunks[0] + chunks[1]), "the latest count of every title is kept"

    state = local / "faust" / app_id
    if state.is_dir():  # the Faust tables' local stores (uploads' dedupe table), gone with the machine
        shutil.rmtree(state)
    say("changelogs compacted, local state deleted")

    worker = start_pipeline_worker(private, app_id, data_dir=local, name=f"{app_id}-2")
    say("worker 2 ready")
    try:
        producer.publish_many(spec("catalogue.titles"), edited)  # the final versions again
        producer.publish_many(spec("playback"), chunks[2])
        producer.flush()
        wait_for(lambda: plays_are(client, data.starts), "every play counted after the restore", 90)
        wait_for(lambda: pipeline_done(client, data), "every history written, no showcase queued", 60)
        say("phase 3 done")
        quiet(worker, seconds=3.0)
        assert worker.counter("vitrina_dead_letters_total", reason="PROCESSING_FAILED") == 0
        assert worker.counter("vitrina_engine_restored_records_total", processor="play-counter") > 0
        assert worker.counter("vitrina_engine_restored_records_total", processor="viewer-history") > 0
    except AssertionError:
        print(worker.log_tail(60))
        raise
    finally:
        worker.stop()
    say("worker 2 stopped")
    refresh_derived_views(private, PREFIX)
    say("showcases refreshed")
    return data, snapshot(client), unedited


def test_a_worker_restores_its_tables_from_compacted_changelogs(restored_run, client):
    """Counts and histories go on from the restored state: every play counted once (a table restored
    without the superseded versions, but with the latest of every key), every viewer's history there."""
    data, views, _ = restored_run
    assert sum(int(v["plays"]) for k, v in views.items() if k.startswith("plays:")) == sum(data.starts.values())
    assert {k[len("plays:"):]: int(v["plays"]) for k, v in views.items() if k.startswith("plays:")} == data.starts
    assert all(f"history:{viewer}" in views for viewer in data.viewers)


def vitrina(settings: Settings, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, **to_env(settings), "VITRINA_LOG_LEVEL": "warning"}
    env.pop("VITRINA_VIEW_PREFIX", None)
    code = "import sys; from streams.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def test_rebuild_from_compacted_topics_gives_the_same_views(private, client, restored_run):
    from streams.kafka.codec import default_codec
    from streams.kafka.topics import full_name, spec

    data, views, unedited = restored_run
    topic = full_name(private, "catalogue.titles")
    records, written = wait_compacted(private, topic, "catalogue.titles")
    assert len(records) < written and len(records) <= len(data.titles) + spec("catalogue.titles").partitions
    assert {offset for _, offset, key, _ in records if key.decode() in unedited} == {0}
    codec = default_codec()
    latest = {k.decode(): codec.decode(v, spec("catalogue.titles").schema)["title"] for k, v in latest_per_key(records).items()}
    assert latest == {t["item_id"]: t["title"] for t in data.titles}, "the final version of every title is kept"

    client.flushall()
    done = vitrina(private, "rebuild", "--agent", ",".join(exact_modules()), "--timeout", "150", "--settle", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    rebuilt = snapshot(client)
    diff = differences(views, rebuilt, limit=1000)
    assert not diff, (sorted({line.split()[1].split(":")[0] for line in diff}), len(diff), diff[:5])


# -- (d) keyless records -------------------------------------------------------------------------------

def test_a_keyless_record_for_a_compacted_topic_is_refused_with_a_clear_error(private):
    from aiokafka import AIOKafkaProducer

    from demo.catalogue import synthetic_titles
    from streams.kafka.codec import default_codec
    from streams.runtime.engine.runner import Output
    from streams.runtime.inbound import require_keys
    from streams.kafka.producer import DeliveryError, EventProducer
    from streams.kafka.topics import KeylessRecordError, full_name, spec

    settings = namespace(private, "cmp-d", "catalogue.titles", "playback")
    topic = full_name(settings, "catalogue.titles")
    producer = EventProducer(settings)
    value = default_codec().encode(spec("catalogue.titles").schema, synthetic_titles(1, seed=1)[0])

    # our producer paths refuse before anything is sent: EventProducer, Faust topics, the engine's Output
    with pytest.raises(KeylessRecordError, match="without a key to compacted topic 'catalogue.titles'"):
        producer.publish_raw("catalogue.titles", value, None)
    producer.publish_raw("playback", b"not avro", None)  # a delete-policy topic takes keyless records

    class Channel:
        sent: list = []

        async def send(self, **kwargs):
            self.sent.append(kwargs)

    channel = require_keys(Channel(), "stats.plays")
    with pytest.raises(KeylessRecordError, match="stats.plays"):
        asyncio.run(channel.send(key=None, value=b"x"))
    asyncio.run(channel.send(key=b"item", value=b"x"))
    assert len(Channel.sent) == 1
    out = Output(producer=None, settings=settings, agent="test", codec=default_codec())  # type: ignore[arg-type]
    with pytest.raises(KeylessRecordError, match="similar.updated"):
        asyncio.run(out.send("similar.updated", b"x", key=None))

    # what the broker does with one that gets through: the WHOLE batch is refused (the keyed record too),
    # and both clients now say so instead of "Broker failed to validate record" / UnknownError()
    for key in (b"keyed-neighbour", None):  # one batch: same partition, within linger.ms
        producer._producer.produce(topic, value=value, key=key, partition=0, on_delivery=producer._on_delivery)
    with pytest.raises(DeliveryError, match="INVALID_RECORD.*record without a key"):
        producer.flush()
    records, _ = read_log(settings, topic)
    assert records == [], "the keyed record of the refused batch is lost too"

    async def aiokafka_send() -> str:
        client = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await client.start()
        try:
            with pytest.raises(Exception) as refused:
                await (await client.send(topic, value=value, key=None))
            return str(refused.value)
        finally:
            await client.stop()

    message = asyncio.run(aiokafka_send())
    assert "INVALID_RECORD" in message and "without a key" in message, message
