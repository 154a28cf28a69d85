"""GRF's upcoming-list input: optional in the feature config, trained, exported and served with LiteRT."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from support.ranking import TINY_FEATURES, TINY_MODEL, labelled_samples

from processors.ranking.device import DeviceRanker
from processors.ranking.export import FLOAT_KIND, ExportConfig, export_version
from processors.ranking.features import (
    FeatureConfig,
    candidate_impressions,
    encode_batch,
    encode_candidates,
    input_specs,
)
from processors.ranking.trainer import OnlineTrainer, TrainerConfig

UPCOMING = replace(TINY_FEATURES, upcoming_len=4)


def test_the_input_exists_only_when_asked_and_old_configs_load():
    assert "upcoming_ids" not in input_specs(TINY_FEATURES)
    assert input_specs(UPCOMING)["upcoming_ids"] == ((4,), "int32")
    old = {k: v for k, v in TINY_FEATURES.to_dict().items() if k != "upcoming_len"}  # a manifest before the field
    assert FeatureConfig.from_dict(old).upcoming_len == 0


def test_fast_candidate_encoding_matches_with_upcoming_lists():
    request = {"user_id": "u", "recent_watched": ["a"], "upcoming": ["q1", "q2", "q3", "q4", "q5"]}
    candidates = [{"item_id": "x"}, {"item_id": "y", "upcoming": ["z"]}, {"item_id": "w", "upcoming": []}]
    fast = encode_candidates(request, candidates, UPCOMING)
    slow = encode_batch(candidate_impressions(request, candidates), UPCOMING)
    for name in slow:
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
    assert fast["upcoming_ids"][0].tolist()[3] != 0 and fast["upcoming_ids"][1].tolist()[1:] == [0, 0, 0]


def test_a_model_with_the_upcoming_input_trains_exports_and_ranks_on_litert(tmp_path: Path):
    samples = [dict(s, upcoming=[f"i{(i * 7 + k) % 120}" for k in range(3)]) for i, s in enumerate(labelled_samples())]
    trainer = OnlineTrainer(UPCOMING, TINY_MODEL, TrainerConfig(holdout_every=4, learning_rate=0.01))
    for i in range(0, 512, 64):
        trainer.train_step(samples[i:i + 64])
    assert any("upcoming_attention" in w.path for w in trainer.model.weights)
    export = export_version(trainer, tmp_path, "up", samples[:64], ExportConfig(quantize=False))
    manifest = json.loads(Path(export.manifest_path).read_text())
    assert "upcoming_ids" in {e["name"] for e in manifest["input_signature"]}
    ranker = DeviceRanker(manifest, Path(export.artifacts[FLOAT_KIND].path).read_bytes())
    request = {"user_id": "u1", "device_type": "TV", "surface": "HOME", "recent_watched": ["i1", "i2"]}
    candidates = [{"item_id": f"i{i}", "item_duration_ms": 60_000} for i in range(24)]
    with_list = ranker.rank({**request, "upcoming": ["i5", "i6"]}, candidates)
    without = ranker.rank(request, candidates)
    assert len(with_list) == 24
    scores = {r.item_id: r.score for r in with_list}
    assert any(abs(scores[r.item_id] - r.score) > 1e-7 for r in without)  # the list is an input that matters
    keras_scores = trainer.predict(candidate_impressions({**request, "upcoming": ["i5", "i6"]}, candidates))
    lite = ranker.predict(candidate_impressions({**request, "upcoming": ["i5", "i6"]}, candidates))
    np.testing.assert_allclose(lite, keras_scores, atol=1e-4)
