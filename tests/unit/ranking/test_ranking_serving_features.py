"""The builder's fast candidate encoding equals the shared feature code, array for array."""
from __future__ import annotations

import numpy as np
import pytest

from processors.ranking.errors import RankingInputError
from processors.ranking.features import FeatureConfig, candidate_impressions, encode_batch, encode_candidates

CONFIG = FeatureConfig(item_buckets=257, user_buckets=129, recent_len=8)


@pytest.mark.parametrize("request_", [
    {"user_id": "u1", "device_type": "TV", "surface": "HOME", "recent_watched": [f"i{i}" for i in range(12)],
     "context": {"hour_of_day": 21, "network_kbps": 4000, "device_score": 0.7, "cached_ratio": 0.3,
                 "item_duration_ms": 5000}},
    {"user_id": None, "device_id": "d9", "device_type": "FRIDGE", "surface": None, "recent_watched": [],
     "context": None},
])
def test_encode_candidates_equals_encode_batch(request_):
    candidates = [
        {"item_id": "a", "item_duration_ms": 90_000, "pxtr": {"evr": 0.4, "svr": 2.0}},
        {"item_id": "b", "cached_ratio": 1.0},
        {"item_id": "c", "item_duration_ms": 0, "pxtr": {}},
        {"item_id": 17, "item_duration_ms": None, "cached_ratio": None, "pxtr": {"fpr": float("nan")}},
    ]
    fast = encode_candidates(request_, candidates, CONFIG)
    slow = encode_batch(candidate_impressions(request_, candidates), CONFIG)
    assert set(fast) == set(slow)
    for name in slow:
        assert fast[name].dtype == slow[name].dtype and fast[name].shape == slow[name].shape, name
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
    empty = encode_candidates(request_, [], CONFIG)
    assert all(v.shape[0] == 0 for v in empty.values())


def test_encode_candidates_rejects_what_encode_batch_rejects():
    request_ = {"user_id": "u1", "recent_watched": []}
    with pytest.raises(RankingInputError):
        encode_candidates(request_, [{"item_id": "a"}, {"item_id": ""}], CONFIG)
    with pytest.raises(RankingInputError):
        encode_candidates(request_, [{"item_id": "a"}, {"item_id": "b", "pxtr": [1]}], CONFIG)
    with pytest.raises(RankingInputError):
        encode_candidates({"recent_watched": "abc"}, [{"item_id": "a"}], CONFIG)
