from __future__ import annotations

import copy
import itertools
import json
import math
import random

import pytest

from processors.coview.cooccurrence import (
    DAY_MS,
    Contribution,
    CoviewConfig,
    add_view_to_totals,
    apply_contribution,
    apply_contributions,
    contributions_for_view,
    decayed,
)
from processors.coview.memory import CoviewIndex
from processors.coview.sessionize import ViewCompleted

T = 1_700_000_000_000
H = 7 * DAY_MS


def session_views(items, t=T, session="s1"):
    out = []
    for position, item in enumerate(items, 1):
        previous = tuple(reversed(items[: position - 1]))
        out.append(ViewCompleted("u:1", session, item, position, 150_000, 7_200_000, t + position, previous))
    return out


def neighbours(index: CoviewIndex, item: str) -> dict[str, float]:
    return {k: round(v, 6) for k, v in index.titles[item]["nb"].items()}


# (config, session, title, expected neighbours) with no decay, so stored == value
WINDOW_CASES = [
    (CoviewConfig(window=2, weighting="inverse", half_life_ms=None), "abcd", "a", {"b": 1.0, "c": 0.5}),
    (CoviewConfig(window=2, weighting="inverse", half_life_ms=None), "abcd", "b", {"a": 1.0, "c": 1.0, "d": 0.5}),
    (CoviewConfig(window=2, weighting="inverse", half_life_ms=None), "abcd", "d", {"c": 1.0, "b": 0.5}),
    (CoviewConfig(window=3, weighting="flat", half_life_ms=None), "abcd", "a", {"b": 1.0, "c": 1.0, "d": 1.0}),
    (CoviewConfig(window=1, weighting="flat", half_life_ms=None), "abcd", "b", {"a": 1.0, "c": 1.0}),
    (CoviewConfig(window=3, weighting="inverse_square", half_life_ms=None), "abcd", "a", {"b": 1.0, "c": 0.25, "d": 0.111111}),
    # backward_factor 0: a title only learns the titles watched after it
    (CoviewConfig(window=3, weighting="inverse", backward_factor=0.0, half_life_ms=None), "abcd", "c", {"d": 1.0}),
    (CoviewConfig(window=3, weighting="inverse", backward_factor=0.5, half_life_ms=None), "abcd", "c",
     {"d": 1.0, "b": 0.5, "a": 0.25}),
]


@pytest.mark.parametrize("config, session, title, expected", WINDOW_CASES)
def test_window_and_distance_weights(config, session, title, expected):
    index = CoviewIndex(config)
    for view in session_views(list(session)):
        index.add_view(view)
    assert neighbours(index, title) == expected
    assert index.titles[title]["n"] == 1.0


def test_counts_accumulate_over_sessions_and_totals_count_sessions():
    index = CoviewIndex(CoviewConfig(half_life_ms=None))
    for n, items in enumerate(["ab", "ab", "ac"]):
        for view in session_views(list(items), session=f"s{n}"):
            index.add_view(view)
    assert index.titles["a"]["n"] == 3.0
    assert neighbours(index, "a") == {"b": 2.0, "c": 1.0}
    assert index.totals["sessions"] == 3.0 and index.totals["views"] == 6.0


@pytest.mark.parametrize("half_lives", [1, 2, 10])
def test_decay_halves_after_each_half_life(half_lives):
    config = CoviewConfig(half_life_ms=H)
    state = apply_contribution(None, Contribution("a", 0.0, (("b", 1.0),), T), config)
    state = apply_contribution(state, Contribution("a", 4.0, (), T), config)
    now = T + half_lives * H
    assert decayed(state["nb"]["b"], state["L"], now, H) == pytest.approx(0.5 ** half_lives)
    assert decayed(state["n"], state["L"], now, H) == pytest.approx(4.0 * 0.5 ** half_lives)


def test_new_contributions_outweigh_old_ones():
    """A trend: 4 old co-views (two half-lives ago) weigh as much as 1 new one."""
    config = CoviewConfig(half_life_ms=H)
    state = None
    for i in range(4):
        state = apply_contribution(state, Contribution("a", 0.0, (("old", 1.0),), T + i), config)
    state = apply_contribution(state, Contribution("a", 0.0, (("new", 1.0),), T + 2 * H), config)
    now = T + 2 * H
    old = decayed(state["nb"]["old"], state["L"], now, H)
    new = decayed(state["nb"]["new"], state["L"], now, H)
    assert old == pytest.approx(new, rel=1e-6)


@pytest.mark.parametrize("half_life", [H, None])
def test_state_is_bit_for_bit_independent_of_arrival_order(half_life):
    """Contributions reach a title from many partitions in whatever order the network delivers them: the
    state (landmark included) must be the same bits for every order, or two runs differ."""
    config = CoviewConfig(half_life_ms=half_life)
    rng = random.Random(11)
    contributions = [Contribution("a", rng.choice([0.0, 1.0]), ((rng.choice("bcdef"), 1 / rng.randrange(1, 21) ** 0.5),),
                                  T + rng.randrange(90 * DAY_MS)) for _ in range(500)]
    states = []
    for seed in range(4):
        order = list(contributions)
        random.Random(seed).shuffle(order)
        states.append(apply_contributions(None, order, config))
    single = None
    for c in sorted(contributions, key=lambda c: -c.at_ms):
        single = apply_contribution(single, c, config)
    states.append(single)
    for other in states[1:]:
        assert other == states[0]


