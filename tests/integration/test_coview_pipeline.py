"""Co-view in the running system: playback -> sessionizer -> per-title co-view -> ``vitrina:similar:{item}``.

Ids are unique per test (the worker and Redis are shared by the session); results are polled with
a deadline, never timed.
"""
from __future__ import annotations

import pytest

import json
import uuid
from datetime import datetime, timedelta, timezone

from confluent_kafka import Producer

from sinks.redis_views import similar_key
from processors.coview.routing import pack_views
from processors.coview.sessionize import ViewCompleted
from streams.agents.coview import COVIEW_CONFIG, title_partition
from streams.kafka.codec import default_codec
from streams.kafka.tail import tail
from streams.kafka.producer import EventProducer, producer_config
from streams.kafka.topics import full_name, spec

DEADLINE_S = 120
NOW = datetime.now(timezone.utc)
DURATION_MS = 90 * 60_000


from support.waiting import wait_for as _wait_for


def wait_for(predicate, what, timeout_s=DEADLINE_S):
    return _wait_for(predicate, what, timeout_s)


def playback(user: str, item: str, kind: str, position_ms: int, at: datetime) -> dict:
    return {"event_id": str(uuid.uuid4()), "session_id": f"s-{user}", "user_id": user, "device_id": f"d-{user}",
            "device_type": "TV", "os": "tizen 7", "app_version": "4.0.0", "item_id": item, "event_type": kind,
            "position_ms": position_ms, "duration_ms": DURATION_MS, "network_kbps": 8000, "buffered_ratio": 0.9,
            "stall_ms": 0, "bitrate_kbps": 6000, "event_time": at}


def watch(user: str, item: str, at: datetime, seconds: int) -> list[dict]:
    """START, then STOP after ``seconds`` of continuous playback."""
    return [playback(user, item, "START", 0, at),
            playback(user, item, "STOP", seconds * 1000, at + timedelta(seconds=seconds))]


def session(user: str, items: list[str], start: datetime, seconds: int = 300) -> list[dict]:
    events = []
    for n, item in enumerate(items):
        events += watch(user, item, start + timedelta(seconds=n * (seconds + 10)), seconds)
    return events


def similar(views, item: str) -> dict | None:
    raw = views.get(similar_key(item))
    return json.loads(raw) if raw else None


def listed(view: dict | None) -> list[str]:
    return [row["item_id"] for row in view["items"]] if view else []


def ids(tag: str, *names: str) -> list[str]:
    return [f"cv-{tag}-{name}" for name in names]


