"""Rank-based ROC AUC in numpy (Mann-Whitney U with average ranks for ties)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from processors.ranking.tasks import TASKS


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUC of ``scores`` for binary ``labels``; None when only one class is present."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    group_end = np.cumsum(counts)
    average_rank = group_end - (counts - 1) / 2.0  # 1-based average rank of each tie group
    rank_sum = float(average_rank[inverse][y].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def task_aucs(labels: np.ndarray, predictions: np.ndarray, tasks: tuple[str, ...] = TASKS) -> dict[str, float | None]:
    """Per-task AUC for (n, len(tasks)) label and prediction matrices."""
    return {task: roc_auc(labels[:, i], predictions[:, i]) for i, task in enumerate(tasks)}


def pxtr_matrix(samples: list[Mapping]) -> np.ndarray:
    """The server's pxtr scores as an (n, 4) matrix (missing -> 0): the GRF baseline."""
    return np.asarray(
        [[float((s.get("pxtr") or {}).get(task) or 0.0) for task in TASKS] for s in samples], dtype=np.float64
    ).reshape(len(samples), len(TASKS))
