"""Normalised similarity from decayed co-view counts, and lazy top-K per title.

Notation at read time ``now`` (all decayed to ``now``): c = co-view weight of
neighbour j in title i's state, n_i / n_j = view counts (sessions containing the
title, since a title counts once per session), N = number of sessions.

- cosine  = c / sqrt(n_i * n_j)                         in [0, 1]
- asymmetric = c / (n_i ** alpha * n_j ** (1 - alpha))  (asymmetric cosine, Aiolli 2013; alpha = 0.5 is
            cosine; alpha > 0.5 penalises a popular neighbour less and a popular source title more, which
            matters when the lists of several recent titles are summed)
- jaccard = c / (n_i + n_j - c)                         in [0, 1]
- lift    = c * N / (n_i * n_j), reported as lift / (1 + lift)          in [0, 1)
- llr     = Dunning's G^2 on the 2x2 table (k11 = c, k12 = n_i - c, k21 = n_j - c,
            k22 = N - n_i - n_j + c), 0 for negative association, reported as
            1 - 1 / (1 + G^2) (Mahout's normalisation)     in [0, 1)

Only neighbours with c >= ``min_support`` (and above the pruning error ``err`` of the
state) are listed. The measure is chosen by ``bench/coview_quality.py``.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

from processors.coview.cooccurrence import TitleState, decayed

__all__ = ["MEASURES", "SimilarityConfig", "pair_score", "llr", "title_count", "top_similar", "aggregate_similar"]

MEASURES = ("cosine", "jaccard", "lift", "llr", "asymmetric")
SUPPORT_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class SimilarityConfig:
    # asymmetric cosine, min support 0.5: best on the validation slices of both MovieLens and RSC15
    # (bench/coview_quality.py; jaccard/1.0 before: RSC15 validation NDCG@10 0.254 -> 0.279, MovieLens 0.0436 -> 0.0440)
    measure: str = "asymmetric"
    k: int = 50
    min_support: float = 0.5  # decayed co-view weight a neighbour needs to be listed
    alpha: float = 0.75  # exponent of the source title's count in the "asymmetric" measure

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}")
        if self.k < 1:
            raise ValueError("k must be >= 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")


def _xlogx(x: float) -> float:
    return x * math.log(x) if x > 0.0 else 0.0


def llr(k11: float, k12: float, k21: float, k22: float) -> float:
    """Dunning's log-likelihood ratio (G^2) of a 2x2 contingency table."""
    total = k11 + k12 + k21 + k22
    matrix = _xlogx(total) - _xlogx(k11) - _xlogx(k12) - _xlogx(k21) - _xlogx(k22)
    rows = _xlogx(total) - _xlogx(k11 + k12) - _xlogx(k21 + k22)
    cols = _xlogx(total) - _xlogx(k11 + k21) - _xlogx(k12 + k22)
    return max(0.0, 2.0 * (rows + cols - matrix))


def pair_score(measure: str, co: float, n_i: float, n_j: float, total: float, alpha: float = 0.75) -> float:
    if co <= 0.0 or n_i <= 0.0 or n_j <= 0.0:
        return 0.0
    # Long-decayed counts can be tiny: avoid products that underflow to 0.
    if measure == "cosine":
        denominator = math.sqrt(n_i) * math.sqrt(n_j)
        return co / denominator if denominator > 0.0 else 0.0
    if measure == "asymmetric":
        denominator = n_i ** alpha * n_j ** (1.0 - alpha)
        return co / denominator if denominator > 0.0 else 0.0
    if measure == "jaccard":
        union = n_i + n_j - co
        return co / union if union > 0.0 else 1.0
    if measure == "lift":
        if total <= 0.0:
            return 0.0
        lift = (co / n_i) * (total / n_j)
        return lift / (1.0 + lift)
    if measure == "llr":
        k12 = max(n_i - co, 0.0)
        k21 = max(n_j - co, 0.0)
        k22 = max(total - n_i - n_j + co, 0.0)
        # Negative association (j is less likely with i than without) is not similarity.
        if co * (k21 + k22) <= k21 * (co + k12):
            return 0.0
        g2 = llr(co, k12, k21, k22)
        return 1.0 - 1.0 / (1.0 + g2)
    raise ValueError(f"unknown measure {measure!r}")


def title_count(state: TitleState | None, now_ms: int, half_life_ms: int | None) -> float:
    if state is None:
        return 0.0
    return decayed(state["n"], state["L"], now_ms, half_life_ms)


def top_similar(
    state: TitleState | None,
    count_of: Callable[[str], float],
    total_sessions: float,
    now_ms: int,
    half_life_ms: int | None,
    config: SimilarityConfig = SimilarityConfig(),
    exclude: str | None = None,
) -> list[tuple[str, float]]:
    """Top-K neighbours of one title, best first; computed on read, not per event.

    ``count_of(j)`` gives neighbour j's decayed view count at ``now_ms`` (0 if unknown).
    """
    if state is None or not state["nb"]:
        return []
    to_now = 1.0 if half_life_ms is None else 2.0 ** ((state["L"] - now_ms) / half_life_ms)
    n_i = state["n"] * to_now
    # co-view terms are rounded to a 2**-20 grid (cooccurrence.py): a single fresh co-view of weight 1 may
    # read as 1 - 5e-7, so support is compared with that much tolerance
    floor = max(config.min_support, state["err"] * to_now) * (1.0 - SUPPORT_TOLERANCE)
    measure = config.measure
    alpha = config.alpha
    scored = []
    for neighbour, stored in state["nb"].items():
        co = stored * to_now
        if co < floor or co <= 0.0 or neighbour == exclude:
            continue
        score = pair_score(measure, co, n_i, count_of(neighbour), total_sessions, alpha)
        if score > 0.0:
            scored.append((score, neighbour))
    best = heapq.nlargest(config.k, scored)
    return [(neighbour, score) for score, neighbour in best]


def aggregate_similar(
    lists_newest_first: Sequence[list[tuple[str, float]]],
    exclude: Collection[str] = (),
    k: int = 10,
) -> list[tuple[str, float]]:
    """Next-title candidates from the similar lists of a viewer's recent titles.

    The list of the title watched d-th most recently counts with weight 1/d; titles
    in ``exclude`` (already in the session / watched) are dropped.
    """
    scores: dict[str, float] = {}
    for distance, similar in enumerate(lists_newest_first, 1):
        for other, score in similar:
            scores[other] = scores.get(other, 0.0) + score / distance
    best = heapq.nlargest(k + len(exclude), ((score, other) for other, score in scores.items()))
    return [(other, score) for score, other in best if other not in exclude][:k]
