from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from processors.coview.autoplay import (
    ViewerProfile,
    blocked_reason,
    build_series_index,
    choose_next,
    next_episode,
)

NOW = datetime(2024, 5, 1, 21, 0, tzinfo=timezone.utc)


def title(item_id, **fields):
    record = {"item_id": item_id, "title": item_id, "genres": [], "tags": [], "age_rating": 0, "kids": False,
              "adult": False, "paid": False, "licence_start": None, "licence_end": None, "device_rights": [],
              "series_id": None, "season": None, "episode": None, "duration_ms": 5_400_000}
    record.update(fields)
    return record


def episode(item_id, series, season, number, **fields):
    return title(item_id, series_id=series, season=season, episode=number, **fields)


CATALOGUE = {t["item_id"]: t for t in [
    # a show with a gap in numbering: S1E1, S1E2, S2E1, S2E3
    episode("s1e1", "show", 1, 1), episode("s1e2", "show", 1, 2),
    episode("s2e1", "show", 2, 1), episode("s2e3", "show", 2, 3),
    episode("o1e1", "other", 1, 1), episode("o1e2", "other", 1, 2), episode("o1e3", "other", 1, 3),
    episode("late1", "late", 1, 1), episode("late2", "late", 1, 2, licence_start=NOW + timedelta(days=3)),
    title("film"), title("film2"), title("film3"),
    title("adult", adult=True, age_rating=18),
    title("r16", age_rating=16),
    title("kids", kids=True, age_rating=0),
    title("tv_only", device_rights=["TV", "STB"]),
    title("future", licence_start=NOW + timedelta(days=1)),
    title("expired", licence_end=NOW - timedelta(seconds=1)),
    title("ends_later", licence_end=NOW + timedelta(days=1)),
]}
SERIES = build_series_index(CATALOGUE.values())
USER = ViewerProfile(user_id="u1", device_type="TV", now=NOW)
GUEST = ViewerProfile(user_id=None, device_type="TV", now=NOW)


@pytest.mark.parametrize(
    "current, expected",
    [("s1e1", "s1e2"), ("s1e2", "s2e1"), ("s2e1", "s2e3"), ("s2e3", None), ("film", None)],
)
def test_next_episode_then_first_of_next_season(current, expected):
    assert next_episode(CATALOGUE[current], SERIES) == expected


def test_series_index_is_ordered():
    assert [e[2] for e in SERIES["show"]] == ["s1e1", "s1e2", "s2e1", "s2e3"]


def test_autoplay_prefers_the_next_episode_over_similar_titles():
    decision = choose_next("s1e2", [("film", 0.9)], CATALOGUE, set(), USER, SERIES)
    assert (decision.item_id, decision.reason) == ("s2e1", "next_episode")


def test_last_episode_falls_back_to_similar_skipping_the_same_series():
    decision = choose_next("s2e3", [("s1e1", 0.9), ("film", 0.5)], CATALOGUE, set(), USER, SERIES)
    assert (decision.item_id, decision.reason) == ("film", "similar")
    assert ("s1e1", "same_series") in decision.skipped


def test_next_episode_not_yet_licensed_falls_back_to_similar():
    decision = choose_next("late1", [("film", 0.5)], CATALOGUE, set(), USER, SERIES)
    assert decision.item_id == "film"
    assert decision.skipped[0] == ("late2", "licence_not_started")


def test_similar_episode_of_another_show_starts_at_its_first_unwatched_episode():
    decision = choose_next("film", [("o1e3", 0.9)], CATALOGUE, {"o1e1"}, USER, SERIES)
    assert decision.item_id == "o1e2"


def test_nothing_allowed_gives_none():
    decision = choose_next("film", [("adult", 0.9), ("film", 0.8)], CATALOGUE, set(), GUEST, SERIES)
    assert decision.item_id is None and decision.reason == "none"


# (similar candidate, viewer, watched, expected skip reason or None when allowed)
FILTER_CASES = [
    ("film2", USER, set(), None),
    ("film2", USER, {"film2"}, "watched"),
    ("adult", GUEST, set(), "adult_for_guest"),
    ("adult", USER, set(), None),
    ("adult", ViewerProfile("u1", "TV", NOW, age_limit=16), set(), "age_limit"),
    ("r16", ViewerProfile("u1", "TV", NOW, age_limit=12), set(), "age_limit"),
    ("r16", ViewerProfile("u1", "TV", NOW, age_limit=16), set(), None),
    ("film2", ViewerProfile("kid", "TV", NOW, age_limit=6, kids=True), set(), "not_for_kids"),
    ("kids", ViewerProfile("kid", "TV", NOW, age_limit=6, kids=True), set(), None),
    ("tv_only", ViewerProfile("u1", "MOBILE", NOW), set(), "device_rights"),
    ("tv_only", ViewerProfile("u1", "STB", NOW), set(), None),
    ("future", USER, set(), "licence_not_started"),
    ("expired", USER, set(), "licence_expired"),
    ("ends_later", USER, set(), None),
    ("missing", USER, set(), "unknown_title"),
]


@pytest.mark.parametrize("candidate, viewer, watched, reason", FILTER_CASES)
def test_each_filter(candidate, viewer, watched, reason):
    # "kids" (0+, for children, all devices, always licensed) is allowed for every viewer here
    decision = choose_next("film", [(candidate, 1.0), ("kids", 0.1)], CATALOGUE, watched, viewer, SERIES)
    if reason is None:
        assert decision.item_id == candidate and decision.skipped == ()
    else:
        assert decision.item_id == "kids"
        assert decision.skipped == ((candidate, reason),)


def test_bad_licence_dates_are_blocked_not_crashing():
    naive = title("naive", licence_end=datetime(2030, 1, 1))
    assert blocked_reason(naive, USER) == "invalid_licence_window"


@pytest.mark.parametrize("streak, prompt", [(0, False), (2, False), (3, True), (7, True)])
def test_still_watching_prompt_after_three_in_a_row(streak, prompt):
    viewer = ViewerProfile("u1", "TV", NOW, autoplay_streak=streak)
    assert choose_next("film", [("film2", 1.0)], CATALOGUE, set(), viewer, SERIES).still_watching_prompt is prompt


def test_catalogue_may_be_a_lookup_function():
    decision = choose_next("s1e1", [], CATALOGUE.get, set(), USER, SERIES)
    assert decision.item_id == "s1e2"