def test_decay_is_independent_of_arrival_order():
    config = CoviewConfig(half_life_ms=H)
    rng = random.Random(7)
    contributions = [Contribution("a", 0.0, ((rng.choice("bcd"), rng.random()),), T + rng.randrange(60 * DAY_MS))
                     for _ in range(40)]
    results = []
    for order in (contributions, sorted(contributions, key=lambda c: c.at_ms), list(reversed(contributions))):
        state = None
        for c in order:
            state = apply_contribution(state, c, config)
        now = T + 90 * DAY_MS
        results.append({k: decayed(v, state["L"], now, H) for k, v in state["nb"].items()})
    for other in results[1:]:
        assert other == results[0]


def test_landmark_is_rebased_far_in_the_future_without_overflow():
    config = CoviewConfig(half_life_ms=DAY_MS)
    state = apply_contribution(None, Contribution("a", 0.0, (("b", 1.0),), T), config)
    later = T + 2000 * DAY_MS  # 2000 half-lives: 2**2000 would overflow a float
    state = apply_contribution(state, Contribution("a", 0.0, (("b", 1.0),), later), config)
    assert state["L"] == later - later % DAY_MS  # landmarks are whole half-lives
    assert all(math.isfinite(v) for v in state["nb"].values())
    assert decayed(state["nb"]["b"], state["L"], later + DAY_MS, DAY_MS) == pytest.approx(0.5)


def test_pruning_bounds_memory_and_keeps_heavy_hitters():
    config = CoviewConfig(half_life_ms=None, max_neighbours=10, prune_slack=5)
    rng = random.Random(1)
    heavy = [f"h{i}" for i in range(5)]
    state = None
    sizes = []
    for step in range(3000):
        neighbour = rng.choice(heavy) if step % 3 == 0 else f"rare{step}"
        state = apply_contribution(state, Contribution("a", 0.0, ((neighbour, 1.0),), T + step), config)
        sizes.append(len(state["nb"]))
    assert max(sizes) <= 15
    assert min(sizes[100:]) >= 10
    assert set(heavy) <= set(state["nb"])
    assert 0.0 < state["err"] <= min(state["nb"][h] for h in heavy)


def test_apply_contribution_does_not_mutate_its_input():
    config = CoviewConfig(max_neighbours=2, prune_slack=0)
    state = None
    for n, other in enumerate("bcd"):
        state = apply_contribution(state, Contribution("a", 0.0, ((other, 1.0 + n),), T + n), config)
    frozen = copy.deepcopy(state)
    apply_contribution(state, Contribution("a", 0.0, (("e", 5.0),), T + 10), config)
    apply_contribution(state, Contribution("a", 1.0, (), T + 10), config)
    assert state == frozen


def test_inplace_update_gives_the_same_state():
    config = CoviewConfig(max_neighbours=5, prune_slack=2, half_life_ms=H)
    rng = random.Random(3)
    pure = inplace = None
    for step in range(200):
        c = Contribution("a", rng.choice([0.0, 1.0]), ((f"n{rng.randrange(20)}", rng.random()),), T + step * DAY_MS)
        pure = apply_contribution(pure, c, config)
        inplace = apply_contribution(copy.deepcopy(inplace) if step % 7 == 0 else inplace, c, config, inplace=True)
    assert pure == inplace


def test_state_is_small_plain_json():
    index = CoviewIndex()
    for n, items in enumerate(itertools.permutations("abcde", 3)):
        for view in session_views(list(items), session=f"s{n}"):
            index.add_view(view)
    for state in index.titles.values():
        assert json.loads(json.dumps(state)) == state
    assert json.loads(json.dumps(index.totals)) == index.totals


def test_one_update_per_title_and_self_pairs_ignored():
    view = ViewCompleted("u:1", "s", "a", 4, 1, 1, T, ("a", "b", "c"))
    got = contributions_for_view(view, CoviewConfig(window=2, weighting="inverse", backward_factor=0.5))
    # "a" at distance 1 is the title itself; "c" at distance 3 is outside the window
    assert got == [Contribution("a", 1.0, (("b", 0.25),), T), Contribution("b", 0.0, (("a", 0.5),), T)]


def test_totals_count_a_session_at_its_first_view():
    config = CoviewConfig(half_life_ms=None)
    totals = None
    for view in session_views(list("abc")):
        totals = add_view_to_totals(totals, view, config)
    assert totals["sessions"] == 1.0 and totals["views"] == 3.0


@pytest.mark.parametrize("bad", [dict(window=0), dict(weighting="log"), dict(half_life_ms=0), dict(max_neighbours=0)])
def test_config_is_validated(bad):
    with pytest.raises(ValueError):
        CoviewConfig(**bad)
