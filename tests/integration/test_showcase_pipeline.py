"""The showcase in the running system: catalogue + shelves + playback published to the broker, the
session's worker (catalogue sink, history agent, showcase builder) writes the Redis views.

Ids are unique per test (the worker and Redis are shared by the whole session). Results of the
asynchronous pipeline are polled with a deadline, never timed.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from infra.settings import Settings
from demo.catalogue import synthetic_titles
from demo.showcase_sample import shelves_for_catalogue
from sinks.redis_views import async_client, history_key, showcase_key, showcase_meta_key
from sinks.showcase_views import ShowcaseStore, ViewWrite
from streams.kafka.codec import default_codec
from streams.kafka.tail import tail
from streams.kafka.producer import EventProducer
from streams.kafka.topics import spec

DEADLINE_S = 120
NOW = datetime.now(timezone.utc)
MIN = 60_000


from support.waiting import wait_for as _wait_for


def wait_for(predicate, what, timeout_s=DEADLINE_S):
    return _wait_for(predicate, what, timeout_s)


def playback(user: str, item: str, kind: str, position_ms: int, at: datetime, duration_ms: int = 90 * MIN,
             device: str = "TV") -> dict:
    return {"event_id": str(uuid.uuid4()), "session_id": f"s-{user}", "user_id": user, "device_id": f"d-{user}",
            "device_type": device, "os": "tizen 7", "app_version": "4.0.0", "item_id": item, "event_type": kind,
            "position_ms": position_ms, "duration_ms": duration_ms, "network_kbps": 8000, "buffered_ratio": 0.9,
            "stall_ms": 0, "bitrate_kbps": 6000, "event_time": at}


def watch(user: str, item: str, minutes: int, at: datetime, complete: bool) -> list[dict]:
    events = [playback(user, item, "START", 0, at)]
    for minute in range(1, minutes + 1):
        events.append(playback(user, item, "HEARTBEAT", minute * MIN, at + timedelta(minutes=minute)))
    end = at + timedelta(minutes=minutes, seconds=30)
    events.append(playback(user, item, "COMPLETE" if complete else "STOP", 90 * MIN if complete else minutes * MIN, end))
    return events


@pytest.fixture(scope="module")
def catalogue() -> dict:
    """A catalogue of prefixed ids (no clash with other modules), its shelves, plus a late-night shelf of
    adult titles that the logged-in editorial showcase shows and the guest one must not."""
    titles = synthetic_titles(400, seed=21)
    for title in titles:
        title["item_id"] = "pt-" + title["item_id"]
        if title["series_id"]:
            title["series_id"] = "pt-" + title["series_id"]
    shelves = shelves_for_catalogue(titles, seed=21, now=NOW)
    adult = [t["item_id"] for t in titles if t["adult"] and not t["device_rights"] and t["licence_end"] is None]
    assert len(adult) >= 5, "the seeded catalogue should have enough adult titles for a shelf"
    shelves.append({**shelves[0], "shelf_id": "late_night", "kind": "VOD", "title": "Late night", "template_slot": 4,
                    "device_types": [], "item_ids": adult, "rule": None, "links": [], "kids": False})
    by_id = {s["shelf_id"]: s for s in shelves}
    films = [t for t in titles if t["series_id"] is None and not t["kids"] and not t["adult"] and not t["device_rights"]
             and t["licence_end"] is None]
    return {"titles": titles, "shelves": shelves, "by_id": by_id, "films": films,
            "adult": {t["item_id"] for t in titles if t["adult"]}}


@pytest.fixture
def published(catalogue: dict, worker, stack: Settings) -> EventProducer:
    """The catalogue published again for every test (idempotent; restores it if a test flushed Redis)."""
    producer = EventProducer(stack)
    producer.publish_many(spec("catalogue.titles"), catalogue["titles"])
    producer.publish_many(spec("catalogue.shelves"), catalogue["shelves"])
    producer.flush()
    return producer


def stored(views, view_key: str) -> dict | None:
    raw = views.get(showcase_key(view_key))
    return json.loads(raw) if raw else None


def items_of(view: dict, skip_kind: str | None = None) -> set[str]:
    return {i for s in view["shelves"] if s["kind"] != skip_kind for i in s["items"]}


def updated_events(settings: Settings, view_key: str) -> list[dict]:
    return [r.value for r in tail(settings, default_codec(), "showcase.updated") if r.value and r.value["view_key"] == view_key]


def test_playback_gives_a_personal_showcase_with_continue_watching_and_without_watched_titles(
        published, catalogue, views, stack):
    user = f"pu-{uuid.uuid4().hex[:8]}"
    editors = catalogue["by_id"]["editors_choice"]["item_ids"]
    banner = catalogue["by_id"]["banner_main"]["item_ids"]
    watched = editors[:4] + banner[:2]  # editorial picks: they would be on the page if not watched
    resume = next(t["item_id"] for t in catalogue["films"] if t["item_id"] not in watched)
    events = []
    for n, item in enumerate(watched):
        events += watch(user, item, 3, NOW - timedelta(hours=5 - n * 0.5), complete=True)
    events += watch(user, resume, 20, NOW - timedelta(hours=1), complete=False)
    published.publish_many(spec("playback"), events)
    published.flush()

    view = wait_for(lambda: stored(views, f"user:{user}:TV"), f"the showcase of {user}")
    history = json.loads(views.get(history_key(user)))
    assert [c["item_id"] for c in history["continue"]] == [resume]
    assert set(history["watched"]) == set(watched)
    shelves = {s["kind"]: s for s in view["shelves"]}
    assert shelves["CONTINUE_WATCHING"]["items"] == [resume]
    assert not items_of(view, skip_kind="CONTINUE_WATCHING") & (set(watched) | {resume})
    assert view["meta"]["version"] == 1 and view["meta"]["is_fallback"] is False
    assert len(view["shelves"]) >= 4
    event = wait_for(lambda: updated_events(stack, f"user:{user}:TV"), "a showcase.updated event")[0]
    assert (event["user_id"], event["device_type"], event["version"]) == (user, "TV", 1)
    assert event["content_hash"] == view["meta"]["content_hash"]
    assert event["shelves"] == len(view["shelves"]) and event["fallback"] is False


def test_a_redelivered_record_writes_the_history_view_again(published, catalogue, views):
    """After a crash between the table write and the Redis write the table is ahead of Redis; the records
    redelivered then change nothing in the table, yet must write the view again."""
    user = f"pu-{uuid.uuid4().hex[:8]}"
    item = catalogue["films"][0]["item_id"]
    events = watch(user, item, 3, NOW - timedelta(hours=2), complete=True)
    published.publish_many(spec("playback"), events)
    published.flush()
    before = wait_for(lambda: views.get(history_key(user)), f"the history of {user}")
    views.delete(history_key(user))  # Redis lost the last write
    published.publish_many(spec("playback"), events)  # the same records again (same ids, same content)
    published.flush()
    again = wait_for(lambda: views.get(history_key(user)), f"the history of {user} written again")
    strip = lambda raw: {k: v for k, v in json.loads(raw).items() if k != "updated_at"}  # noqa: E731
    assert strip(again) == strip(before)


def test_guest_showcase_never_has_adult_titles(published, catalogue, views):
    def editorial_with_late_night():
        view = stored(views, "default:TV")
        return view if view and any(s["shelf_id"] == "late_night" for s in view["shelves"]) else None

    default = wait_for(editorial_with_late_night, "the editorial showcase with the late-night shelf")
    assert items_of(default) & catalogue["adult"]
    guest = wait_for(lambda: stored(views, "guest:TV"), "the guest showcase")
    assert len(guest["shelves"]) >= 4
    assert not items_of(guest) & catalogue["adult"]
    assert all(s["shelf_id"] != "late_night" for s in guest["shelves"])


def test_a_second_build_within_a_day_keeps_the_view_unless_ops_force_it(published, catalogue, views, stack):
    user = f"pu-{uuid.uuid4().hex[:8]}"
    films = [t["item_id"] for t in catalogue["films"]]
    first, resume = films[-1], films[-2]
    published.publish_many(spec("playback"), watch(user, first, 2, NOW - timedelta(hours=3), complete=True)
                           + watch(user, resume, 15, NOW - timedelta(hours=2), complete=False))
    published.flush()
    key = f"user:{user}:TV"
    before = wait_for(lambda: stored(views, key), f"the first showcase of {user}")
    assert items_of(before) >= {resume} and [s for s in before["shelves"] if s["kind"] == "CONTINUE_WATCHING"]

    # the user finishes the title in progress: a rebuild now would change the page
    published.publish_many(spec("playback"), watch(user, resume, 3, NOW - timedelta(minutes=30), complete=True))
    published.flush()
    wait_for(lambda: resume in json.loads(views.get(history_key(user)) or "{}").get("watched", ()), "the new history")
    asked = int(time.time() * 1000)  # ops ask for a rebuild, not forced: a decision after this moment
    published.publish("showcase.rebuild", {"request_id": str(uuid.uuid4()), "user_id": user, "force": False,
                                           "reason": "test", "requested_at": datetime.now(timezone.utc)})
    published.flush()
    wait_for(lambda: int(views.hget(showcase_meta_key(key), "decided_at") or 0) > asked, "the builder's decision")
    meta = views.hgetall(showcase_meta_key(key))
    assert meta["decision"] == "too_soon"
    assert stored(views, key) == before

    published.publish("showcase.rebuild", {"request_id": str(uuid.uuid4()), "user_id": user, "force": True,
                                           "reason": "test", "requested_at": datetime.now(timezone.utc)})
    published.flush()

    def rebuilt():
        view = stored(views, key)  # every read parses and agrees with the meta written with it
        assert view is not None and view["meta"]["version"] >= 1
        return view if view["meta"]["version"] == 2 else None

    after = wait_for(rebuilt, "the forced rebuild")
    assert views.hget(showcase_meta_key(key), "decision") == "forced"
    assert resume not in items_of(after)
    assert not [s for s in after["shelves"] if s["kind"] == "CONTINUE_WATCHING"]
    assert wait_for(lambda: [e for e in updated_events(stack, key) if e["version"] == 2], "the showcase.updated event")


def test_view_writes_are_atomic_and_versions_monotonic(stack: Settings):
    """A reader racing a writer always gets a whole JSON whose own version matches the meta written with
    it; a write with a version not above the stored one is refused."""
    settings = replace(stack, redis_url=stack.redis_url.rsplit("/", 1)[0] + "/2")

    def write(version: int) -> ViewWrite:
        body = json.dumps({"meta": {"version": version}, "shelves": [{"items": [f"x{version}-{i}" for i in range(40 * (version % 7 + 1))]}]})
        return ViewWrite("user:atomic:TV", body, version, f"h{version}", NOW.isoformat(), False, "test", 0, None, 1, 40)

    async def race() -> tuple[int, list[bool]]:
        redis = async_client(settings)
        reader_redis = async_client(settings)
        try:
            await redis.flushdb()
            store, reader = ShowcaseStore(redis), ShowcaseStore(reader_redis)
            done = asyncio.Event()
            reads = 0

            async def read_loop() -> None:
                nonlocal reads
                while not done.is_set():
                    found = await reader.read_first(["user:atomic:TV"])
                    if found is not None:
                        assert json.loads(found.body)["meta"]["version"] == found.version
                        reads += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(read_loop())
            for version in range(1, 301):
                assert await store.write([write(version)]) == [True]
            stale = await store.write([write(150), write(300)])
            done.set()
            await task
            return reads, stale
        finally:
            await redis.aclose()
            await reader_redis.aclose()

    reads, stale = asyncio.run(race())
    assert reads > 0
    assert stale == [False, False]


def test_impressions_are_counted_once_per_record_and_feed_the_ctr(stack: Settings):
    """The CTR denominator: a redelivered batch (same partition offsets) adds nothing."""
    from sinks.redis_views import IMPRESSIONS_KEY, POPULAR_KEY
    from sinks.showcase_views import ImpressionCounter
    from streams.capabilities.showcase.builder import load_stats

    settings = replace(stack, redis_url=stack.redis_url.rsplit("/", 1)[0] + "/2")

    async def count() -> tuple[list[int], dict, Any]:
        redis = async_client(settings)
        try:
            await redis.flushdb()
            counter = ImpressionCounter(redis)
            first = [(offset, "a" if offset % 2 else "b") for offset in range(40)]
            added = [await counter.add(0, first), await counter.add(0, first),  # redelivered
                     await counter.add(0, first[30:] + [(40, "a"), (41, "a")]),  # overlap + 2 new
                     await counter.add(1, [(0, "a")])]  # another partition has its own mark
            await redis.zadd(POPULAR_KEY, {"a": 11, "b": 2})
            return added, await redis.hgetall(IMPRESSIONS_KEY), await load_stats(redis, min_impressions=5)
        finally:
            await redis.aclose()

    added, counts, stats = asyncio.run(count())
    assert added == [40, 0, 2, 1]
    assert counts == {"a": "23", "b": "20"}
    assert stats.ctr == {"a": round(11 / 23, 4), "b": 0.1}
    assert stats.popularity == {"a": 11.0, "b": 2.0}


def test_impressions_from_the_topic_reach_redis_exactly(published, views):
    item = f"imp-{uuid.uuid4().hex[:8]}"
    impression = {"impression_id": "", "request_id": "r", "user_id": "u-imp", "device_id": "d-imp", "device_type": "TV",
                  "item_id": item, "position": 0, "surface": "HOME", "recent_watched": [],
                  "pxtr": {"evr": 0.5, "lvr": 0.3, "svr": 0.2, "fpr": 0.1},
                  "context": {"network_kbps": 5000, "device_score": 0.8, "cached_ratio": 0.5,
                              "item_duration_ms": 5_400_000, "hour_of_day": 20},
                  "labels": None, "event_time": NOW}
    published.publish_many(spec("ranking.impressions"), [{**impression, "impression_id": str(uuid.uuid4()),
                                                          "position": n} for n in range(7)])
    published.flush()
    assert wait_for(lambda: views.hget("vitrina:impressions", item) == "7", "the impression count")
