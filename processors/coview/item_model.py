"""A closed-form item model refreshed from the stream, and its blend with the co-view list (issue 17).

EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): with X the session x title
incidence matrix of the recent stream (a title counts once per session) and G = X'X,

    P = (G + l2 * I)^-1,   B = I - P / diag(P)   (diag(B) = 0)

B[i, j] is how much having seen title i says about title j; title i's model list is the top ``k``
positive entries of row i. The model is bounded: only the ``max_items`` titles seen in the most sessions
(ties by id) are kept, so a refit costs O(max_items^3) once (about a second for 3,000 titles, tens of
seconds for 8,000 on one core) whatever the traffic, and the stored lists are ``max_items`` x ``k``.

Between refits the served list stays co-view-fresh: ``blend_lists`` mixes the current co-view list
(updated within seconds of the events) with the last fitted model list for the title:

    score(j) = (1 - weight) * coview(j) / top coview + weight * model(j) / top model

A title missing from one side takes the other side's list unchanged. Pure numpy, no I/O.
"""
from __future__ import annotations

import heapq
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping

import numpy as np


@dataclass(frozen=True)
class ItemModelConfig:
    max_items: int = 8000  # titles kept (most sessions first): bounds the refit's memory and time
    l2: float = 200.0  # EASE's ridge (lambda)
    k: int = 50  # entries kept per title
    min_sessions: int = 2  # titles seen in fewer sessions are left out (their row would be noise)
    max_basket: int = 200  # a session's most recent distinct titles used (bounds a refit's G update)

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.k < 1 or self.max_basket < 2:
            raise ValueError("max_items and k must be >= 1, max_basket >= 2")
        if self.l2 <= 0.0:
            raise ValueError("l2 must be > 0")


@dataclass
class ItemModel:
    """The fitted lists: title -> [(other title, weight)] best first (positive weights only)."""

    lists: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    items: list[str] = field(default_factory=list)
    sessions: int = 0
    fitted_at_ms: int | None = None

    def similar(self, item_id: str, k: int | None = None) -> list[tuple[str, float]]:
        found = self.lists.get(item_id, [])
        return found if k is None else found[:k]

    def __len__(self) -> int:
        return len(self.items)


def baskets_of(sessions: Iterable[Iterable[str]], max_basket: int) -> list[list[str]]:
    """Distinct titles of each session, the ``max_basket`` most recent kept (order of last occurrence)."""
    out = []
    for session in sessions:
        seen: dict[str, None] = {}
        for item in session:
            seen.pop(item, None)
            seen[item] = None
        titles = list(seen)[-max_basket:]
        if titles:
            out.append(titles)
    return out


def active_items(baskets: Iterable[Collection[str]], max_items: int, min_sessions: int = 1) -> list[str]:
    """The titles in the most baskets (at least ``min_sessions``), at most ``max_items``, ties by id."""
    counts = Counter(item for basket in baskets for item in basket)
    ranked = sorted((item for item, n in counts.items() if n >= min_sessions), key=lambda i: (-counts[i], i))
    return ranked[:max_items]


def gram_matrix(baskets: Iterable[Collection[str]], index: Mapping[str, int]) -> np.ndarray:
    """G = X'X of the binary basket x title matrix over the titles of ``index`` (others dropped)."""
    n = len(index)
    gram = np.zeros((n, n), dtype=np.float64)
    for basket in baskets:
        ids = np.fromiter(sorted({index[i] for i in basket if i in index}), dtype=np.int64)
        if ids.size:
            gram[np.ix_(ids, ids)] += 1.0
    return gram


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's B from G (not modified): B = I - P / diag(P) with P = (G + l2 I)^-1, zero diagonal."""
    g = np.array(gram, dtype=np.float64, copy=True)
    g[np.diag_indices_from(g)] += l2
    p = np.linalg.inv(g)
    b = p / (-np.diag(p))
    np.fill_diagonal(b, 0.0)
    return b


def top_lists(weights: np.ndarray, items: list[str], k: int) -> dict[str, list[tuple[str, float]]]:
    """Each row's ``k`` largest positive entries, best first (ties by column order)."""
    lists: dict[str, list[tuple[str, float]]] = {}
    n = weights.shape[1]
    kk = min(k, n)
    for row, item in enumerate(items):
        values = weights[row]
        if kk < n:
            cand = np.argpartition(-values, kk - 1)[:kk]
        else:
            cand = np.arange(n)
        cand = cand[values[cand] > 0.0]
        order = cand[np.lexsort((cand, -values[cand]))]
        lists[item] = [(items[j], float(values[j])) for j in order]
    return lists


def fit_item_model(sessions: Iterable[Iterable[str]], config: ItemModelConfig = ItemModelConfig(),
                   now_ms: int | None = None) -> ItemModel:
    """The refit: ``sessions`` are the recent stream's sessions (title ids in view order)."""
    baskets = baskets_of(sessions, config.max_basket)
    items = active_items(baskets, config.max_items, config.min_sessions)
    if len(items) < 2:
        return ItemModel({}, items, len(baskets), now_ms)
    index = {item: i for i, item in enumerate(items)}
    weights = ease_weights(gram_matrix(baskets, index), config.l2)
    return ItemModel(top_lists(weights, items, config.k), items, len(baskets), now_ms)


