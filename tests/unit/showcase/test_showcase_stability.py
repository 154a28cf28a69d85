"""Stability: at most one showcase change per user per day, unless forced; unchanged content is not written."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from processors.showcase import Viewer, assemble, content_hash, from_view, should_replace, to_view, view_meta
from processors.showcase.view import VIEW_SCHEMA

from support.showcase import NOW, ids, vod_world

HOUR = timedelta(hours=1)


def _meta(built_at, content="h1", fallback=False, schema=VIEW_SCHEMA):
    return {"schema": schema, "version": 3, "built_at": built_at.isoformat(), "content_hash": content, "is_fallback": fallback}


@pytest.mark.parametrize(
    "previous, now, force, new, replace_it, reason",
    [
        (None, NOW, False, None, True, "first_build"),
        (_meta(NOW - 2 * HOUR), NOW, False, _meta(NOW, "h2"), False, "too_soon"),
        (_meta(NOW - 23 * HOUR), NOW, False, None, False, "too_soon"),
        (_meta(NOW - 24 * HOUR), NOW, False, _meta(NOW, "h2"), True, "daily_refresh"),
        (_meta(NOW - 2 * HOUR), NOW, True, _meta(NOW, "h2"), True, "forced"),
        (_meta(NOW - 30 * HOUR), NOW, False, _meta(NOW, "h1"), False, "unchanged"),
        (_meta(NOW - 2 * HOUR), NOW, True, _meta(NOW, "h1"), False, "unchanged"),
        (_meta(NOW - 2 * HOUR, fallback=True), NOW, False, _meta(NOW, "h2"), True, "previous_was_fallback"),
        (_meta(NOW - 30 * HOUR), NOW, False, _meta(NOW, "h2", fallback=True), False, "keep_previous_over_fallback"),
        (_meta(NOW - 80 * HOUR), NOW, False, _meta(NOW, "h2", fallback=True), True, "daily_refresh"),
        (_meta(NOW + 2 * HOUR), NOW, False, None, False, "too_soon"),  # clock skew: stored in the future
        (_meta(NOW - 30 * HOUR, schema=0), NOW, False, None, True, "schema_changed"),
        ({"built_at": "yesterday"}, NOW, False, None, True, "previous_unreadable"),
        ({"content_hash": "h1"}, NOW, False, None, True, "previous_unreadable"),
    ],
)
def test_should_replace(previous, now, force, new, replace_it, reason):
    decision = should_replace(previous, now, force, new_meta=new)
    assert (decision.replace, decision.reason) == (replace_it, reason)
    assert bool(decision) is replace_it


def test_min_interval_is_configurable():
    previous = _meta(NOW - 7 * HOUR)
    assert not should_replace(previous, NOW, new_meta=_meta(NOW, "h2"))
    assert should_replace(previous, NOW, new_meta=_meta(NOW, "h2"), min_interval=6 * HOUR).reason == "daily_refresh"


def test_one_change_per_day_over_a_stream_of_builds():
    """Rebuild every 3 hours for 3 days; the catalogue grows each time, the stored showcase changes daily."""
    stored = None
    writes = []
    for step in range(24):
        now = NOW + step * 3 * HOUR
        index = vod_world({"s": ids("t", 6 + step)}, min_shelves=1)
        built = assemble(index, Viewer(user_id="u", device_type="WEB", now=now), version=step)
        meta = view_meta(built)
        if should_replace(stored, now, new_meta=meta):
            stored = meta
            writes.append(step)
    assert writes == [0, 8, 16]


def test_view_round_trip_and_hash():
    index = vod_world({"a": ids("a", 8), "b": ids("b", 8)}, min_shelves=1)
    showcase = assemble(index, Viewer(user_id="u", device_type="TV", now=NOW), version=7)
    view = to_view(showcase)
    assert view["meta"]["version"] == 7 and view["meta"]["content_hash"] == content_hash(showcase)
    import json

    back = from_view(json.loads(json.dumps(view)))
    assert back.shelves == showcase.shelves and back.built_at == showcase.built_at
    assert content_hash(back) == content_hash(showcase)
    later = replace(showcase, built_at=NOW + HOUR, version=8)
    assert content_hash(later) == content_hash(showcase)  # time and version do not change the content
    reordered = replace(showcase, shelves=showcase.shelves[::-1])
    assert content_hash(reordered) != content_hash(showcase)


def test_daily_novelty_check_flags_an_unchanged_personal_showcase():
    from processors.showcase import daily_checks

    index = vod_world({"a": ids("a", 8), "b": ids("b", 8)}, min_shelves=1)
    personal = assemble(index, Viewer(user_id="u", device_type="TV", now=NOW))
    same = content_hash(personal)
    assert "showcase_not_refreshed" in {a.code for a in daily_checks(personal, index, previous_hash=same)}
    assert "showcase_not_refreshed" not in {a.code for a in daily_checks(personal, index, previous_hash="other")}
    guest = assemble(index, Viewer(user_id=None, device_type="TV", now=NOW))
    assert "showcase_not_refreshed" not in {a.code for a in daily_checks(guest, index, previous_hash=content_hash(guest))}
