"""Session co-occurrence counts per title, time-decayed, with bounded memory.

A view at position p of a session is paired with the views at positions
p-1 .. p-window of the same session (``ViewCompleted.previous``). The pair at
distance d gets weight ``w(d)`` (``weighting``): the earlier title gets the later
one as a neighbour with weight w(d) ("watched next"), the later title gets the
earlier one with ``w(d) * backward_factor``. Each view also adds 1 to its own
title's count, and the first view of a session adds 1 to the global session count.

Decay (forward decay, Cormode et al. 2009)
    Counts decay with half-life H: a contribution of weight w made at time a is
    worth ``w * 2**(-(now - a) / H)`` at time ``now``. Each state stores values
    scaled to its own landmark time L: ``stored += w * 2**((a - L) / H)``, and a
    value is read as ``stored * 2**((L - now) / H)``. Adding is O(1) (no pass over
    the neighbours to decay them) and the stored numbers are comparable within one
    state so pruning needs no decay either.

Exact and independent of arrival order (what makes co-view deterministic)
    Contributions reach a title from many viewer partitions, interleaved as the
    network happens to deliver them, so the result must not depend on their order.
    Floating-point sums do (rounding), and so did a landmark taken from the first
    contribution. Here every term is put on a fixed grid before it is added:
    ``a = (k + f) * H`` (k whole half-lives since the epoch, 0 <= f < 1), the term is
    ``q(w * 2**f) * 2**(k - L/H)`` where ``q`` rounds to a multiple of
    ``2**-GRID_BITS`` (relative error < 1e-6, far below what ranking notices) and
    ``2**(k - L/H)`` is an exact power of two; L is always a whole number of
    half-lives: the smallest k seen (an older contribution moves it back by
    multiplying the state by an exact power of two). Every stored value is then a
    multiple of ``2**-GRID_BITS`` and float addition of such numbers is exact while a
    value stays below ``2**(53 - GRID_BITS)`` (8.6e9: e.g. a million views spread
    over 13 half-lives), so the state (L included) is the same bits for any order of
    the same contributions. Two documented exceptions: pruning (below) keeps the
    heaviest neighbours *at the time it runs*, and a title whose contributions span
    more than ``_RENORMALISE_HALF_LIVES`` half-lives is rebased forward (old terms
    shrink); both only matter for titles with more than ``max_neighbours +
    prune_slack`` neighbours or decades of history. Without decay (H = None) the
    landmark is 0 and terms are ``q(w)``.

Bounded memory (heavy hitters with batch pruning)
    A title keeps at most ``max_neighbours`` (M) neighbours after each pruning; new
    neighbours are appended until the map holds M + ``prune_slack`` entries (default 200 + 200:
    pruning 250 -> 200 every 50 inserts cost a third of the per-title stage), then
    the smallest weights are dropped in one ``heapq.nlargest`` pass (amortised
    O(log M) per insert, never a sort on the per-event path). As in lossy
    counting, a dropped neighbour that comes back starts from zero, so its weight
    is an underestimate; ``err`` records the largest weight ever dropped (stored
    scale) - listings should require support above it (``similarity`` does).

State of one title (plain JSON-able dict; Faust table keyed by item id)::

    {"L": 1700000000000,   # landmark, event-time ms
     "n": 12.5,            # own view count, stored scale
     "nb": {"m7": 3.0, "m3": 0.5},  # neighbour -> co-view weight, stored scale
     "err": 0.0,           # largest pruned neighbour weight, stored scale
     "t": 1700000400000}   # latest contribution time (ms)

Totals (one small dict, e.g. a single table key): ``{"L": ..., "sessions": ...,
"views": ..., "t": ...}``.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, Callable, NamedTuple

from processors.coview.sessionize import ViewCompleted

__all__ = [
    "CoviewConfig",
    "Contribution",
    "TitleState",
    "TotalsState",
    "WEIGHTINGS",
    "contributions_for_view",
    "apply_contribution",
    "apply_contributions",
    "add_view_to_totals",
    "decayed",
    "decay_factor",
    "on_grid",
    "GRID_BITS",
]

TitleState = dict[str, Any]
TotalsState = dict[str, Any]

DAY_MS = 24 * 3600 * 1000
_RENORMALISE_HALF_LIVES = 64  # a contribution this many half-lives past the landmark moves it forward
GRID_BITS = 20  # terms are multiples of 2**-GRID_BITS: exact, order-independent float sums
_ROUND = 1.5 * 2.0 ** (52 - GRID_BITS)  # (x + _ROUND) - _ROUND rounds x to the grid (|x| < 2**30)

WEIGHTINGS: dict[str, Callable[[int], float]] = {
    "flat": lambda d: 1.0,
    "inverse": lambda d: 1.0 / d,
    "inverse_sqrt": lambda d: d ** -0.5,
    "inverse_square": lambda d: 1.0 / (d * d),
}


@dataclass(frozen=True, slots=True)
class CoviewConfig:
    """Defaults chosen on the MovieLens validation slice (bench/coview_quality.py).

    ``half_life_ms`` depends on traffic: MovieLens has about one session a day, and its
    best half-life was 730 days (~640 sessions per half-life). A live service passes
    that many sessions in minutes, so set the half-life per deployment (e.g. the
    brief's 7 days) - the data set here cannot validate a value at production volume.
    """

    window: int = 20  # measured: 20 > 10 > 5 on MovieLens; real sessions are rarely that long
    weighting: str = "inverse_sqrt"
    backward_factor: float = 1.0
    half_life_ms: int | None = 730 * DAY_MS  # None: no decay
    max_neighbours: int = 200
    prune_slack: int = 200

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {sorted(WEIGHTINGS)}")
        if self.half_life_ms is not None and self.half_life_ms <= 0:
            raise ValueError("half_life_ms must be positive or None")
        if self.max_neighbours < 1 or self.prune_slack < 0:
            raise ValueError("max_neighbours must be >= 1 and prune_slack >= 0")


class Contribution(NamedTuple):
    """All updates one view makes to one title: route by ``title`` (one message per title)."""

    title: str
    own: float  # added to the title's own view count (1.0 for the viewed title, else 0.0)
    neighbours: tuple[tuple[str, float], ...]  # (neighbour, co-view weight)
    at_ms: int


def contributions_for_view(view: ViewCompleted, config: CoviewConfig = CoviewConfig()) -> list[Contribution]:
    """The title updates one view causes: the viewed title first, then each earlier title."""
    at = view.at_ms
    item = view.item_id
    weights = _distance_weights(config.weighting, config.window)
    backward = config.backward_factor
    earlier_updates = []
    backward_pairs = []
    seen = {item}
    for earlier, weight in zip(view.previous, weights):
        if earlier in seen:
            continue
        seen.add(earlier)
        earlier_updates.append(Contribution(earlier, 0.0, ((item, weight),), at))
        if backward > 0.0:
            backward_pairs.append((earlier, weight * backward))
    return [Contribution(item, 1.0, tuple(backward_pairs), at), *earlier_updates]


@lru_cache(maxsize=64)
def _distance_weights(weighting: str, window: int) -> tuple[float, ...]:
    weight_of = WEIGHTINGS[weighting]
    return tuple(weight_of(distance) for distance in range(1, window + 1))


def decay_factor(at_ms: int, landmark_ms: int, half_life_ms: int | None) -> float:
    """``2 ** ((at - L) / H)``: the stored-scale multiplier for a contribution at ``at``."""
    if half_life_ms is None:
        return 1.0
    return 2.0 ** ((at_ms - landmark_ms) / half_life_ms)


def decayed(stored: float, landmark_ms: int, now_ms: int, half_life_ms: int | None) -> float:
    """Value at ``now`` of a number stored at landmark scale."""
    if half_life_ms is None:
        return stored
    return stored * 2.0 ** ((landmark_ms - now_ms) / half_life_ms)


def on_grid(value: float) -> float:
    """``value`` rounded to a multiple of ``2**-GRID_BITS`` (round half to even; |value| < 2**30)."""
    return (value + _ROUND) - _ROUND


def _scaled(state: dict[str, Any], factor: float, keys: tuple[str, ...]) -> dict[str, Any]:
    """The state with every stored value multiplied by ``factor`` (a power of two: exact)."""
    out = dict(state)
    for key in keys:
        out[key] = state[key] * factor
    if "nb" in state:
        out["nb"] = {k: v * factor for k, v in state["nb"].items()}
    return out


def _landmarked(state: dict[str, Any] | None, at_ms: int, half_life_ms: int | None,
                keys: tuple[str, ...], empty: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
    """(state on a landmark that fits ``at``, the term's grid mantissa factor 2**f, its exact power of two
    2**(k - L/H)) - see "Exact and independent of arrival order" above."""
    if half_life_ms is None:
        if state is None:
            state = dict(empty, L=0)
        return state, 1.0, 1.0
    k, rest = divmod(at_ms, half_life_ms)
    if state is None:
        state = dict(empty, L=k * half_life_ms)
    landmark = state["L"]
    if landmark % half_life_ms:  # a state written before landmarks were whole half-lives: move it once
        floor = landmark - landmark % half_life_ms
        state = _scaled(state, 2.0 ** ((landmark - floor) / half_life_ms), keys)
        state["L"] = landmark = floor
    j = landmark // half_life_ms
    if k < j:  # an older contribution: the landmark moves back to it, stored values double per half-life
        state = _scaled(state, math.ldexp(1.0, j - k), keys)
        state["L"], j = k * half_life_ms, k
    elif k - j > _RENORMALISE_HALF_LIVES:  # far in the future: move forward so floats stay finite
        state = _scaled(state, math.ldexp(1.0, j - k), keys)
        state["L"], j = k * half_life_ms, k
    return state, 2.0 ** (rest / half_life_ms), math.ldexp(1.0, k - j)


_EMPTY_TITLE = {"n": 0.0, "nb": {}, "err": 0.0}
_TITLE_KEYS = ("n", "err")


def apply_contribution(
    state: TitleState | None,
    contribution: Contribution,
    config: CoviewConfig = CoviewConfig(),
    inplace: bool = False,
) -> TitleState:
    """Return the title state with one contribution added.

    By default the input is not mutated (a copy of the neighbour map per call, the
    main per-view cost). ``inplace=True`` updates and returns the given state - for
    an owner that writes the result back anyway (a table value it just read).
    """
    if state is not None and not inplace:
        state = dict(state, nb=dict(state["nb"]))
    return apply_contributions(state, [contribution], config)


def apply_contributions(
    state: TitleState | None, contributions: list[Contribution], config: CoviewConfig = CoviewConfig()
) -> TitleState:
    """Contributions added to a title's state, updating ``state`` in place: the per-title stage's hot loop.

    The result is the same (bit for bit) for any order of the same contributions while no pruning runs
    (module docstring)."""
    half_life = config.half_life_ms
    limit = config.max_neighbours + config.prune_slack
    for _title, own, added, at in contributions:  # Contribution or a tuple laid out like one
        if state is None or half_life is not None:
            state, mantissa, power = _landmarked(state, at, half_life, _TITLE_KEYS,
                                                 dict(_EMPTY_TITLE, nb={}, t=at))
        else:
            mantissa = power = 1.0
        if at > state["t"]:
            state["t"] = at
        if own:
            state["n"] += ((own * mantissa + _ROUND) - _ROUND) * power
        neighbours = state["nb"]
        for neighbour, weight in added:
            neighbours[neighbour] = neighbours.get(neighbour, 0.0) + ((weight * mantissa + _ROUND) - _ROUND) * power
        if len(neighbours) > limit:
            kept = heapq.nlargest(config.max_neighbours, neighbours.items(), key=_weight_then_name)
            kept_keys = {key for key, _ in kept}
            state["err"] = max(state["err"], max((v for k, v in neighbours.items() if k not in kept_keys), default=0.0))
            state["nb"] = dict(kept)
    return state


def _weight_then_name(item: tuple[str, float]) -> tuple[float, str]:
    return item[1], item[0]


def add_view_to_totals(
    totals: TotalsState | None, view: ViewCompleted, config: CoviewConfig = CoviewConfig()
) -> TotalsState:
    """Global decayed counts of views and of sessions (a session counts at its first view); exact and
    order-independent like the title states."""
    at = view.at_ms
    new = dict(totals) if totals is not None else None
    new, mantissa, power = _landmarked(new, at, config.half_life_ms, ("sessions", "views"),
                                       {"sessions": 0.0, "views": 0.0, "t": at})
    term = on_grid(mantissa) * power
    new["views"] += term
    if view.position_in_session == 1:
        new["sessions"] += term
    if at > new["t"]:
        new["t"] = at
    return new
