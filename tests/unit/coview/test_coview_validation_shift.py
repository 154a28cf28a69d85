"""The validation-window check of the quality bench (bench/quality/validation_shift.py): its pure helpers."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # ``bench`` is not an installed package
    sys.path.insert(0, str(ROOT))

from bench.quality.protocol import Session, Slice, evaluate
from bench.quality.validation_shift import buckets, by_session, density, per_target, rating_pace
from processors.coview.cooccurrence import DAY_MS
from processors.coview.sessionize import ViewCompleted


def test_buckets_split_targets_by_titles_already_seen() -> None:
    gains = [(0, 0, 1.0), (0, 9, 0.0), (1, 10, 0.5), (1, 99, 0.5), (2, 100, 0.25), (2, 500, 0.75)]
    got = buckets(gains)
    assert [b["seen"] for b in got] == ["0-9", "10-29", "30-99", ">=100"]
    assert [b["targets"] for b in got] == [2, 1, 1, 2]
    assert [b["ndcg10"] for b in got] == [0.5, 0.5, 0.5, 0.5]


def test_an_empty_bucket_has_no_mean() -> None:
    assert buckets([(0, 3, 1.0)])[3] == {"seen": ">=100", "targets": 0, "ndcg10": None}


def test_by_session_keeps_each_sessions_gains_in_order() -> None:
    assert by_session([(1, 0, 0.2), (0, 0, 0.1), (1, 1, 0.3)]) == [[0.1], [0.2, 0.3]]


def test_density_counts_the_views_before_the_cut_and_their_decayed_mass() -> None:
    cut = 4000 * DAY_MS
    times = sorted([cut - 100 * DAY_MS, cut - 400 * DAY_MS, cut - 1000 * DAY_MS, cut, cut + DAY_MS])
    got = density(times, cut, half_life_ms=400 * DAY_MS)
    assert got["views"] == 3  # the view at the cut and the one after it are not fit data
    assert (got["last_180_days"], got["last_365_days"], got["last_730_days"], got["last_1460_days"]) == (1, 1, 2, 3)
    assert got["decayed_mass"] == round(2 ** -0.25 + 2 ** -1 + 2 ** -2.5)
    # a view one half-life old weighs a half, two half-lives old a quarter
    aged = sorted([cut - 400 * DAY_MS] * 1000 + [cut - 800 * DAY_MS] * 1000)
    assert density(aged, cut, half_life_ms=400 * DAY_MS)["decayed_mass"] == 750
    assert "decayed_mass" not in density(times, cut, half_life_ms=None)


class _Fixed:
    """Scores every prefix the same: title 0 first."""

    def scores(self, prefixes):
        return np.tile(np.array([3.0, 2.0, 1.0]), (len(prefixes), 1))


def test_per_target_gains_average_to_the_protocols_figure() -> None:
    fit = [Session("f1", "u", ["a", "b", "c"], [0, 1, 2]), Session("f2", "u", ["a", "b"], [3, 4])]
    evaluate_on = [Session("e1", "v", ["a", "c", "b"], [10, 11, 12]), Session("e2", "w", ["b", "a"], [20, 21])]
    data = Slice("validation", fit, evaluate_on, 5).prepare()
    gains = per_target(_Fixed(), data)
    assert [seen for _, seen, _ in gains] == [1, 2, 1]
    assert np.mean([g for *_, g in gains]) == pytest.approx(evaluate(_Fixed(), data)["ndcg10"])


def _view(session: str, at_s: int) -> ViewCompleted:
    return ViewCompleted("viewer", session, "title", 1, 4000, 8000, at_s * 1000, ())


def test_rating_pace_counts_gaps_within_a_session_that_end_inside_the_span() -> None:
    views = [_view("s1", 0), _view("s2", 1), _view("s1", 3), _view("s1", 100), _view("s2", 30), _view("s1", 104)]
    # gaps: s1 3 s (ends at 3), s1 97 s (at 100), s2 29 s (at 30), s1 4 s (at 104); a session's first view has none
    assert rating_pace(views, None, None) == {"gaps": 4, "share_within_5s": 0.5, "median_gap_s": 16.5}
    # only gaps whose later view is in [30 s, 104 s): the 97 s and 29 s ones
    assert rating_pace(views, 30_000, 104_000) == {"gaps": 2, "share_within_5s": 0.0, "median_gap_s": 63.0}
    assert rating_pace(views, 200_000, None) == {"gaps": 0, "share_within_5s": None, "median_gap_s": None}


def test_the_served_builder_keeps_titles_of_one_session_in_the_model_when_asked() -> None:
    from bench.coview_quality import served_builder, views_of_sessions

    fit = [Session("f1", "u", ["a", "b", "c"], [0, 1000, 2000]), Session("f2", "u", ["a", "b"], [3000, 4000]),
           Session("f3", "w", ["b", "a"], [5000, 6000])]
    data = Slice("validation", fit, [Session("e1", "v", ["c", "a"], [10_000, 11_000])], 9000).prepare()
    build = served_builder(data, views_of_sessions(fit), None)
    base = {"measure": "asymmetric", "window": 20, "min_support": 0.5, "context": 20, "prior": None,
            "model_l2": 1.0, "model_weight": 1.0, "k": 10}
    assert build(base).item_model.similar("c") == []  # "c" is in one session: left out by default
    kept = build(dict(base, model_min_sessions=1)).item_model
    assert "c" in kept.items and kept.similar("c") and {other for other, _ in kept.similar("c")} <= {"a", "b"}
