"""Final ranking score from the four task probabilities (TF-free, used on device)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from processors.ranking.errors import RankingInputError
from processors.ranking.tasks import TASKS

DEFAULT_SCORE_WEIGHTS: dict[str, float] = {"evr": 1.0, "lvr": 0.5, "svr": -1.0, "fpr": 0.5}
"""Final score = sum(weight * p(task)); svr (abandoned within 3 s) counts against."""


def final_scores(predictions: np.ndarray, weights: Mapping[str, float] = DEFAULT_SCORE_WEIGHTS) -> np.ndarray:
    """(n, 4) task probabilities -> (n,) scores with the configured task weights."""
    unknown = set(weights) - set(TASKS)
    if unknown:
        raise RankingInputError("bad_score_weights", f"unknown tasks {sorted(unknown)}", field="weights")
    vector = np.asarray([float(weights.get(task, 0.0)) for task in TASKS], dtype=np.float64)
    return np.asarray(predictions, dtype=np.float64) @ vector
