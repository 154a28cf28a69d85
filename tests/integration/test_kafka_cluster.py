"""A three-node Apache Kafka cluster (``vitrina up --brokers 3``) loses a node mid-stream and loses nothing.

The module runs a private stack of its own (own data dir, free ports, three KRaft nodes, each broker and
controller) so the session stack is never touched: the cluster size lives in this module's ``Settings``
only (``brokers=3``; a worker gets ``VITRINA_BROKERS=3`` through ``to_env``), not in ``os.environ``.
Topics are replicated three times with ``min.insync.replicas=2``; the producer is idempotent with
``acks=all``; one worker runs the play counter (repartition, changelog-backed table, Redis view).

Each scenario publishes a generated playback stream, SIGKILLs one node mid-stream (a node leading
partitions of the worker's topics, then node 1, the first port of every client's bootstrap list),
keeps producing with the client it had and with one bootstrapped while the node is down, and
restarts the node. Then every acknowledged event must be counted exactly once in the views (the same
per-title play and event counts the crash tests compare, computed from the input), the worker must
never have died, and the restarted node must be back in the ISR of every partition.
"""
from __future__ import annotations

import gc
import threading
import time
from collections import Counter

import pytest
import redis
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from support.coview import playback
from support.replay import private_settings, start_pipeline_worker, unique, wait_for

pytestmark = pytest.mark.slow

NODES = (1, 2, 3)
BEFORE_KILL = 6_000  # events of a scenario published before the kill
MAX_EVENTS = 40_000  # at most, published at ~300/s while the node is down and restarting
CHUNK = 300
PAUSE_S = 1.0


def component(node_id: int) -> str:
    return "broker" if node_id == 1 else f"broker-{node_id}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from infra.stack import EmbeddedStack
    from streams.kafka.topics import ensure_topics

    # replication_factor=0: chosen from the cluster size again (replace() would keep the loaded 1)
    settings = private_settings(tmp_path_factory.mktemp("kafka-cluster"), broker="kafka", brokers=3,
                                replication_factor=0)
    stack = EmbeddedStack(settings, die_with_parent=True)
    try:
        stack.up()
        ensure_topics(settings)
        yield stack, settings
    finally:
        gc.collect()  # producers kept by their delivery callbacks' cycles would log refusals once it is down
        stack.down()


@pytest.fixture
def all_nodes_back(cluster):
    """After a scenario, even a failed one: no stream left publishing, every node running again."""
    streams: list[Stream] = []
    yield streams
    for stream in streams:
        stream.stop()
    cluster[0].up()  # starts only what is not running


@pytest.fixture(scope="module")
def admin(cluster):
    return AdminClient({"bootstrap.servers": cluster[1].kafka_bootstrap, "socket.timeout.ms": 10000})


@pytest.fixture(scope="module")
def worker(cluster):
    _, settings = cluster
    app_id = unique("cluster")
    prefix = f"{app_id}:"
    process = start_pipeline_worker(settings, app_id, VITRINA_AGENTS="plays", VITRINA_VIEW_PREFIX=prefix)
    try:
        # the engine processors create their changelogs once they start, just after the worker is ready
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        wait_for(lambda: set(worker_topics(app_id)) <= set(admin.list_topics(timeout=10).topics),
                 "the worker's topics, its engine changelog included", 60)
        yield process, app_id, prefix
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(cluster):
    connection = redis.Redis.from_url(cluster[1].redis_url, decode_responses=True)
    yield connection
    connection.close()


def describe(admin: AdminClient, names: list[str] | None = None) -> dict[tuple[str, int], tuple[int | None, list[int], list[int]]]:
    """(topic, partition) -> (leader, replicas, ISR) of ``names`` (every topic, internal ones too, by default).

    The metadata request first is needed: librdkafka sends DescribeTopics to the "controller" of the last
    metadata response (in KRaft a random live broker) and waits for it without asking again, so a long-lived
    admin client whose cached controller was the killed node hangs there until its next metadata refresh."""
    topics = admin.list_topics(timeout=10).topics
    names = names if names is not None else sorted(topics)
    described = admin.describe_topics(TopicCollection(names), request_timeout=10)
    out = {}
    for name, future in described.items():
        for partition in future.result(timeout=15).partitions:
            out[(name, partition.id)] = (partition.leader.id if partition.leader else None,
                                         sorted(r.id for r in partition.replicas), sorted(r.id for r in partition.isr))
    return out


