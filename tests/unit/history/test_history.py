"""Viewer history from playback (processors/history.py): watched, continue watching, series, idempotence."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from demo.catalogue import synthetic_titles
from demo.eventgen import StreamConfig, generate
from processors.history import (
    HistoryPolicy,
    apply_events,
    history_view,
    series_lookup_from_titles,
    user_history,
    viewer_devices,
)

T0 = datetime(2026, 11, 1, 20, 0, tzinfo=timezone.utc)
MIN = 60_000


def play(item: str, kind: str, position_ms: int, minute: float, duration_ms: int = 90 * MIN, device: str = "TV",
         app_version: str = "4.0.0") -> dict:
    return {"event_id": f"{item}-{kind}-{minute}", "session_id": "s1", "user_id": "u1", "device_id": "d1",
            "device_type": device, "os": "tizen 7", "app_version": app_version, "item_id": item, "event_type": kind,
            "position_ms": position_ms, "duration_ms": duration_ms, "network_kbps": 5000, "buffered_ratio": 0.5,
            "stall_ms": 0, "bitrate_kbps": 5000, "event_time": T0 + timedelta(minutes=minute)}


def view_of(events: list[dict], **kwargs) -> dict:
    return history_view(apply_events(None, events).state, **kwargs)


def test_completed_title_is_watched_and_not_continue():
    view = view_of([play("m1", "START", 0, 0), play("m1", "HEARTBEAT", 60 * MIN, 60),
                    play("m1", "CREDITS_START", 87 * MIN, 87), play("m1", "COMPLETE", 90 * MIN, 90)])
    assert view["watched"] == ["m1"]
    assert view["continue"] == []


def test_partly_watched_title_is_continue_with_its_position():
    view = view_of([play("m2", "START", 0, 0), play("m2", "HEARTBEAT", 20 * MIN, 20), play("m2", "STOP", 21 * MIN, 21)])
    assert view["watched"] == []
    assert [(c["item_id"], c["position_ms"], c["duration_ms"]) for c in view["continue"]] == [("m2", 21 * MIN, 90 * MIN)]


def test_a_few_seconds_is_a_short_view_not_continue_watching():
    view = view_of([play("m3", "START", 0, 0), play("m3", "STOP", 40_000, 0.7)])
    assert view["continue"] == [] and view["watched"] == []


def test_stop_near_the_end_counts_as_watched():
    view = view_of([play("m4", "START", 0, 0), play("m4", "STOP", 88 * MIN, 88)])
    assert view["watched"] == ["m4"] and view["continue"] == []


def test_rewatch_in_progress_shows_in_continue_and_stays_watched():
    first = [play("m5", "START", 0, 0), play("m5", "COMPLETE", 90 * MIN, 90)]
    again = [play("m5", "START", 0, 1000), play("m5", "STOP", 30 * MIN, 1030)]
    view = view_of(first + again)
    assert view["watched"] == ["m5"]
    assert [c["item_id"] for c in view["continue"]] == ["m5"]


def test_lists_are_newest_first():
    view = view_of([play("a", "START", 0, 0), play("a", "STOP", 10 * MIN, 10),
                    play("b", "START", 0, 100), play("b", "STOP", 10 * MIN, 110),
                    play("c", "START", 0, 200), play("c", "COMPLETE", 90 * MIN, 290),
                    play("d", "START", 0, 300), play("d", "COMPLETE", 90 * MIN, 390)])
    assert [c["item_id"] for c in view["continue"]] == ["b", "a"]
    assert view["watched"] == ["d", "c"]


def test_seek_back_moves_the_resume_position_back():
    view = view_of([play("m6", "START", 0, 0), play("m6", "HEARTBEAT", 40 * MIN, 40), play("m6", "SEEK", 10 * MIN, 41),
                    play("m6", "STOP", 11 * MIN, 42)])
    assert view["continue"][0]["position_ms"] == 11 * MIN


def test_applying_events_twice_or_shuffled_gives_the_same_state():
    titles = synthetic_titles(120, seed=3)
    events = [e for topic, e in generate(titles, StreamConfig(viewers=5, guest_share=0.0), seed=3) if topic == "playback"]
    by_viewer: dict[str, list[dict]] = {}
    for event in events:
        by_viewer.setdefault(event["user_id"], []).append(event)
    viewer, own = max(by_viewer.items(), key=lambda kv: len(kv[1]))
    once = apply_events(None, own).state
    redelivered = apply_events(once, own[len(own) // 2:])
    assert not redelivered.changed
    assert redelivered.state == once
    shuffled = own[:]
    random.Random(5).shuffle(shuffled)
    assert apply_events(None, shuffled).state == once
    in_two_batches = apply_events(apply_events(None, own[:7]).state, own[7:]).state
    assert in_two_batches == once


def test_input_state_is_not_modified():
    state = apply_events(None, [play("m7", "START", 0, 0)]).state
    snapshot = repr(state)
    apply_events(state, [play("m7", "STOP", 30 * MIN, 30), play("m8", "START", 0, 31)])
    assert repr(state) == snapshot


def test_bad_events_are_rejected_with_a_code_and_the_rest_applied():
    bad_position = play("m9", "STOP", -5, 1)
    no_item = {**play("x", "START", 0, 2), "item_id": ""}
    naive = {**play("m10", "START", 0, 3), "event_time": datetime(2026, 11, 1)}
    update = apply_events(None, [play("m9", "START", 0, 0), bad_position, no_item, naive, play("m9", "STOP", 30 * MIN, 30)])
    assert [(i, e.code) for i, e in update.rejected] == [(1, "BAD_POSITION"), (2, "MISSING_ITEM"), (3, "NAIVE_TIME")]
    assert [c["item_id"] for c in history_view(update.state)["continue"]] == ["m9"]


def test_series_progress_is_the_latest_finished_episode():
    titles = synthetic_titles(60, seed=1)
    episodes = [t for t in titles if t["series_id"] == "series0"]
    e1, e2, e3 = episodes[0], episodes[1], episodes[2]
    events = [play(e1["item_id"], "COMPLETE", 45 * MIN, 0, 45 * MIN), play(e2["item_id"], "COMPLETE", 45 * MIN, 50, 45 * MIN),
              play(e3["item_id"], "STOP", 10 * MIN, 100, 45 * MIN)]
    lookup = series_lookup_from_titles(titles)
    view = view_of(events, series_of=lookup.get)
    assert view["series"] == {"series0": {"season": e2["season"], "episode": e2["episode"], "item_id": e2["item_id"]}}
    assert [c["item_id"] for c in view["continue"]] == [e3["item_id"]]


def test_devices_keep_the_latest_app_version():
    view = view_of([play("a", "START", 0, 0, device="TV", app_version="3.2.0"),
                    play("b", "START", 0, 5, device="TV", app_version="4.1.2"),
                    play("c", "START", 0, 3, device="MOBILE", app_version="4.0.0")])
    assert viewer_devices(view) == {"MOBILE": "4.0.0", "TV": "4.1.2"}


def test_state_keeps_only_the_most_recent_titles():
    events = [play(f"m{i}", "START", 0, i) for i in range(10)]
    state = apply_events(None, events, HistoryPolicy(max_items=4)).state
    assert sorted(state["items"]) == ["m6", "m7", "m8", "m9"]


def test_user_history_for_the_showcase():
    view = view_of([play("a", "START", 0, 0), play("a", "COMPLETE", 90 * MIN, 90),
                    play("b", "START", 0, 100), play("b", "STOP", 30 * MIN, 130)])
    history = user_history(view)
    assert history.continue_watching == ("b",)
    assert history.watched == ("a",)
    assert history.recent == ("b", "a")
    assert user_history(None).is_empty


def test_continue_watching_holds_one_entry_per_series_its_latest_episode():
    titles = synthetic_titles(60, seed=1)
    e1, e2, e3 = [t for t in titles if t["series_id"] == "series0"][:3]
    lookup = series_lookup_from_titles(titles).get
    stopped_twice = [play(e1["item_id"], "STOP", 20 * MIN, 0, 45 * MIN), play(e2["item_id"], "STOP", 15 * MIN, 30, 45 * MIN),
                     play("film", "STOP", 30 * MIN, 40)]
    view = view_of(stopped_twice, series_of=lookup)
    assert [c["item_id"] for c in view["continue"]] == ["film", e2["item_id"]]
    assert len(view_of(stopped_twice)["continue"]) == 3  # without the catalogue nothing is merged
    finished_next = stopped_twice + [play(e3["item_id"], "COMPLETE", 45 * MIN, 90, 45 * MIN)]
    assert [c["item_id"] for c in view_of(finished_next, series_of=lookup)["continue"]] == ["film"]
