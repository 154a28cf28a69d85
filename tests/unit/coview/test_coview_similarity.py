from __future__ import annotations

import math

import pytest

from processors.coview.cooccurrence import DAY_MS, CoviewConfig
from processors.coview.memory import CoviewIndex
from processors.coview.sessionize import ViewCompleted
from processors.coview.similarity import MEASURES, SimilarityConfig, aggregate_similar, llr, pair_score, top_similar

# Hand-computed example: title i in 10 sessions, j in 5, together in 4, 100 sessions.
# 2x2 table k11=4, k12=6, k21=1, k22=89; expected counts 0.5, 9.5, 4.5, 85.5.
G2 = 2 * (4 * math.log(4 / 0.5) + 6 * math.log(6 / 9.5) + 1 * math.log(1 / 4.5) + 89 * math.log(89 / 85.5))

HAND_CASES = [
    ("cosine", 4 / math.sqrt(10 * 5)),     # 0.565685
    ("jaccard", 4 / (10 + 5 - 4)),         # 0.363636
    ("lift", 8 / 9),                       # lift 4*100/(10*5) = 8 -> 8 / (1 + 8)
    ("llr", 1 - 1 / (1 + G2)),             # G2 = 15.2543 -> 0.938478
]


@pytest.mark.parametrize("measure, expected", HAND_CASES)
def test_measures_on_a_hand_computed_example(measure, expected):
    assert pair_score(measure, 4.0, 10.0, 5.0, 100.0) == pytest.approx(expected, rel=1e-9)


def test_llr_value():
    assert G2 == pytest.approx(15.2543, abs=1e-4)
    assert llr(4, 6, 1, 89) == pytest.approx(G2, rel=1e-12)
    assert llr(5, 5, 5, 5) == pytest.approx(0.0, abs=1e-12)  # independent


@pytest.mark.parametrize("measure", MEASURES)
def test_no_co_views_score_zero(measure):
    assert pair_score(measure, 0.0, 10.0, 5.0, 100.0) == 0.0
    assert pair_score(measure, 1.0, 10.0, 0.0, 100.0) == 0.0


def test_llr_ignores_negative_association():
    # j is in 50% of all sessions but only 10% of sessions with i
    assert pair_score("llr", 1.0, 10.0, 50.0, 100.0) == 0.0
    assert pair_score("llr", 9.0, 10.0, 50.0, 100.0) > 0.0


@pytest.mark.parametrize("measure", MEASURES)
def test_scores_are_normalised(measure):
    for co, n_i, n_j, total in [(1, 1, 1, 1), (5, 5, 5, 1000), (1, 100, 3, 1000), (50, 60, 70, 100)]:
        assert 0.0 <= pair_score(measure, co, n_i, n_j, total) <= 1.0


def _views(session, items, t=1_700_000_000_000):
    return [ViewCompleted("u", session, item, p, 1, 1, t, tuple(reversed(items[: p - 1])))
            for p, item in enumerate(items, 1)]


def build(sessions, config=CoviewConfig(window=1, weighting="flat", half_life_ms=None)):
    index = CoviewIndex(config)
    for n, items in enumerate(sessions):
        for view in _views(f"s{n}", list(items)):
            index.add_view(view)
    return index


def test_top_similar_orders_filters_and_cuts():
    # a-b together 3 times, a-c twice, a-d once; d is also very popular
    index = build(["ab", "ab", "ab", "ac", "ac", "ad"] + ["dx"] * 10)
    now = 1_700_000_000_000
    cosine = index.similar("a", now, SimilarityConfig(measure="cosine", min_support=0))
    assert [i for i, _ in cosine] == ["b", "c", "d"]
    assert cosine[0][1] == pytest.approx(3 / math.sqrt(6 * 3))
    assert [i for i, _ in index.similar("a", now, SimilarityConfig(measure="cosine", min_support=2))] == ["b", "c"]
    assert len(index.similar("a", now, SimilarityConfig(measure="cosine", k=1, min_support=0))) == 1
    assert index.similar("unknown", now) == []


def test_top_similar_ignores_pruned_resolution():
    state = {"L": 0, "n": 10.0, "nb": {"b": 3.0, "c": 1.0}, "err": 2.0, "t": 0}
    got = top_similar(state, lambda j: 5.0, 100.0, 0, None, SimilarityConfig(measure="cosine", min_support=0))
    assert [i for i, _ in got] == ["b"]


def test_very_old_counts_do_not_break_scoring():
    index = build(["ab", "ab"], CoviewConfig(window=1, half_life_ms=DAY_MS))
    far = 1_700_000_000_000 + 5000 * DAY_MS
    for measure in MEASURES:
        got = index.similar("a", far, SimilarityConfig(measure=measure, min_support=0))
        assert all(0.0 <= s <= 1.0 for _, s in got)


def test_config_is_validated():
    with pytest.raises(ValueError):
        SimilarityConfig(measure="pearson")
    with pytest.raises(ValueError):
        SimilarityConfig(k=0)


def test_aggregate_similar_weights_recent_titles_more_and_excludes_seen():
    newest = [("x", 0.6), ("y", 0.2), ("seen", 0.9)]
    older = [("y", 0.8), ("z", 0.5)]
    got = aggregate_similar([newest, older], exclude={"seen"}, k=2)
    # x: 0.6; y: 0.2 + 0.8 / 2 = 0.6; z: 0.5 / 2 = 0.25 -> ties broken by id, descending
    assert [i for i, _ in got] == ["y", "x"]
    assert dict(got) == pytest.approx({"y": 0.6, "x": 0.6})
    assert aggregate_similar([], k=3) == []
