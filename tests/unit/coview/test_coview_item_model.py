from __future__ import annotations

import numpy as np
import pytest

from processors.coview.item_model import (
    ItemModelConfig,
    active_items,
    baskets_of,
    blend_lists,
    ease_weights,
    fit_item_model,
    gram_matrix,
    top_lists,
)


def test_baskets_keep_distinct_titles_most_recent_last_and_cap():
    assert baskets_of([["a", "b", "a", "c"], [], ["x"]], 10) == [["b", "a", "c"], ["x"]]
    assert baskets_of([["a", "b", "c", "d"]], 2) == [["c", "d"]]


def test_active_items_bounded_most_sessions_first_ties_by_id():
    baskets = [["a", "b"], ["b", "c"], ["b", "a"], ["d"]]
    assert active_items(baskets, 10) == ["b", "a", "c", "d"]
    assert active_items(baskets, 2) == ["b", "a"]
    assert active_items(baskets, 10, min_sessions=2) == ["b", "a"]


def test_gram_counts_sessions_and_drops_unknown_titles():
    index = {"a": 0, "b": 1}
    gram = gram_matrix([["a", "b", "z"], ["a"], ["b", "b"]], index)
    assert gram.tolist() == [[2.0, 1.0], [1.0, 2.0]]


def test_ease_weights_match_the_closed_form():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 6)) < 0.4).astype(np.float64)
    gram = x.T @ x
    b = ease_weights(gram, 5.0)
    assert np.allclose(np.diag(b), 0.0)
    # B minimises ||X - XB||^2 + l2 ||B||^2 with diag(B) = 0: column j solves a ridge on the other columns
    for j in range(6):
        others = [i for i in range(6) if i != j]
        xo = x[:, others]
        w = np.linalg.solve(xo.T @ xo + 5.0 * np.eye(5), xo.T @ x[:, j])
        assert np.allclose(b[others, j], w)
    assert np.array_equal(gram, x.T @ x)  # input untouched


def test_top_lists_positive_only_best_first():
    weights = np.array([[0.0, 0.5, -0.2, 0.5], [0.1, 0.0, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 0.0]])
    lists = top_lists(weights, ["a", "b", "c", "d"], 2)
    assert lists["a"] == [("b", 0.5), ("d", 0.5)]
    assert lists["b"] == [("c", 0.3), ("a", 0.1)]
    assert lists["c"] == []
    assert lists["d"] == [("c", 3.0), ("b", 2.0)]


def test_fit_item_model_learns_pairs_and_is_bounded():
    sessions = [["sw4", "sw5"], ["sw5", "sw6"], ["sw4", "sw5", "sw6"], ["toy1", "toy2"], ["toy2", "toy1"],
                ["sw4", "sw6"], ["rare", "toy1"]]
    model = fit_item_model(sessions, ItemModelConfig(l2=1.0, k=2, min_sessions=2), now_ms=123)
    assert set(model.items) == {"sw4", "sw5", "sw6", "toy1", "toy2"}  # "rare" seen once: left out
    assert model.sessions == 7 and model.fitted_at_ms == 123
    assert {o for o, _ in model.similar("sw4")} == {"sw5", "sw6"}
    assert model.similar("toy1")[0][0] == "toy2"
    assert all(len(v) <= 2 for v in model.lists.values())
    small = fit_item_model(sessions, ItemModelConfig(max_items=3, min_sessions=1))
    assert len(small) == 3 and set(small.lists) == set(small.items)
    assert fit_item_model([["a"]]).lists == {}


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        ItemModelConfig(l2=0.0)
    with pytest.raises(ValueError):
        ItemModelConfig(max_items=0)


def test_blend_lists_scales_each_side_by_its_top():
    coview = [("a", 4.0), ("b", 2.0)]
    model = [("b", 0.5), ("c", 0.25)]
    mixed = blend_lists(coview, model, 0.5, k=10)
    assert mixed == [("b", 0.75), ("a", 0.5), ("c", 0.25)]
    assert blend_lists(coview, model, 0.0) == coview
    assert blend_lists(coview, model, 1.0) == model
    assert blend_lists([], model, 0.3) == model
    assert blend_lists(coview, [], 0.3) == coview
    assert blend_lists(coview, model, 0.5, k=1) == [("b", 0.75)]
    with pytest.raises(ValueError):
        blend_lists(coview, model, 1.5)


def test_stored_lists_round_trip_and_tolerate_garbage():
    from processors.coview.item_model import ItemModel, decode_list, encode_list, model_rows

    items = [("b", 0.123456789), ("c", 0.5)]
    assert decode_list(encode_list(items)) == [("b", 0.12346), ("c", 0.5)]
    assert decode_list(None) == [] and decode_list(b"") == [] and decode_list("{bad") == [] and decode_list("[1]") == []
    rows = model_rows(ItemModel({"a": items, "z": []}, ["a", "z"]))
    assert set(rows) == {"a"} and decode_list(rows["a"].encode())[1] == ("c", 0.5)
