"""The main job's simulated viewer (demo/simulated_client.py): its choices follow the rule it documents,
and what it watches labels the impressions it reported through the real label join."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from demo.eventgen import Viewer
from demo.simulated_client import choose_plays, play_probability, tastes_of, watch
from processors.ranking.labels import LabelJoiner

SHOWN = datetime(2026, 11, 3, 20, 0, tzinfo=timezone.utc)
GENRES = {"a": ["Drama"], "b": ["Comedy"], "c": ["Drama", "Crime"], "d": ["Horror"]}


def impression(item: str, row: int, position: int) -> dict:
    return {"impression_id": f"r1:{row}:{position}", "request_id": "r1", "user_id": "u1", "device_id": "u1-TV",
            "device_type": "TV", "item_id": item, "row": row, "position": position, "surface": "HOME",
            "event_time": SHOWN}


def test_tastes_are_the_most_watched_genres():
    assert tastes_of(["a", "c", "a", "c", "b"], GENRES, top=2) == {"Drama", "Crime"}
    assert tastes_of(["b", "b", "a"], GENRES, top=1) == {"Comedy"}


def test_taste_position_and_row_raise_or_lower_the_play_probability():
    tastes = {"Drama"}
    assert play_probability(impression("a", 0, 0), tastes, GENRES) > play_probability(impression("d", 0, 0), tastes, GENRES)
    assert play_probability(impression("a", 0, 0), tastes, GENRES) > play_probability(impression("a", 0, 5), tastes, GENRES)
    assert play_probability(impression("a", 0, 0), tastes, GENRES) > play_probability(impression("a", 4, 0), tastes, GENRES)


def test_choices_are_bounded_unique_and_follow_taste():
    rng = random.Random(1)
    page = [impression(item, row, pos) for row in range(3) for pos, item in enumerate("abcd")]
    counts = {item: 0 for item in "abcd"}
    for _ in range(2000):
        plays = choose_plays(page, {"Drama"}, GENRES, rng, max_plays=2)
        assert len(plays) <= 2 and len({p[0]["item_id"] for p in plays}) == len(plays)
        for chosen, fraction in plays:
            assert 0.0 < fraction <= 0.99
            counts[chosen["item_id"]] += 1
    assert counts["a"] > 2 * counts["d"] and counts["a"] > counts["b"]


def test_what_it_watches_labels_its_impressions_in_the_label_join():
    rng = random.Random(3)
    viewer = Viewer(user_id="u1", device_id="u1-TV", device_type="TV", app_version="4.1.2", tastes=["Drama"],
                    network_kbps=6000, device_score=0.8)
    page = [impression("a", 0, 0), impression("d", 0, 1)]
    events = watch([(page[0], 0.99)], viewer=viewer, durations={"a": 20 * 60_000}, shown_at=SHOWN,
                   session_id="s1", rng=rng)
    assert events[0]["event_type"] == "START" and events[0]["event_time"] > SHOWN
    assert events[-1]["event_type"] == "COMPLETE" and {e["item_id"] for e in events} == {"a"}
    joiner = LabelJoiner()
    for one in page:
        joiner.add_impression(one)
    for event in events:
        joiner.add_playback(event)
    labels = {s.impression["item_id"]: s.impression["labels"] for s in joiner.flush(SHOWN + timedelta(days=1))}
    assert labels["a"]["evr"] and labels["a"]["lvr"] and not labels["d"]["evr"]
