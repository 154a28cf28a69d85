"""Rank-based AUC against a brute-force pair count, ties and single-class cases."""

from __future__ import annotations

import numpy as np
import pytest

from processors.ranking.metrics import pxtr_matrix, roc_auc, task_aucs


def brute_force_auc(labels, scores):
    pos = [s for s, y in zip(scores, labels, strict=False) if y]
    neg = [s for s, y in zip(scores, labels, strict=False) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # rounding makes many ties
    assert roc_auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores))


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], 0.0),
        ([0, 1], [0.5, 0.5], 0.5),
        ([1, 1, 1], [0.1, 0.2, 0.3], None),
        ([0, 0], [0.1, 0.2], None),
        ([], [], None),
    ],
)
def test_edge_cases(labels, scores, expected):
    assert roc_auc(np.array(labels), np.array(scores)) == expected


def test_shape_mismatch_and_task_matrix():
    with pytest.raises(ValueError):
        roc_auc(np.array([0, 1]), np.array([0.1]))
    labels = np.array([[1, 0, 0, 1], [0, 0, 1, 1]])
    preds = np.array([[0.9, 0.1, 0.2, 0.3], [0.1, 0.2, 0.8, 0.4]])
    assert task_aucs(labels, preds) == {"evr": 1.0, "lvr": None, "svr": 1.0, "fpr": None}
    samples = [{"pxtr": {"evr": 0.5, "svr": 0.25}}, {"pxtr": None}]
    assert pxtr_matrix(samples).tolist() == [[0.5, 0.0, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]]
