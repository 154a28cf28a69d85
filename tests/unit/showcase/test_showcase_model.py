"""Parsing of contract dicts into the model: clear machine-readable errors, never a crash."""
from __future__ import annotations

from datetime import datetime

import pytest

from processors.showcase import CatalogueIndex, ShelfDef, ShowcaseInputError, ShowcasePolicy, Stats, Title, UserHistory, Viewer
from processors.showcase.view import from_view

from support.showcase import DAY, NOW, rule, shelf_dict, title_dict


def test_title_from_contract_dict():
    t = Title.from_dict(
        title_dict(
            "m1", genres=["Drama", " Comedy ", "drama"], tags=["Sign Language"], device_rights=["tv", "STB"],
            editorial_flags=["Banner"], licence_start=(NOW - DAY).isoformat(), rating=8,
        )
    )
    assert t.genres == ("drama", "comedy")
    assert t.tags == frozenset({"sign language"}) and t.editorial_flags == frozenset({"banner"})
    assert t.device_rights == frozenset({"TV", "STB"})
    assert t.licence_start == NOW - DAY and t.rating == 8.0
    assert not t.is_episode and not t.is_series
    episode = Title.from_dict(title_dict("e", series_id="s", episode=2))
    assert episode.is_episode and episode.season == 1


@pytest.mark.parametrize(
    "overrides, code, field",
    [
        ({"item_id": None}, "missing_field", "item_id"),
        ({"item_id": 17}, "invalid_field", "item_id"),
        ({"age_rating": 13}, "invalid_field", "age_rating"),
        ({"age_rating": "16"}, "invalid_field", "age_rating"),
        ({"kids": "yes"}, "invalid_field", "kids"),
        ({"genres": "drama"}, "invalid_field", "genres"),
        ({"device_rights": ["TV", "FRIDGE"]}, "invalid_field", "device_rights"),
        ({"licence_start": datetime(2024, 1, 1)}, "naive_datetime", "licence_start"),
        ({"licence_start": "soon"}, "invalid_field", "licence_start"),
        ({"licence_start": NOW, "licence_end": NOW - DAY}, "invalid_field", "licence_end"),
        ({"episode": 3}, "invalid_field", "series_id"),
        ({"rating": float("nan")}, "invalid_field", "rating"),
    ],
)
def test_bad_title_is_a_clear_error(overrides, code, field):
    with pytest.raises(ShowcaseInputError) as info:
        Title.from_dict({**title_dict("bad"), **overrides})
    assert (info.value.code, info.value.field) == (code, field)
    assert info.value.to_dict()["error"] == code


def test_not_a_mapping():
    with pytest.raises(ShowcaseInputError) as info:
        Title.from_dict(["m1"])
    assert info.value.code == "not_a_mapping"


def test_shelf_def_parsing():
    d = ShelfDef.from_dict(
        shelf_dict(
            "s", "auto", device_types=["mobile"], min_app_version="3.2", rule=rule(genres=["Comedy"], sort="newest"),
            links=[{"kind": "shelf", "target": "x", "cover": "c.jpg"}, {"kind": "url", "target": "https://e.org"}],
            item_ids=["a", "b", "a"],
        )
    )
    assert d.kind == "AUTO" and d.device_types == frozenset({"MOBILE"})
    assert d.rule.genres == frozenset({"comedy"}) and d.rule.sort == "NEWEST" and d.rule.limit == 100
    assert [l.kind for l in d.links] == ["COLLECTION", "WEB"]
    assert d.item_ids == ("a", "b")


@pytest.mark.parametrize(
    "overrides, code",
    [
        ({"kind": "CAROUSEL_OF_DOOM"}, "invalid_field"),
        ({"kind": "AUTO", "rule": None}, "auto_shelf_without_rule"),
        ({"rule": rule(sort="RANDOM")}, "invalid_field"),
        ({"rule": rule(limit=0)}, "invalid_field"),
        ({"min_app_version": "three"}, "invalid_version"),
        ({"min_app_version": "3.0", "max_app_version": "2.0"}, "invalid_field"),
        ({"template_slot": 0}, "invalid_field"),
        ({"links": "x"}, "invalid_field"),
        ({"links": [{"kind": "WEB"}]}, "missing_field"),
    ],
)
def test_bad_shelf_def_is_a_clear_error(overrides, code):
    with pytest.raises(ShowcaseInputError) as info:
        ShelfDef.from_dict({**shelf_dict("s", "VOD"), **overrides})
    assert info.value.code == code


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"device_type": "FRIDGE"}, "invalid_field"),
        ({"now": datetime(2024, 1, 1)}, "naive_datetime"),
        ({"age_limit": -1}, "invalid_field"),
        ({"app_version": "new"}, "invalid_version"),
        ({"user_id": ""}, "invalid_field"),
    ],
)
def test_bad_viewer_is_a_clear_error(kwargs, code):
    base = {"user_id": "u", "device_type": "TV", "now": NOW}
    with pytest.raises(ShowcaseInputError) as info:
        Viewer(**{**base, **kwargs})
    assert info.value.code == code


def test_viewer_and_history_from_dicts():
    viewer = Viewer.from_dict({"user_id": None, "device_type": "mobile", "now": NOW.isoformat(), "app_version": "3.1"})
    assert viewer.is_guest and viewer.user_key == "guest" and viewer.device_type == "MOBILE"
    history = UserHistory.from_dict(
        {"continue_watching": ["a"], "watched": ["b", "c"], "series_progress": {"s": {"season": 2, "episode": 5}, "t": [1, 1]}}
    )
    assert history.recent == ("a", "b", "c") and history.series_progress == {"s": (2, 5), "t": (1, 1)}
    with pytest.raises(ShowcaseInputError):
        UserHistory.from_dict({"series_progress": {"s": {"season": "two"}}})
    with pytest.raises(ShowcaseInputError):
        Stats.from_dict({"ctr": {"a": "high"}})


def test_index_skips_bad_records_and_lists_them():
    titles = [title_dict("ok"), title_dict("bad", age_rating=99), {"title": "no id"}]
    defs = [shelf_dict("s", "VOD", item_ids=["ok"]), shelf_dict("broken", "AUTO")]
    index = CatalogueIndex.build(titles, defs, now=NOW)
    assert set(index.titles) == {"ok"} and set(index.defs_by_id) == {"s"}
    assert sorted((r["kind"], r["error"], r["record_id"]) for r in index.rejected) == [
        ("shelf", "auto_shelf_without_rule", "broken"),
        ("title", "invalid_field", "bad"),
        ("title", "missing_field", None),
    ]


@pytest.mark.parametrize(
    "params, check",
    [
        ({"series_return": "new_season"}, lambda p: p.series_return == "NEW_SEASON"),
        ({"for_you.mmr_lambda": "0.4"}, lambda p: p.for_you.mmr_lambda == 0.4),
        ({"unknown_knob": "1"}, lambda p: p == ShowcasePolicy()),
        ({"min_shelves": "2"}, lambda p: p.min_shelves == 2),
    ],
)
def test_ab_overrides(params, check):
    assert check(ShowcasePolicy().with_overrides(params))


@pytest.mark.parametrize("params", [{"series_return": "sometimes"}, {"boost_ctr_delta": "2"}, {"min_shelves": "0"}])
def test_bad_ab_override(params):
    with pytest.raises(ShowcaseInputError) as info:
        ShowcasePolicy().with_overrides(params)
    assert info.value.code == "invalid_param"


def test_from_view_rejects_garbage():
    with pytest.raises(ShowcaseInputError) as info:
        from_view({"meta": {"schema": 1}})
    assert info.value.code == "invalid_view"
