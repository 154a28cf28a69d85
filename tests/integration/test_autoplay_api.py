"""Autoplay-next and similar lists through the read API (a real ``vitrina api`` process on Redis).

The catalogue goes in through the broker (catalogue sink of the session's worker), the viewer's
history through playback (history agent); similar lists are written with the co-view sink's own
functions so each test controls the candidate order exactly. Ids are unique per test.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from api.auth import dev_client
from api.client import ApiError, VitrinaClient
from infra.ports import pick_free_ports
from demo.catalogue import _title
from sinks.redis_views import history_key, sync_client, title_key
from sinks.similar_views import queue_views, similar_view
from streams.kafka.producer import EventProducer
from streams.ops.supervisor import start_api
from streams.kafka.topics import spec

NOW = datetime.now(timezone.utc)
DEADLINE_S = 120


from support.waiting import wait_for as _wait_for


def wait_for(predicate, what, timeout_s=DEADLINE_S):
    return _wait_for(predicate, what, timeout_s)


@pytest.fixture(scope="module")
def api(worker) -> Iterator[VitrinaClient]:
    process = start_api(worker_settings(), port=pick_free_ports(1)[0], name="api-autoplay")
    try:
        yield dev_client(process.settings, process.base_url)
    finally:
        process.stop()


def worker_settings():
    from infra.settings import load
    return load()


def catalogue(tag: str) -> list[dict]:
    series = f"{tag}-series"
    titles = [
        _title(f"{tag}-s1e1", "Show S1E1", ["Drama"], series_id=series, season=1, episode=1, age_rating=12),
        _title(f"{tag}-s1e2", "Show S1E2", ["Drama"], series_id=series, season=1, episode=2, age_rating=12),
        _title(f"{tag}-s2e1", "Show S2E1", ["Drama"], series_id=series, season=2, episode=1, age_rating=12),
        _title(f"{tag}-film", "Calm Film", ["Drama"], age_rating=12),
        _title(f"{tag}-adult", "Night Film", ["Drama"], adult=True, age_rating=18),
        _title(f"{tag}-seen", "Seen Film", ["Drama"], age_rating=12),
        _title(f"{tag}-next", "Next Film", ["Drama"], age_rating=12),
        _title(f"{tag}-mobile", "Mobile Only", ["Drama"], age_rating=12, device_rights=["MOBILE"]),
        _title(f"{tag}-teen", "Teen Film", ["Drama"], age_rating=16),
    ]
    return titles


def publish_catalogue(settings, tag: str) -> list[dict]:
    titles = catalogue(tag)
    producer = EventProducer(settings)
    producer.publish_many(spec("catalogue.titles"), titles)
    producer.flush()
    redis = sync_client(settings)
    wait_for(lambda: all(redis.exists(title_key(t["item_id"])) for t in titles), "catalogue in Redis")
    return titles


def put_similar(settings, item: str, ranked: list[str]) -> None:
    redis = sync_client(settings)
    pipe = redis.pipeline(transaction=False)
    queue_views(pipe, [similar_view(item, 1, int(NOW.timestamp() * 1000), "COVIEW", 3.0,
                                    [(other, 1.0 - i / 100) for i, other in enumerate(ranked)])])
    pipe.execute()


def watch(settings, user: str, item: str) -> None:
    base = {"session_id": f"s-{user}", "user_id": user, "device_id": f"d-{user}", "device_type": "TV",
            "os": "tizen", "app_version": "4.0.0", "item_id": item, "duration_ms": 90 * 60_000,
            "network_kbps": 8000, "buffered_ratio": 0.9, "stall_ms": 0, "bitrate_kbps": 6000}
    producer = EventProducer(settings)
    producer.publish_many(spec("playback"), [
        {**base, "event_id": str(uuid.uuid4()), "event_type": "START", "position_ms": 0, "event_time": NOW},
        {**base, "event_id": str(uuid.uuid4()), "event_type": "COMPLETE", "position_ms": 90 * 60_000,
         "event_time": NOW + timedelta(minutes=91)}])
    producer.flush()
    redis = sync_client(settings)
    wait_for(lambda: item in _text(redis.get(history_key(user))), "history with the watched title")


def _text(raw: bytes | str | None) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw or ""


def test_next_episode_first_for_a_series(api, topics):
    tag = f"ap-{uuid.uuid4().hex[:8]}"
    publish_catalogue(topics, tag)
    put_similar(topics, f"{tag}-s1e1", [f"{tag}-film"])
    answer = api.autoplay_next(f"{tag}-s1e1", user_id=f"{tag}-u", device_type="TV")
    assert answer["reason"] == "next_episode" and answer["next"]["item_id"] == f"{tag}-s1e2"
    answer = api.autoplay_next(f"{tag}-s1e2", user_id=f"{tag}-u", device_type="TV")
    assert answer["next"]["item_id"] == f"{tag}-s2e1"  # first episode of the next season
    # the last episode has no co-view list: the metadata fallback, never another episode of the same show
    answer = api.autoplay_next(f"{tag}-s2e1", user_id=f"{tag}-u", device_type="TV")
    assert answer["similar_source"] == "METADATA" and answer["reason"] == "similar"
    assert answer["next"]["series_id"] != f"{tag}-series"
    assert {"item_id": f"{tag}-s1e1", "why": "same_series"} in answer["skipped"]


def test_similar_skips_watched_and_unavailable_titles(api, topics):
    tag = f"ap-{uuid.uuid4().hex[:8]}"
    publish_catalogue(topics, tag)
    user = f"{tag}-u"
    watch(topics, user, f"{tag}-seen")
    put_similar(topics, f"{tag}-film", [f"{tag}-seen", f"{tag}-mobile", f"{tag}-teen", f"{tag}-next"])
    answer = api.autoplay_next(f"{tag}-film", user_id=user, device_type="TV", age_limit=12)
    assert answer["reason"] == "similar" and answer["next"]["item_id"] == f"{tag}-next"
    skipped = {row["item_id"]: row["why"] for row in answer["skipped"]}
    assert skipped == {f"{tag}-seen": "watched", f"{tag}-mobile": "device_rights", f"{tag}-teen": "age_limit"}
    # another viewer who has not watched it gets the first allowed title
    other = api.autoplay_next(f"{tag}-film", user_id=f"{tag}-other", device_type="MOBILE", age_limit=18)
    assert other["next"]["item_id"] == f"{tag}-seen"


def test_guests_never_get_adult_titles(api, topics):
    tag = f"ap-{uuid.uuid4().hex[:8]}"
    publish_catalogue(topics, tag)
    put_similar(topics, f"{tag}-film", [f"{tag}-adult", f"{tag}-next"])
    guest = api.autoplay_next(f"{tag}-film", device_id=f"{tag}-tv", device_type="TV", age_limit=18)
    assert guest["next"]["item_id"] == f"{tag}-next"
    assert {"item_id": f"{tag}-adult", "why": "adult_for_guest"} in guest["skipped"]
    user = api.autoplay_next(f"{tag}-film", user_id=f"{tag}-u", device_type="TV", age_limit=18)
    assert user["next"]["item_id"] == f"{tag}-adult"


def test_bad_parameters_are_clear_400s(api, topics):
    tag = f"ap-{uuid.uuid4().hex[:8]}"
    publish_catalogue(topics, tag)
    for params, code in [({"device_type": "FRIDGE"}, "BAD_PARAMETER"), ({"age_limit": "7"}, "BAD_PARAMETER"),
                         ({"age_limit": "old"}, "BAD_PARAMETER")]:
        with pytest.raises(ApiError) as err:
            api.get("/v1/autoplay-next", item_id=f"{tag}-film", **params)
        assert err.value.status == 400 and err.value.code == code
    with pytest.raises(ApiError) as err:
        api.get("/v1/autoplay-next", device_type="TV")
    assert err.value.status == 400 and err.value.code == "MISSING_PARAMETER"
    with pytest.raises(ApiError) as err:
        api.autoplay_next(f"{tag}-nope")
    assert err.value.status == 404 and err.value.code == "UNKNOWN_TITLE"


def test_similar_endpoint_list_fallback_and_404(api, topics):
    tag = f"ap-{uuid.uuid4().hex[:8]}"
    publish_catalogue(topics, tag)
    put_similar(topics, f"{tag}-film", [f"{tag}-next", f"{tag}-seen", f"{tag}-teen"])
    found = api.similar(f"{tag}-film", limit=2)
    assert [row["item_id"] for row in found["items"]] == [f"{tag}-next", f"{tag}-seen"]
    assert found["source"] == "COVIEW" and found["version"] == 1
    # a catalogue title without a co-view list: the metadata cold-start list (same series first)
    cold = wait_for(lambda: _similar_or_none(api, f"{tag}-s1e1"), "metadata fallback list", 30)
    assert cold["source"] == "METADATA"
    assert {row["item_id"] for row in cold["items"][:2]} == {f"{tag}-s1e2", f"{tag}-s2e1"}
    with pytest.raises(ApiError) as err:
        api.similar(f"{tag}-unknown")
    assert err.value.status == 404 and err.value.code == "UNKNOWN_TITLE"
    with pytest.raises(ApiError) as err:
        api.similar(f"{tag}-film", limit=0)
    assert err.value.status == 400


def _similar_or_none(api: VitrinaClient, item: str) -> dict | None:
    try:
        return api.similar(item)
    except ApiError:
        return None