def out_of_sync(admin: AdminClient) -> list[str] | None:
    """Partitions without a leader or with fewer than three replicas in sync (None: the cluster did not answer)."""
    try:
        partitions = describe(admin)
    except Exception:  # noqa: BLE001 - a metadata request during a leader change; asked again
        return None
    return [f"{topic}[{p}] leader={leader} replicas={replicas} isr={isr}"
            for (topic, p), (leader, replicas, isr) in sorted(partitions.items())
            if leader is None or replicas != list(NODES) or isr != list(NODES)]


def left_every_isr(admin: AdminClient, node: int, names: list[str]) -> bool:
    try:
        return all(node not in isr for _, _, isr in describe(admin, names).values())
    except Exception:  # noqa: BLE001 - asked again
        return False


def worker_topics(app_id: str) -> list[str]:
    return ["playback", "playback.by-item", "stats.plays", f"{app_id}.play-counter-changelog"]


def generated_stream(tag: str, count: int) -> list[dict]:
    """Playback of 300 viewers over 47 titles: every fourth event starts a play."""
    return [playback(f"{tag}-t{k % 47}", k, 0 if k % 4 == 0 else 30, "START" if k % 4 == 0 else "HEARTBEAT",
                     user=f"{tag}-u{k % 300}", session=f"{tag}-s{k % 300}", event_id=f"{tag}-{k}")
            for k in range(count)]


def expected_views(events: list[dict]) -> dict[str, dict[str, int]]:
    """Per-title play and event counts of an uninterrupted run: each event counted exactly once."""
    plays = Counter(e["item_id"] for e in events if e["event_type"] == "START")
    seen = Counter(e["item_id"] for e in events)
    return {item: {"plays": plays[item], "events": seen[item]} for item in seen}


def stored_views(client: redis.Redis, prefix: str, items) -> dict[str, dict[str, int]]:
    pipe = client.pipeline(transaction=False)
    for item in items:
        pipe.hmget(f"{prefix}plays:{item}", "plays", "events")
    return {item: {"plays": int(plays or 0), "events": int(events or 0)}
            for item, (plays, events) in zip(items, pipe.execute())}


def publish_paced(producer, events: list[dict], chunk: int, pause_s: float) -> None:
    from streams.kafka.topics import spec

    for start in range(0, len(events), chunk):
        producer.publish_many(spec("playback"), events[start:start + chunk])
        time.sleep(pause_s)


class Stream(threading.Thread):
    """Publishes ``events`` in chunks (alternating between ``producers``) until finished or out of events."""

    def __init__(self, producers: list, events: list[dict]) -> None:
        super().__init__(name="cluster-stream", daemon=True)
        self.producers, self.events = producers, events
        self.sent = 0
        self.error: BaseException | None = None
        self._finishing = threading.Event()

    def run(self) -> None:
        from streams.kafka.topics import spec

        try:
            for index, start in enumerate(range(0, len(self.events), CHUNK)):
                if self._finishing.is_set():
                    break
                chunk = self.events[start:start + CHUNK]
                self.producers[index % len(self.producers)].publish_many(spec("playback"), chunk)
                self.sent += len(chunk)
                self._finishing.wait(PAUSE_S)
            for producer in self.producers:
                producer.flush(90)  # raises if any event was not acknowledged
        except BaseException as error:  # noqa: BLE001 - re-raised by finish()
            self.error = error

    def stop(self) -> None:
        self._finishing.set()

    def finish(self, timeout_s: float) -> int:
        """Stop publishing, wait until every event sent is acknowledged; returns how many were sent."""
        self.stop()
        self.join(timeout_s)
        assert not self.is_alive(), f"the producers did not finish within {timeout_s}s"
        if self.error is not None:
            raise self.error
        return self.sent


def consumed(worker) -> float:
    try:
        return worker.counter("vitrina_events_in_total", topic="playback")
    except OSError:
        return 0.0


def test_topics_are_replicated_three_times_with_min_insync_two(cluster, admin):
    from streams.kafka.topics import all_specs

    _, settings = cluster
    assert settings.kafka_bootstrap.count(",") == 2, "clients are bootstrapped with all three nodes"
    names = [s.name for s in all_specs()]
    partitions = describe(admin, names)
    assert {topic for topic, _ in partitions} == set(names)
    assert all(replicas == list(NODES) and isr == list(NODES) for _, replicas, isr in partitions.values())
    assert {leader for leader, _, _ in partitions.values()} == set(NODES), "leadership is spread over the nodes"
    configs = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in names])
    for resource, future in configs.items():
        assert future.result(timeout=15)["min.insync.replicas"].value == "2", resource.name
    # the broker defaults cover what Faust and the group coordinator create (changelogs, __consumer_offsets)
    broker = admin.describe_configs([ConfigResource(ResourceType.BROKER, "1")])
    values = next(iter(broker.values())).result(timeout=15)
    assert (values["default.replication.factor"].value, values["min.insync.replicas"].value) == ("3", "2")
    assert values["offsets.topic.replication.factor"].value == "3"


