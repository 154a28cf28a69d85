"""Deterministic showcases (issue 18): two uninterrupted runs on the same input end with the same
showcases - content, ``built_at`` and meta - with no rebuild from the final inputs first.

The build time is event time: ``built_at`` of every view is the latest event time of the inputs the
builder saw (catalogue records and user histories), never the wall clock. Both runs read the same
topics under their own app ids and view namespaces (tests/support/replay.py), but with different
timing: the first run builds showcases from the first half of the playback before the second half is
even published (so its users get a first build that the once-a-day rule then keeps), the second run
starts once everything is there. Co-view runs in no namespace here (its similar lists are compared by
the fault suite), as in the other replay tests.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from support.replay import (
    differences,
    make_input,
    start_pipeline_worker,
    start_private_stack,
    unique,
    wait_for,
)

from bench.faults import wait_at_rest

CATALOGUE_AT = datetime(2024, 2, 1, tzinfo=timezone.utc)  # before every playback event: histories set the clock


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    stack, settings = start_private_stack(tmp_path_factory.mktemp("showcase-determinism"))
    try:
        yield settings
    finally:
        stack.down()


@pytest.fixture(scope="module")
def data():
    data = make_input(titles=120, requests=250, seed=5)
    for record in data.titles + data.shelves:
        record["updated_at"] = CATALOGUE_AT
    return data


def publish_part(settings, data, part: int) -> None:
    """Catalogue and the first half of the playback and impressions (part 0), or the rest (part 1)."""
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import spec

    producer = EventProducer(settings)
    if part == 0:
        producer.publish_many(spec("catalogue.titles"), data.titles)
        producer.publish_many(spec("catalogue.shelves"), data.shelves)
    for topic, events in (("playback", data.playback), ("ranking.impressions", data.impressions)):
        half = len(events) // 2
        producer.publish_many(spec(topic), events[:half] if part == 0 else events[half:])
    producer.flush()


def run_once(settings, data, tag: str, before_second_half=None) -> dict:
    import redis

    app_id = unique(f"determinism-{tag}")
    prefix = f"{app_id}:"
    worker = start_pipeline_worker(settings, app_id, VITRINA_VIEW_PREFIX=prefix, VITRINA_SHOWCASE_SETTLED_S="3")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        if before_second_half is not None:
            before_second_half(client, prefix)
        return wait_at_rest(client, prefix, data, stable_s=6.0, timeout_s=300, say=print)
    except TimeoutError:
        print(worker.log_tail(60))
        raise
    finally:
        worker.stop()
        client.close()


def test_two_runs_on_the_same_input_give_the_same_showcases(private, data):
    publish_part(private, data, 0)

    def first_half_built_then_publish_the_rest(client, prefix: str) -> None:
        wait_for(lambda: len(list(client.scan_iter(match=f"{prefix}showcase:user:*"))) >= 10
                 and client.zcard(f"{prefix}showcase-dirty") == 0, "showcases built from the first half", 180)
        publish_part(private, data, 1)

    first = run_once(private, data, "a", first_half_built_then_publish_the_rest)
    second = run_once(private, data, "b")
    showcases = [k for k in first if k.startswith("showcase:")]
    personal = [k for k in showcases if k.startswith("showcase:user:")]
    assert len(personal) >= 10 and len(showcases) > len(personal), "personal views and editorial variants built"
    assert not differences(first, second), differences(first, second)

    # built_at is event time: the latest updated_at of the catalogue records and of the users' histories
    users = first["showcase-users"]
    latest = max(datetime.fromisoformat(first[f"history:{u}"]["updated_at"]) for u in users)
    assert latest > CATALOGUE_AT
    stamps = {first[k]["meta"]["built_at"] for k in showcases}
    assert stamps == {latest.isoformat()}, stamps
    assert {m["built_at"] for k, m in first.items() if k.startswith("showcase-meta:")} == {latest.isoformat()}