def test_session_a_b_c_makes_similar_lists(worker, views, topics):
    tag = uuid.uuid4().hex[:8]
    a, b, c = ids(tag, "A", "B", "C")
    producer = EventProducer(topics)
    for user in ("u1", "u2"):
        producer.publish_many(spec("playback"), session(f"{tag}-{user}", [a, b, c], NOW))
    producer.flush()

    view_a = wait_for(lambda: (v := similar(views, a)) and b in listed(v) and v, "B in A's similar list")
    view_b = wait_for(lambda: (v := similar(views, b)) and {a, c} <= set(listed(v)) and v, "A and C in B's list")
    assert view_a["item_id"] == a and view_a["source"] == "COVIEW"
    assert view_a["support"] >= 1.0 and view_a["version"] >= 1
    assert all(0.0 < row["score"] <= 1.0 for row in view_a["items"] + view_b["items"])

    def event_for_a():
        return [r.value for r in tail(topics, default_codec(), "similar.updated", limit=100000)
                if r.value and r.value["item_id"] == a]

    events = wait_for(event_for_a, "similar.updated event for A", 60)
    assert b in [row["item_id"] for row in events[-1]["similar"]]
    versions = [e["version"] for e in events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_short_views_do_not_count(worker, views, topics):
    tag = uuid.uuid4().hex[:8]
    a, short, b = ids(tag, "A", "short", "B")
    producer = EventProducer(topics)
    for user in ("u1", "u2"):
        user_id = f"{tag}-{user}"
        events = watch(user_id, a, NOW, 300)
        events += watch(user_id, short, NOW + timedelta(seconds=310), 2)  # 2 s: a short view, never a view
        events += watch(user_id, b, NOW + timedelta(seconds=320), 300)
        producer.publish_many(spec("playback"), events)
    producer.flush()

    view_a = wait_for(lambda: (v := similar(views, a)) and b in listed(v) and v, "B in A's list")
    assert short not in listed(view_a)
    assert short not in listed(similar(views, b))
    assert similar(views, short) is None


def test_duplicate_delivery_does_not_double_count(worker, views, topics):
    tag = uuid.uuid4().hex[:8]
    a, b = ids(tag, "A", "B")
    producer = EventProducer(topics)
    for user in ("u1", "u2"):
        events = session(f"{tag}-{user}", [a, b], NOW)
        producer.publish_many(spec("playback"), events + events)  # the same player events published twice
    producer.flush()
    view_a = wait_for(lambda: (v := similar(views, a)) and b in listed(v) and v, "B in A's list")
    assert view_a["support"] == pytest.approx(2.0, rel=1e-3)  # two viewers, one view each (decay over seconds)

    # A redelivered repartition record (same origin partition and offset) is applied once.
    solo = ids(tag, "solo")[0]
    at_ms = int(NOW.timestamp() * 1000)

    def batch(offset: int) -> tuple[int, dict]:
        view = ViewCompleted(f"u:{tag}", f"u:{tag}@{at_ms}", solo, 1, 200_000, DURATION_MS, at_ms, ())
        [(partition, record)] = pack_views([(view, offset)], 0, at_ms, title_partition, COVIEW_CONFIG).items()
        return partition, record

    codec, raw = default_codec(), Producer(producer_config(topics))
    for partition, record in (batch(10**12), batch(10**12), batch(10**12 + 1)):
        raw.produce(full_name(topics, "coview.contributions"), codec.encode(spec("coview.contributions").schema, record),
                    partition=partition)
    raw.flush(30)
    # 1.0 + 1.0 once the last record is in; a double-counted duplicate would show 3.0
    view = wait_for(lambda: (v := similar(views, solo)) and abs(v["support"] - 1.0) > 0.1 and v, "the last update applied")
    assert view["support"] == pytest.approx(2.0, rel=1e-3)


def test_a_list_rescored_after_its_neighbours_moved_on_gets_a_new_version(worker, views, topics):
    """Once input goes quiet every list is re-scored (``settle``). A's list changes when B gains views
    in sessions without A, although A itself got no update: the new list must carry a new version,
    in Redis and in similar.updated, never a version already used for other content."""
    tag = uuid.uuid4().hex[:8]
    a, b, d = ids(tag, "A", "B", "D")
    with EventProducer(topics) as producer:
        for user in ("u1", "u2"):
            producer.publish_many(spec("playback"), session(f"{tag}-{user}", [a, b], NOW))
    first = wait_for(lambda: (v := similar(views, a)) and b in listed(v) and v, "B in A's list")
    score_b = {row["item_id"]: row["score"] for row in first["items"]}[b]
    with EventProducer(topics) as producer:  # B's count grows, A gets nothing
        producer.publish_many(spec("playback"), session(f"{tag}-u3", [b, d], NOW + timedelta(hours=1)))

    def rescored():
        view = similar(views, a)
        rows = {row["item_id"]: row["score"] for row in view["items"]} if view else {}
        return view if b in rows and rows[b] < score_b - 0.01 else None

    later = wait_for(rescored, "A's list rescored with B's new count")
    assert later["version"] > first["version"]

    def events_for_a():
        found = [r.value for r in tail(topics, default_codec(), "similar.updated", limit=100000)
                 if r.value and r.value["item_id"] == a]
        return found if found and found[-1]["version"] == later["version"] else None

    versions = [e["version"] for e in wait_for(events_for_a, "the similar.updated event of the rescored list", 60)]
    assert versions == sorted(versions) and len(set(versions)) == len(versions), versions


def test_the_worker_exports_the_consumer_lag_of_the_engine_groups(worker, views, topics):
    """vitrina_consumer_lag covers the co-view engine's groups too, with the group as a label; once the
    input is processed and committed, their lag on the sources is 0."""
    from streams.runtime.engine.runner import group_id

    tag = uuid.uuid4().hex[:8]
    a, b = ids(tag, "A", "B")
    with EventProducer(topics) as producer:
        producer.publish_many(spec("playback"), session(f"{tag}-u1", [a, b], NOW))
    wait_for(lambda: b in listed(similar(views, a)), "B in A's similar list")
    groups = {name: group_id(topics, name) for name in ("coview-sessions", "coview-titles")}

    def lag_rows() -> dict[str, dict[tuple[str, str], float]]:
        rows: dict[str, dict[tuple[str, str], float]] = {g: {} for g in groups.values()}
        for labels, value in worker.samples("vitrina_consumer_lag"):
            if labels["group"] in rows:
                rows[labels["group"]][(labels["topic"], labels["partition"])] = value
        return rows

    def all_caught_up():
        rows = lag_rows()
        return all(rows.values()) and all(v == 0 for r in rows.values() for v in r.values()) and rows

    rows = wait_for(all_caught_up, "lag 0 reported for both co-view engine groups", 90)
    assert {topic for topic, _ in rows[groups["coview-sessions"]]} == {"playback", "sessions"}
    assert {topic for topic, _ in rows[groups["coview-titles"]]} == {"coview.contributions"}