def blend_lists(coview: list[tuple[str, float]], model: list[tuple[str, float]], weight: float,
                k: int = 50) -> list[tuple[str, float]]:
    """Co-view list mixed with the item model's list (each scaled by its top score), best first."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError("weight must be in [0, 1]")
    if not model or weight <= 0.0:
        return coview[:k]
    if not coview or weight >= 1.0:
        return model[:k]
    top_cv = coview[0][1] or 1.0
    top_md = model[0][1] or 1.0
    mixed: dict[str, float] = {}
    for item, score in coview:
        mixed[item] = (1.0 - weight) * score / top_cv
    for item, score in model:
        mixed[item] = mixed.get(item, 0.0) + weight * score / top_md
    best = heapq.nlargest(k, ((score, item) for item, score in mixed.items()))
    return [(item, score) for score, item in best]


def encode_list(items: list[tuple[str, float]], digits: int = 5) -> str:
    """One title's model list as stored (e.g. a field of a Redis hash): compact JSON [[id, score], ...]."""
    return json.dumps([[other, round(score, digits)] for other, score in items], separators=(",", ":"))


def decode_list(raw: str | bytes | None) -> list[tuple[str, float]]:
    """``encode_list``'s inverse; missing or malformed -> [] (the served list is then co-view only)."""
    if not raw:
        return []
    try:
        return [(str(other), float(score)) for other, score in json.loads(raw)]
    except (ValueError, TypeError):
        return []


def model_rows(model: ItemModel, digits: int = 5) -> dict[str, str]:
    """The fitted model as title -> stored list, for one write per refit (titles with an empty list left out)."""
    return {item: encode_list(items, digits) for item, items in model.lists.items() if items}


# ----------------------------------------------------------------------------- the worker's refit state


class BasketLog:
    """The recent stream's sessions as baskets for the refit, bounded: at most ``max_sessions`` sessions
    (the oldest-started dropped first) of at most ``max_basket`` distinct titles each (a title seen again
    moves to the end; the oldest title dropped). ``add`` is O(1) amortised (it is on the per-view path)."""

    def __init__(self, max_sessions: int = 100_000, max_basket: int = 200) -> None:
        if max_sessions < 1 or max_basket < 2:
            raise ValueError("max_sessions must be >= 1, max_basket >= 2")
        self.max_sessions = max_sessions
        self.max_basket = max_basket
        self.sessions: dict[str, dict[str, None]] = {}  # insertion order = session start
        self.added = 0  # views added since the log was created (the refit's "anything new?" check)

    def add(self, session_id: str, item_id: str) -> None:
        sessions = self.sessions
        basket = sessions.get(session_id)
        if basket is None:
            if len(sessions) >= self.max_sessions:
                del sessions[next(iter(sessions))]
            basket = sessions[session_id] = {}
        elif item_id in basket:
            del basket[item_id]
        basket[item_id] = None
        if len(basket) > self.max_basket:
            del basket[next(iter(basket))]
        self.added += 1

    def baskets(self) -> list[list[str]]:
        """A snapshot (copies) to fit from, e.g. in another thread while ``add`` goes on."""
        return [list(basket) for basket in list(self.sessions.values())]

    def __len__(self) -> int:
        return len(self.sessions)


class ModelRefresher:
    """When to refit and the model in use. Pure: the caller passes the clock (monotonic seconds).

    A refit is due ``interval_s`` after the previous one (the first ``interval_s`` after creation, so a
    short-lived or just-restarted worker serves co-view lists as before), if at least ``min_new_views``
    views arrived since and the log holds at least ``min_sessions`` sessions (a small or test stream never
    refits: its lists stay the co-view function of the input). ``similar`` is the current model's list
    ([] before the first fit)."""

    def __init__(self, config: ItemModelConfig = ItemModelConfig(), interval_s: float = 300.0,
                 min_new_views: int = 1, now_s: float = 0.0, log: BasketLog | None = None,
                 min_sessions: int = 0) -> None:
        self.config = config
        self.min_sessions = min_sessions
        self.interval_s = interval_s
        self.min_new_views = min_new_views
        self.log = log if log is not None else BasketLog(max_basket=config.max_basket)
        self.model = ItemModel()
        self.last_fit_s = now_s
        self.views_at_fit = 0
        self.running = False

    def due(self, now_s: float) -> bool:
        return (not self.running and now_s - self.last_fit_s >= self.interval_s
                and self.log.added - self.views_at_fit >= self.min_new_views and len(self.log) >= self.min_sessions)

    def begin(self, now_s: float) -> list[list[str]]:
        """Marks a refit started and returns the baskets to fit (``fit_item_model(baskets, config)``)."""
        self.running = True
        self.last_fit_s = now_s
        self.views_at_fit = self.log.added
        return self.log.baskets()

    def done(self, model: ItemModel | None) -> None:
        """Installs the fitted model (None: the refit failed, the previous model stays)."""
        if model is not None:
            self.model = model
        self.running = False

    def refit(self, now_s: float, now_ms: int | None = None) -> ItemModel:
        """The synchronous refit (tests, offline): begin + fit + done."""
        baskets = self.begin(now_s)
        model = fit_item_model(baskets, self.config, now_ms)
        self.done(model)
        return model

    def similar(self, item_id: str, k: int | None = None) -> list[tuple[str, float]]:
        return self.model.similar(item_id, k)


def served_coview(coview: list[tuple[str, float]], model: ItemModel | None, item_id: str, weight: float,
                  k: int = 50) -> list[tuple[str, float]]:
    """The co-view side of a served list: co-view blended with the item model's list for the title (the
    metadata blend and served order come after, ``coldstart.blend`` / ``coldstart.arrange``)."""
    if model is None or weight <= 0.0:
        return coview[:k]
    return blend_lists(coview, model.similar(item_id, k), weight, k)