@pytest.mark.parametrize("victim", ["a partition leader", "node 1"])
def test_a_node_killed_mid_stream_loses_no_acknowledged_event_and_rejoins_in_sync(cluster, admin, worker, client,
                                                                                  all_nodes_back, victim):
    from streams.kafka.producer import EventProducer

    stack, settings = cluster
    process, app_id, prefix = worker
    began = time.monotonic()
    if victim == "node 1":
        node = 1
    else:  # the node (not 1: that is the other case) leading the most partitions the worker reads or writes
        leaders = Counter(leader for leader, _, _ in describe(admin, worker_topics(app_id)).values())
        node = max((2, 3), key=lambda n: leaders[n])
        assert leaders[node] > 0, leaders
    tag = unique(f"n{node}")
    events = generated_stream(tag, MAX_EVENTS)
    survivors = [f"{b.host}:{b.port}" for n, b in admin.list_topics(timeout=10).brokers.items() if n != node]

    before = consumed(process)
    running = EventProducer(settings)  # acks=all, idempotent, bootstrapped with all three nodes
    publish_paced(running, events[:BEFORE_KILL], 1000, 0.2)
    wait_for(lambda: consumed(process) >= before + BEFORE_KILL // 4, "the worker to be mid-stream", 60, every_s=0.1)
    stack.kill_component(component(node))  # SIGKILL: no controlled shutdown, no leadership handed over
    killed_at = time.monotonic()
    assert stack.pid(component(node)) is None
    bootstrapped = EventProducer(settings)  # a client bootstrapped while the node is down
    # the stream goes on while the node is down, restarts and catches up: chunks alternate between the
    # client that knew the node and the one bootstrapped without it
    rest = Stream([running, bootstrapped], events[BEFORE_KILL:])
    all_nodes_back.append(rest)
    rest.start()
    # the cluster notices (the node is fenced after its session timeout, 9 s, and leaves every ISR: acks=all
    # is answered by the other two) while the node restarts; its start-up takes longer than that
    left_at: list[float] = []
    # the watcher's own client knows only the two live nodes: a client that knew the killed one may spend
    # its request timeouts on it, look a few times in the node's seconds out of the ISRs, and miss them
    # (seen once, on a slower machine, with node 1: "never left the ISRs")
    watching = AdminClient({"bootstrap.servers": ",".join(survivors), "socket.timeout.ms": 10000})

    def watch_isr() -> None:
        deadline = time.monotonic() + 60
        while not left_at and time.monotonic() < deadline:
            if left_every_isr(watching, node, worker_topics(app_id)):
                left_at.append(time.monotonic())
            time.sleep(0.3)

    watcher = threading.Thread(target=watch_isr, name="isr-watch", daemon=True)
    watcher.start()
    restart_began = time.monotonic()
    restarted = stack.restart_component(component(node))
    assert restarted.healthy, restarted
    rejoined_at = time.monotonic()
    watcher.join(60)
    assert left_at, f"node {node} never left the ISRs of {worker_topics(app_id)}"
    sent = rest.finish(timeout_s=120)  # raises if any event was not acknowledged
    assert running.delivered + bootstrapped.delivered == BEFORE_KILL + sent
    expected = expected_views(events[:BEFORE_KILL + sent])
    wait_for(lambda: out_of_sync(admin) == [], f"node {node}'s replicas to be back in every ISR", 90)
    in_sync_s = time.monotonic() - rejoined_at

    try:
        wait_for(lambda: stored_views(client, prefix, expected) == expected, "every acknowledged event in the views", 120)
    except AssertionError:
        got = stored_views(client, prefix, expected)
        wrong = {item: (got[item], expected[item]) for item in expected if got[item] != expected[item]}
        raise AssertionError(f"{len(wrong)} titles differ (got, expected), e.g. {list(wrong.items())[:5]}\n"
                             f"{process.log_tail(60)}") from None
    time.sleep(2)  # anything applied twice would overshoot now: the counts must stay exact
    assert stored_views(client, prefix, expected) == expected
    assert process.alive(), f"the worker died:\n{process.log_tail(60)}"
    assert process.counter("vitrina_dead_letters_total") == 0
    print(f"killed node {node} ({victim}): {BEFORE_KILL} events before, {sent} after; out of the ISRs "
          f"{left_at[0] - killed_at:.1f}s after the kill, restart took {rejoined_at - restart_began:.1f}s, "
          f"in sync {in_sync_s:.1f}s later; "
          f"scenario {time.monotonic() - began:.1f}s")
