"""The shared feature function: determinism, shapes, padding, missing values, errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from processors.ranking.errors import RankingInputError
from processors.ranking.features import (
    FeatureConfig,
    candidate_impressions,
    encode_batch,
    encode_labels,
    encode_one,
    input_specs,
    stable_bucket,
)

REPO = Path(__file__).resolve().parents[2]


def sample(**patch):
    base = {
        "impression_id": "x1",
        "user_id": "u42",
        "device_id": "dev-1",
        "device_type": "MOBILE",
        "surface": "AUTOPLAY",
        "item_id": "film-9",
        "recent_watched": [f"film-{i}" for i in range(30)],
        "pxtr": {"evr": 0.6, "lvr": 0.3, "svr": 0.05, "fpr": 0.2},
        "context": {
            "network_kbps": 1_600,
            "device_score": 0.55,
            "cached_ratio": 0.3,
            "item_duration_ms": 95_000,
            "hour_of_day": 21,
        },
        "labels": {"evr": True, "lvr": False, "svr": False, "fpr": False},
    }
    base.update(patch)
    return base


def test_shapes_and_dtypes_match_the_input_specs():
    config = FeatureConfig(recent_len=20)
    batch = encode_batch([sample(), sample(item_id="other")], config)
    for name, (shape, dtype) in input_specs(config).items():
        assert batch[name].shape == (2, *shape), name
        assert batch[name].dtype == np.dtype(dtype), name
    empty = encode_batch([], config)
    assert all(empty[name].shape == (0, *shape) for name, (shape, _) in input_specs(config).items())


def test_hash_is_blake2b_of_salted_value_and_skips_the_padding_bucket():
    value = stable_bucket("salt", "item", "film-9", 1000)
    digest = hashlib.blake2b(b"salt\x1fitem\x1ffilm-9", digest_size=8).digest()
    assert value == 1 + int.from_bytes(digest, "little") % 999
    buckets = {stable_bucket("salt", "item", f"x{i}", 50) for i in range(5_000)}
    assert buckets == set(range(1, 50))  # 0 never used, every other bucket reachable


def test_candidate_item_and_recent_list_share_the_item_hash():
    config = FeatureConfig()
    row = encode_one(sample(recent_watched=["film-9"]), config)
    assert row["recent_ids"][0] == row["item_id"]


def test_recent_list_is_truncated_newest_first_and_zero_padded():
    config = FeatureConfig(recent_len=5)
    long_row = encode_one(sample(), config)
    expected = [stable_bucket(config.hash_salt, "item", f"film-{i}", config.item_buckets) for i in range(5)]
    assert long_row["recent_ids"] == expected
    short_row = encode_one(sample(recent_watched=["a", "b"]), config)
    assert short_row["recent_ids"][2:] == [0, 0, 0] and all(short_row["recent_ids"][:2])
    assert encode_one(sample(recent_watched=None), config)["recent_ids"] == [0] * 5


def test_numeric_buckets_follow_the_boundaries():
    config = FeatureConfig()
    row = encode_one(sample(), config)
    # network 1600 -> > 1500 (3rd bound) -> bucket 4; score 0.55 -> 6; cached 0.3 -> 4;
    # duration 95 s -> between 60 and 120 -> 5; hour 21 -> 22
    assert row["numeric_buckets"] == [4, 6, 4, 5, 22]
    edges = encode_one(
        sample(
            context={
                "network_kbps": 300,
                "device_score": 0.0,
                "cached_ratio": 1.0,
                "item_duration_ms": 0,
                "hour_of_day": 0,
            }
        ),
        config,
    )
    assert edges["numeric_buckets"] == [2, 1, 7, 0, 1]  # duration 0 = unknown -> 0
    missing = encode_one(sample(context={}), config)
    assert missing["numeric_buckets"] == [0, 0, 0, 0, 0]
    nan = encode_one(sample(context={"network_kbps": float("nan"), "device_score": "fast"}), config)
    assert nan["numeric_buckets"][:2] == [0, 0]
    huge = encode_one(
        sample(
            context={
                "network_kbps": 1e9,
                "device_score": 9.0,
                "cached_ratio": 9.0,
                "item_duration_ms": 10**12,
                "hour_of_day": 99,
            }
        ),
        config,
    )
    assert huge["numeric_buckets"] == [size - 1 for size in config.numeric_vocab_sizes]  # top bucket fits the table


def test_categoricals_pxtr_and_guests():
    config = FeatureConfig()
    row = encode_one(sample(device_type="SMART_FRIDGE", surface="HOME", pxtr={"evr": 1.7, "svr": None}), config)
    assert row["device_type"] == 0 and row["surface"] == 1
    assert row["pxtr"] == [1.0, 0.0, 0.0, 0.0]
    guest = encode_one(sample(user_id=None, device_id="dev-1"), config)
    other_guest = encode_one(sample(user_id=None, device_id="dev-2"), config)
    assert guest["user_id"] != other_guest["user_id"]
    assert guest["user_id"] == stable_bucket(config.hash_salt, "user", "device:dev-1", config.user_buckets)


def test_encoding_is_identical_in_a_fresh_interpreter_with_another_hash_seed():
    config = FeatureConfig(item_buckets=977, user_buckets=331)
    here = encode_one(sample(), config)
    code = (
        "import json; from processors.ranking.features import FeatureConfig, encode_one;"
        "import sys; s=json.loads(sys.argv[1]); c=FeatureConfig(item_buckets=977, user_buckets=331);"
        "print(json.dumps(encode_one(s, c)))"
    )
    payload = json.dumps({k: v for k, v in sample().items()})
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, payload], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == json.loads(json.dumps(here))


def test_labels_matrix_and_missing_labels():
    labels = encode_labels([sample(), sample(labels={"evr": False, "lvr": False, "svr": True, "fpr": False})])
    assert labels.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0]]
    with pytest.raises(RankingInputError) as err:
        encode_labels([sample(labels=None)])
    assert err.value.code == "missing_labels"
    with pytest.raises(RankingInputError):
        encode_labels([sample(labels={"evr": True})])


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        ({"item_id": None}, "missing_field"),
        ({"recent_watched": "film-1"}, "bad_recent_watched"),
        ({"context": [1, 2]}, "bad_context"),
        ({"pxtr": 0.5}, "bad_pxtr"),
    ],
)
def test_bad_samples_raise_machine_readable_errors(patch, code):
    with pytest.raises(RankingInputError) as err:
        encode_one(sample(**patch), FeatureConfig())
    assert err.value.code == code


def test_config_round_trips_through_json():
    config = FeatureConfig(item_buckets=1234, recent_len=7, surfaces=("HOME", "FEED"))
    assert FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(RankingInputError):
        FeatureConfig.from_dict({"unknown_knob": 1})
    with pytest.raises(RankingInputError):
        FeatureConfig(item_buckets=1)


def test_candidate_impressions_merge_request_context_with_each_candidate():
    request = {
        "user_id": "u1",
        "device_id": "d",
        "device_type": "TV",
        "surface": "AUTOPLAY",
        "recent_watched": ["a"],
        "context": {"network_kbps": 900, "device_score": 0.4, "cached_ratio": 0.0, "hour_of_day": 8},
    }
    cands = [
        {"item_id": "x", "pxtr": {"evr": 0.2}, "item_duration_ms": 5_000},
        {"item_id": "y", "pxtr": {}, "item_duration_ms": 9_000, "cached_ratio": 1.0},
    ]
    imps = candidate_impressions(request, cands)
    assert [i["item_id"] for i in imps] == ["x", "y"]
    assert imps[0]["context"]["cached_ratio"] == 0.0 and imps[1]["context"]["cached_ratio"] == 1.0
    assert imps[1]["context"]["item_duration_ms"] == 9_000 and imps[0]["context"]["network_kbps"] == 900
    assert request["context"].get("item_duration_ms") is None  # request not mutated
