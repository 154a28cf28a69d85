"""The fair bench's protocol (bench/quality/protocol.py): ties, targets, ranking, the test-read log."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # ``bench`` is not an installed package
    sys.path.insert(0, str(ROOT))

from bench.quality.baselines import (
    ItemItem,
    Popularity,
    ease_matrix,
    fit_matrix,
    sar_matrix,
)
from bench.quality.protocol import (
    Session,
    Slice,
    TestLog,
    evaluate,
    paired_bootstrap,
    targets_of,
)


def _slice(fit, evaluate_sessions):
    return Slice("t", fit, evaluate_sessions, cut_ms=10_000).prepare()


def test_same_second_events_are_one_unordered_target():
    index = {"a": 0, "b": 1, "c": 2, "d": 3}
    session = Session("s", "u", ["a", "c", "b", "d"], [0, 1000, 1000, 2000])
    targets = list(targets_of([session], index))
    assert len(targets) == 2
    first, second = targets
    assert sorted(first.wanted) == [1, 2]  # b and c share a second: either counts
    assert first.prefix.seq == [0]
    assert second.wanted == [3]
    assert second.prefix.seq == [0, 1, 2]  # ties in item order, never file order
    assert second.prefix.recent == [(1, 1), (2, 1), (0, 2)]  # same distance for the tie group


def test_repeated_titles_are_dropped_and_unknown_titles_stay_misses():
    index = {"a": 0, "b": 1}
    session = Session("s", "u", ["a", "b", "a", "z"], [0, 1, 2, 3])
    targets = list(targets_of([session], index))
    assert [t.wanted for t in targets] == [[1], [-1]]


def test_ndcg_takes_the_best_ranked_title_of_a_tie_group_and_ties_break_by_popularity():
    fit = [Session("f1", "u1", ["a", "b"], [0, 1]), Session("f2", "u2", ["a", "c"], [0, 1]),
           Session("f3", "u3", ["a", "b"], [0, 1])]
    held = [Session("e", "u9", ["a", "c", "b"], [5, 6, 6])]
    data = _slice(fit, held)
    assert data.catalogue == ["a", "b", "c"]
    result = evaluate(Popularity(data), data)
    # "a" is excluded; b ranks first by popularity: the group {b, c} is a hit at rank 1
    assert result["ndcg10"] == pytest.approx(1.0)

    class Reverse:
        def scores(self, prefixes):
            return np.tile(np.array([0.0, 0.0, 1.0]), (len(prefixes), 1))

    assert evaluate(Reverse(), data)["ndcg10"] == pytest.approx(1.0)

    class Zero:
        def scores(self, prefixes):
            return np.zeros((len(prefixes), 3))

    held = [Session("e", "u9", ["a", "c"], [5, 6])]
    data = _slice(fit, held)
    # all scores tie: c ranks after b (less popular) -> rank 2
    assert evaluate(Zero(), data)["ndcg10"] == pytest.approx(1.0 / math.log2(3))


def test_the_test_slice_is_read_once_per_method():
    log = TestLog()
    log.read("d", "m", {}, lambda: {"ndcg10": 0.5})
    with pytest.raises(RuntimeError):
        log.read("d", "m", {"other": 1}, lambda: {"ndcg10": 0.6})
    assert [r["method"] for r in log.reads] == ["m"]


def test_paired_bootstrap_sign():
    ours = [[1.0, 0.0], [1.0], [0.5]]
    theirs = [[0.0, 0.0], [0.5], [0.5]]
    result = paired_bootstrap(ours, theirs, rounds=200)
    assert result["ndcg10_diff"] > 0
    assert result["ci95"][0] >= 0
    assert paired_bootstrap(theirs, ours, rounds=200)["ndcg10_diff"] < 0


def test_ease_and_sar_rank_the_co_occurring_title_first():
    fit = [Session(f"s{i}", f"u{i}", ["a", "b"], [0, 1]) for i in range(5)]
    fit += [Session(f"t{i}", f"v{i}", ["c", "d"], [0, 1]) for i in range(5)]
    data = _slice(fit, [Session("e", "w", ["a", "b"], [5, 6])])
    x = fit_matrix(data, "session")
    for matrix in (ease_matrix(x, 1.0), sar_matrix((x.T @ x).toarray(), "jaccard")):
        assert evaluate(ItemItem(matrix, context=3), data)["ndcg10"] == pytest.approx(1.0)
