"""Baselines of the fair bench: every one scores the whole catalogue from the session prefix.

* ``popularity``  fit-data view counts.
* ``itemknn``     item-item cosine (asymmetric with ``alpha`` != 0.5) on the fit row x item matrix,
                  scores = sum over the last ``context`` titles of sim / distance**decay.
* ``ease``        EASE (Steck 2019), closed form B = I - P / diag(P), P = (X'X + lambda I)^-1,
                  scored like item-kNN from B's rows.
* ``sar``         SAR (Microsoft Recommenders): co-occurrence of the fit rows with time decay of the
                  rows (half-life before the fit instant), similarity jaccard / lift / raw counts,
                  affinity of the prefix decayed by distance.
* ``sknn``        V-SKNN (Ludewig and Jannach 2018): the prefix as a vector with linear position
                  decay, dot-product similarity with the ``sample`` most recent fit sessions that share a
                  title, the ``k`` most similar ones vote for their titles.

Rows are sessions or users (MovieLens only: RSC15 has no users). Fit data and catalogue come
from ``protocol.Slice``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.sparse import csr_matrix

from bench.quality.protocol import Prefix, Slice

DAY_MS = 24 * 3600 * 1000


def fit_matrix(data: Slice, rows: str = "session", half_life_days: float | None = None) -> csr_matrix:
    """Binary row x item matrix of the fit data (row weight 2**(-age/half-life) with decay)."""
    keys: dict[str, int] = {}
    last: dict[int, int] = {}
    cells: dict[tuple[int, int], None] = {}
    for session in data.fit:
        key = session.sid if rows == "session" else session.user
        r = keys.setdefault(key, len(keys))
        last[r] = max(last.get(r, 0), session.times[-1])
        for item in session.items:
            cells[(r, data.index[item])] = None
    r_idx = np.fromiter((c[0] for c in cells), dtype=np.int64, count=len(cells))
    c_idx = np.fromiter((c[1] for c in cells), dtype=np.int64, count=len(cells))
    values = np.ones(len(cells), dtype=np.float64)
    if half_life_days:
        ages = np.array([data.cut_ms - last[r] for r in range(len(keys))], dtype=np.float64)
        values = 2.0 ** (-ages[r_idx] / (half_life_days * DAY_MS))
    return csr_matrix((values, (r_idx, c_idx)), shape=(len(keys), data.n_items))


def _prefix_weights(prefix: Prefix, context: int, decay: float) -> tuple[list[int], list[float]]:
    items, weights = [], []
    for item, distance in prefix.recent:
        if distance > context:
            break
        items.append(item)
        weights.append(distance ** -decay)
    return items, weights


class ItemItem:
    """Scores = weighted sum of the rows of an item x item matrix for the prefix's recent titles."""

    def __init__(self, matrix: np.ndarray, context: int, decay: float = 1.0) -> None:
        self.matrix = matrix
        self.context = context
        self.decay = decay

    def scores(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        out = np.zeros((len(prefixes), self.matrix.shape[1]), dtype=np.float64)
        for row, prefix in enumerate(prefixes):
            items, weights = _prefix_weights(prefix, self.context, self.decay)
            if items:
                out[row] = np.asarray(weights) @ self.matrix[items]
        return out


class Popularity:
    def __init__(self, data: Slice) -> None:
        self.row = -np.arange(data.n_items, dtype=np.float64)  # catalogue is ordered by fit popularity

    def scores(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        return np.tile(self.row, (len(prefixes), 1))


def cooccurrence(x: csr_matrix) -> np.ndarray:
    return (x.T @ x).toarray()


def cosine_matrix(c: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    n = np.diag(c).copy()
    n[n <= 0] = 1.0
    sim = c / (n[:, None] ** alpha) / (n[None, :] ** (1.0 - alpha))
    np.fill_diagonal(sim, 0.0)
    return sim


def sar_matrix(c: np.ndarray, similarity: str) -> np.ndarray:
    n = np.diag(c).copy()
    if similarity == "jaccard":
        sim = c / np.maximum(n[:, None] + n[None, :] - c, 1e-12)
    elif similarity == "lift":
        sim = c / np.maximum(np.outer(n, n), 1e-12)
    elif similarity == "counts":
        sim = c.copy()
    else:
        raise ValueError(similarity)
    np.fill_diagonal(sim, 0.0)
    return sim


def ease_matrix(x: csr_matrix, lam: float) -> np.ndarray:
    g = (x.T @ x).toarray()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = p / (-np.diag(p))
    np.fill_diagonal(b, 0.0)
    return b


class SessionKNN:
    """V-SKNN over the fit sessions (rows of ``x``, newest last by ``ends``)."""

    def __init__(self, x: csr_matrix, ends: np.ndarray, k: int, sample: int, similarity: str = "dot") -> None:
        self.x = x.tocsr()
        self.xt = self.x.T.tocsr()
        self.recency = np.argsort(np.argsort(ends, kind="stable"), kind="stable")  # higher = more recent
        self.k = k
        self.sample = sample
        self.similarity = similarity
        self.lengths = np.asarray(self.x.sum(axis=1)).ravel()

    def scores(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        n_items = self.x.shape[1]
        out = np.zeros((len(prefixes), n_items), dtype=np.float64)
        for row, prefix in enumerate(prefixes):
            # distinct titles in order of last occurrence, linear decay: newest 1, oldest 1/len
            order = [item for item, _ in reversed(prefix.recent)]
            if not order:
                continue
            weights = np.arange(1, len(order) + 1, dtype=np.float64) / len(order)
            q = csr_matrix((weights, (np.array(order), np.zeros(len(order), dtype=np.int64))), shape=(n_items, 1))
            sims = np.asarray((self.x @ q).todense()).ravel()
            candidates = np.flatnonzero(sims)
            if candidates.size == 0:
                continue
            if candidates.size > self.sample:
                candidates = candidates[np.argsort(-self.recency[candidates], kind="stable")[: self.sample]]
            values = sims[candidates]
            if self.similarity == "cosine":
                values = values / np.sqrt(self.lengths[candidates] * len(order))
            if candidates.size > self.k:
                keep = np.argpartition(-values, self.k)[: self.k]
                candidates, values = candidates[keep], values[keep]
            out[row] = self.x[candidates].T @ values
        return out


def session_ends(data: Slice) -> np.ndarray:
    return np.array([s.times[-1] for s in data.fit], dtype=np.int64)
