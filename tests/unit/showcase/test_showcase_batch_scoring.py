"""The builder's batched model scoring (the likely candidates of a batch of users scored in a few large
LiteRT calls, the rest on demand) gives the same showcases as scoring each user's shelves on demand,
with a real exported model run by LiteRT."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from support.ranking import TINY_FEATURES, labelled_samples, trained_tiny_trainer

from demo.showcase_sample import sample_world
from processors.ranking.device import DeviceRanker
from processors.ranking.export import FLOAT_KIND, ExportConfig, export_version
from processors.ranking.features import FeatureConfig, encode_candidates
from processors.ranking.serving import PoolEncoder, candidate_rows, ranking_request
from processors.showcase import assemble
from processors.showcase.assemble import ModelScores, model_candidates
from streams.capabilities.ranking.serving import ServingModels
from streams.capabilities.showcase.builder import _durations, model_scores_batch, model_scores_for

NOW = datetime(2025, 3, 1, 20, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ranker(tmp_path_factory) -> DeviceRanker:
    trainer = trained_tiny_trainer()
    out = tmp_path_factory.mktemp("batch-export")
    export = export_version(trainer, out, "b1", list(labelled_samples())[-64:], ExportConfig(quantize=False))
    manifest = json.loads(Path(export.manifest_path).read_text())
    return DeviceRanker(manifest, Path(export.artifacts[FLOAT_KIND].path).read_bytes())


@pytest.fixture(scope="module")
def world():
    return sample_world(1500, seed=5, now=NOW)


def _models(ranker: DeviceRanker, arms=("v1", "v2")) -> ServingModels:
    models = ServingModels(redis=None, name="ranking")
    models.rankers = {arm: ranker for arm in arms}
    models.arms = tuple(arms)
    return models


def _users(world, n: int = 60):
    return [(v, h) for v, h in world.users(n, seed=3) if v.user_id is not None]


def _per_user(models, index, world, users, params=None):
    out = []
    for viewer, history in users:
        scores = model_scores_for(models, index, index.policy, viewer.user_id, viewer.device_type, history.recent,
                                  world.similar, NOW)
        out.append((assemble(index, viewer, history, similar=world.similar, model=scores, params=params), scores))
    return out


def _batched(models, index, world, users, params=None):
    all_scores = model_scores_batch(models, index, [(v, h, params) for v, h in users], world.similar, NOW)
    return [(assemble(index, viewer, history, similar=world.similar, model=scores, params=params), scores)
            for (viewer, history), scores in zip(users, all_scores)]


@pytest.mark.parametrize("params", [None, {"for_you.mmr_lambda": "0.9", "for_you.model_share": "0.5"}])
def test_batched_scoring_builds_the_showcases_of_per_user_scoring(ranker, world, params):
    index, users = world.index(), _users(world)
    models = _models(ranker)
    per_user = _per_user(models, index, world, users, params)
    batched = _batched(models, index, world, users, params)
    assert [s for s, _ in batched] == [s for s, _ in per_user]
    # the shelves asked the model for the same titles and got the same scores, bit for bit
    for (_, a), (_, b) in zip(batched, per_user):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.scores == b.scores and a.version == b.version
    stamped = [s for showcase, _ in batched for s in showcase.shelves if "model_version" in s.meta]
    assert len(stamped) >= len(users) and {s.meta["model_version"] for s in stamped} == {"v1", "v2"}
    # the guess covered what the shelves asked for: they never called LiteRT themselves
    asked = [m.asked for _, m in batched if m is not None]
    assert sum(a[0] for a in asked) > 0 and sum(a[1] for a in asked) == 0


def test_titles_missing_from_the_guess_are_scored_on_demand(ranker, world, monkeypatch):
    index, users = world.index(), _users(world, 30)
    models = _models(ranker, ("v1",))
    per_user = _per_user(models, index, world, users)
    import streams.capabilities.showcase.builder as builder

    def half(*args, **kwargs):
        return model_candidates(*args, **kwargs)[::2]

    monkeypatch.setattr(builder, "model_candidates", half)
    batched = _batched(models, index, world, users)
    assert [s for s, _ in batched] == [s for s, _ in per_user]
    assert sum(m.asked[1] for _, m in batched if m is not None) > 0


def test_a_failing_batch_call_leaves_the_shelves_their_own_scoring(ranker, world, monkeypatch):
    index, users = world.index(), _users(world, 20)
    models = _models(ranker, ("v1",))
    per_user = _per_user(models, index, world, users)
    calls = {"n": 0}
    real = DeviceRanker.score_encoded

    def flaky(self, inputs, pad_to=256, tail_step=32):
        calls["n"] += 1
        if pad_to == 256:
            raise RuntimeError("LiteRT away")
        return real(self, inputs, pad_to=pad_to, tail_step=tail_step)

    monkeypatch.setattr(DeviceRanker, "score_encoded", flaky)
    batched = _batched(models, index, world, users)
    assert [s for s, _ in batched] == [s for s, _ in per_user] and calls["n"] > 1


def test_prepared_inputs_of_another_build_are_not_used(world):
    index, users = world.index(), _users(world, 10)
    (viewer_a, history_a), (viewer_b, history_b) = users[0], users[1]
    memo: dict = {}
    model_candidates(index, viewer_a, history_a, similar=world.similar, prepared=memo)
    assert set(memo) == {"hidden", "for_you"}
    scores = {i: float(len(i)) for i in index.titles}
    plain = assemble(index, viewer_b, history_b, similar=world.similar, model=ModelScores("r", "v", dict(scores)))
    wrong = assemble(index, viewer_b, history_b, similar=world.similar,
                     model=ModelScores("r", "v", dict(scores), prepared=memo))
    assert wrong == plain


def test_rows_score_the_same_in_any_call(ranker, world):
    index = world.index()
    items = sorted(index.titles)[:300]
    encoder = PoolEncoder(ranker.features)
    durations = _durations(index)
    requests = [ranking_request(f"u{k}", "TV", items[k:k + 5], NOW) for k in range(4)]
    pools = [(r, items[k * 70:(k + 1) * 70]) for k, r in enumerate(requests)]
    together = ranker.score_encoded(encoder.encode(pools, durations), pad_to=256)
    alone = np.concatenate([ranker.score_encoded(encoder.encode([p], durations), pad_to=32) for p in pools])
    assert np.array_equal(together, alone)


@pytest.mark.parametrize("config", [TINY_FEATURES, FeatureConfig(item_buckets=97, recent_len=4, upcoming_len=3)])
def test_pool_encoder_equals_the_shared_feature_code(config):
    durations = {"a": 90_000, "b": 0, "c": 7_200_000, "d": 1_500}
    requests = [
        {"user_id": "u1", "device_type": "TV", "surface": "HOME", "recent_watched": ["a", "x", "y"],
         "context": {"hour_of_day": 21}, "upcoming": ["b", "c"]},
        ranking_request(None, "FRIDGE", [], NOW, device_id="d9"),
        ranking_request("u2", "WEB", ["c"] * 9, NOW),
    ]
    pools = [(requests[0], ["a", "b", "zz"]), (requests[1], []), (requests[1], ["d"]), (requests[2], ["c", "a", "b"])]
    encoder = PoolEncoder(config)
    for _ in range(2):  # the second time from the title cache
        got = encoder.encode(pools, durations)
        want = [encode_candidates(r, candidate_rows(items, durations), config) for r, items in pools if items]
        assert set(got) == set(want[0])
        for name in want[0]:
            expected = np.concatenate([w[name] for w in want])
            assert got[name].dtype == expected.dtype, name
            np.testing.assert_array_equal(got[name], expected, err_msg=name)
    # a new catalogue (a new durations map) drops the cached title features
    changed = dict(durations, a=10_000)
    got = encoder.encode([(requests[0], ["a"])], changed)
    np.testing.assert_array_equal(got["numeric_buckets"],
                                  encode_candidates(requests[0], candidate_rows(["a"], changed), config)["numeric_buckets"])
    empty = encoder.encode([], durations)
    assert all(v.shape[0] == 0 for v in empty.values())
