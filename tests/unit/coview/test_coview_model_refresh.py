"""The item model the co-view worker serves (issue 17): bounded basket log, refit timing, the blend at
list-write time, and the worker's refit path (streams/agents/coview.py ``refit_model``). Pure, no stack."""
from __future__ import annotations

import asyncio

import pytest

from processors.coview.item_model import (
    BasketLog,
    ItemModel,
    ItemModelConfig,
    ModelRefresher,
    blend_lists,
    fit_item_model,
    served_coview,
)

SESSIONS = [["a", "b", "c"], ["a", "b"], ["b", "c"], ["a", "c", "d"], ["a", "b", "d"], ["c", "d"]] * 3


def test_basket_log_is_bounded_in_sessions_and_titles():
    log = BasketLog(max_sessions=2, max_basket=3)
    for item in "abcda":
        log.add("s1", item)
    assert log.baskets() == [["c", "d", "a"]]  # distinct, newest last, oldest dropped past 3
    log.add("s2", "x")
    log.add("s1", "e")
    log.add("s3", "y")  # s1 started first: dropped
    assert len(log) == 2
    assert log.baskets() == [["x"], ["y"]]
    log.add("s2", "z")
    assert log.baskets() == [["x", "z"], ["y"]]
    assert log.added == 9
    with pytest.raises(ValueError):
        BasketLog(max_sessions=0)


def test_refresher_waits_an_interval_and_new_views():
    refresher = ModelRefresher(ItemModelConfig(max_items=10, l2=1.0, k=3), interval_s=60.0, now_s=100.0)
    assert not refresher.due(200.0)  # nothing logged yet
    for n, session in enumerate(SESSIONS):
        for item in session:
            refresher.log.add(f"s{n}", item)
    assert not refresher.due(150.0)  # first refit one interval after start
    assert refresher.due(160.0)
    assert refresher.similar("a") == []  # before the first fit: co-view only
    model = refresher.refit(160.0, now_ms=5)
    assert model.fitted_at_ms == 5 and model.sessions == len(SESSIONS)
    assert refresher.similar("a") == fit_item_model(SESSIONS, refresher.config).similar("a")
    assert refresher.similar("a")
    assert not refresher.due(400.0)  # no new view since the fit
    refresher.log.add("new", "a")
    assert not refresher.due(210.0) and refresher.due(220.0)


def test_refresher_keeps_previous_model_when_a_refit_fails_and_one_refit_at_a_time():
    refresher = ModelRefresher(ItemModelConfig(max_items=10, l2=1.0, k=3), interval_s=1.0)
    for n, session in enumerate(SESSIONS):
        for item in session:
            refresher.log.add(f"s{n}", item)
    first = refresher.refit(5.0)
    refresher.log.add("x", "a")
    refresher.begin(10.0)
    assert not refresher.due(20.0)  # running
    refresher.done(None)
    assert refresher.model is first and not refresher.running


def test_served_coview_blends_the_model_list_like_the_bench():
    coview = [("b", 4.0), ("c", 2.0)]
    model = ItemModel({"a": [("d", 0.5), ("b", 0.25)]}, ["a", "b", "d"])
    assert served_coview(coview, model, "a", 0.25, 50) == blend_lists(coview, model.similar("a", 50), 0.25, 50)
    assert served_coview(coview, model, "a", 0.0, 50) == coview
    assert served_coview(coview, None, "a", 0.25, 50) == coview
    assert served_coview(coview, model, "zzz", 0.25, 50) == coview  # no model row: co-view unchanged
    assert [item for item, _ in served_coview([], model, "a", 0.25, 50)] == ["d", "b"]  # model only
    assert len(served_coview(coview, model, "a", 0.25, 2)) == 2


def test_worker_refit_path_installs_the_model_and_rescores_its_titles():
    from streams.agents import coview as agent
    from streams.runtime.engine.store import PartitionStore

    state = ModelRefresher(ItemModelConfig(max_items=10, l2=1.0, k=3), interval_s=0.0)
    for n, session in enumerate(SESSIONS):
        for item in session:
            state.log.add(f"s{n}", item)
    store = PartitionStore(0)
    store["a"] = {"c": None, "o": {}, "v": 1}
    store["b"] = {"c": None, "o": {}, "v": 1}
    saved = dict(agent.flusher.dirty)
    agent.flusher.dirty.clear()
    try:
        marked = asyncio.run(agent.refit_model({0: store}, state, now_s=1.0))
        assert marked == 2 and set(agent.flusher.dirty) == {"a", "b"}
    finally:
        agent.flusher.dirty.clear()
        agent.flusher.dirty.update(saved)
    assert state.similar("a") == fit_item_model(SESSIONS, state.config).similar("a")
    assert not state.running and state.last_fit_s == 1.0


def test_worker_refit_failure_keeps_lists_unchanged(monkeypatch):
    from streams.agents import coview as agent

    state = ModelRefresher(ItemModelConfig(max_items=10, l2=1.0, k=3), interval_s=0.0)
    state.log.add("s", "a")

    def boom(*_args, **_kwargs):
        raise RuntimeError("no")

    monkeypatch.setattr(agent, "fit_item_model", boom)
    assert asyncio.run(agent.refit_model({}, state, now_s=1.0)) == 0
    assert state.model.lists == {} and not state.running


def test_worker_feeds_completed_views_to_the_basket_log():
    from streams.agents import coview as agent

    assert agent.refresher.log.max_sessions == agent.MODEL_SESSIONS
    assert agent.MODEL_CONFIG.k == agent.SIMILARITY.k


def test_small_streams_never_refit():
    refresher = ModelRefresher(ItemModelConfig(max_items=10, l2=1.0, k=3), interval_s=0.0, min_sessions=3)
    refresher.log.add("s1", "a")
    refresher.log.add("s2", "b")
    assert not refresher.due(10.0)
    refresher.log.add("s3", "a")
    assert refresher.due(10.0)
