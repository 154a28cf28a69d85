"""Playoff arms, per-version online metrics and the registry's online history (pure)."""
from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timezone

import pytest

from processors.ranking.errors import RankingInputError, RegistryError
from processors.ranking.online import compare_versions, histogram_auc, merge_increments, sample_increments, summarize
from processors.ranking.registry import (
    ModelState,
    ModelVersion,
    Registry,
    promote_on_online,
    record_online,
    register,
    stage,
    start_playoff,
    stop_playoff,
    promote,
)
from processors.ranking.serving import assign_arm

AT = datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_arms_are_stable_and_even():
    arms = ("v1", "v2", "v3")
    first = {f"user:{i}": assign_arm(f"user:{i}", arms) for i in range(6000)}
    assert first == {u: assign_arm(u, arms) for u in first}
    counts = Counter(first.values())
    assert set(counts) == set(arms) and min(counts.values()) > 1800
    assert assign_arm("user:1", ()) is None
    with pytest.raises(RankingInputError):
        assign_arm("user:1", tuple(f"v{i}" for i in range(7)))


def _sample(version, score, evr, svr=False):
    return {"model_version": version, "model_score": score,
            "labels": {"evr": evr, "lvr": evr and score > 1, "svr": svr, "fpr": False}}


def test_online_rates_and_auc_match_the_direct_computation():
    rng = random.Random(4)
    samples = []
    for _ in range(4000):
        version = rng.choice(["va", "vb"])
        score = rng.uniform(-1, 2)
        p = 0.2 + (0.25 * (score + 1) if version == "vb" else 0.1)
        samples.append(_sample(version, score, rng.random() < p, svr=rng.random() < 0.1))
    samples.append({"model_version": None, "labels": {"evr": True}})  # not model-served: not counted
    # counters merged in two halves in any order give the same totals (workers add them up)
    halves = [merge_increments(samples[:1500]), merge_increments(samples[1500:])]
    total = Counter()
    for half in halves:
        total.update(half)
    summary = summarize({k.encode(): str(v) for k, v in total.items()})
    assert set(summary) == {"va", "vb"}
    for version in ("va", "vb"):
        mine = [s for s in samples if s["model_version"] == version]
        assert summary[version]["impressions"] == len(mine)
        assert summary[version]["evr"] == pytest.approx(sum(s["labels"]["evr"] for s in mine) / len(mine), abs=1e-4)
        pos = [s["model_score"] for s in mine if s["labels"]["evr"]]
        neg = [s["model_score"] for s in mine if not s["labels"]["evr"]]
        exact = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
        assert summary[version]["auc_evr"] == pytest.approx(exact, abs=0.01)
    assert summary["vb"]["auc_evr"] > 0.6 and summary["vb"]["evr"] > summary["va"]["evr"]
    decision = compare_versions(summary["vb"], summary["va"], min_impressions=500)
    assert decision.promote, decision.reasons
    assert not compare_versions(summary["va"], summary["vb"], min_impressions=500).promote
    assert not compare_versions(summary["vb"], summary["va"], min_impressions=10_000).promote


def test_histogram_auc_edge_cases():
    assert histogram_auc([0, 1], [0, 0]) is None
    assert histogram_auc([0, 1], [1, 0]) == 1.0
    assert histogram_auc([1, 0], [1, 0]) == 0.5
    assert sample_increments({"model_version": "v", "labels": None}) == {}


def _registry() -> Registry:
    registry = Registry()
    for name in ("va", "vb", "vc"):
        registry = register(registry, ModelVersion(name, AT, "00"))
        registry = stage(registry, name, AT)
    return promote(registry, "va", AT)


def test_playoff_serving_arms_and_online_history_survive_a_round_trip():
    registry = start_playoff(_registry(), ["vb", "vc", "vb"])
    assert registry.serving() == ("va", "vb", "vc")
    registry = record_online(registry, "vb", {"at": AT.isoformat(), "impressions": 10, "evr": 0.5})
    registry = record_online(registry, "vb", {"at": AT.isoformat(), "impressions": 20, "evr": 0.4}, keep=1)
    back = Registry.from_dict(registry.to_dict())
    assert back == registry and back.get("vb").online == ({"at": AT.isoformat(), "impressions": 20, "evr": 0.4},)
    # a registry document written before playoffs existed still loads
    old = {"versions": [{k: v for k, v in r.items() if k != "online"} for r in registry.to_dict()["versions"]]}
    assert Registry.from_dict(old).playoff == () and Registry.from_dict(old).get("vb").online == ()
    assert stop_playoff(registry).serving() == ("va",)
    with pytest.raises(RegistryError):
        start_playoff(registry, ["va"])
    with pytest.raises(RegistryError):
        start_playoff(registry, [f"v{i}" for i in range(6)])


def test_online_promotion_moves_the_candidate_to_production_and_out_of_the_playoff():
    registry = start_playoff(_registry(), ["vb", "vc"])
    good = compare_versions({"impressions": 5000, "evr": 0.40, "svr": 0.10}, {"impressions": 5000, "evr": 0.35,
                                                                               "svr": 0.10})
    after = promote_on_online(registry, "vb", AT, good)
    assert after.production().version == "vb" and after.get("va").state is ModelState.ARCHIVED
    assert after.playoff == ("vc",) and after.serving() == ("vb", "vc")
    bad = compare_versions({"impressions": 5000, "evr": 0.36, "svr": 0.10}, {"impressions": 5000, "evr": 0.35,
                                                                              "svr": 0.10})
    with pytest.raises(RegistryError):
        promote_on_online(registry, "vb", AT, bad)


def test_the_label_join_keeps_request_id_position_and_serving_version_on_samples():
    from datetime import timedelta

    from processors.ranking.labels import LabelJoiner

    joiner = LabelJoiner()
    shown = AT
    impression = {"impression_id": "r1:2:0", "request_id": "r1", "row": 2, "position": 0, "shelf_id": "for_you",
                  "user_id": "u1", "device_id": "d1", "item_id": "x", "surface": "HOME", "model_version": "vb",
                  "model_score": 0.7, "context": {"item_duration_ms": 60_000}, "event_time": shown}
    joiner.add_impression(impression)
    for kind, at, pos in (("START", 5, 0), ("STOP", 65, 60_000)):
        joiner.add_playback({"session_id": "s", "user_id": "u1", "device_id": "d1", "item_id": "x", "event_type": kind,
                             "position_ms": pos, "duration_ms": 60_000, "event_time": shown + timedelta(seconds=at)})
    (sample,) = joiner.expire(shown + timedelta(hours=1))
    got = sample.impression
    assert (got["request_id"], got["row"], got["position"], got["shelf_id"]) == ("r1", 2, 0, "for_you")
    assert got["labels"]["evr"] and got["model_version"] == "vb"
    assert sample_increments(got)["vb|n"] == 1 and sample_increments(got)["vb|evr"] == 1


def test_a_snapshot_is_appended_only_when_a_version_has_new_figures():
    from streams.capabilities.ranking.online import apply_snapshot

    registry = _registry()
    summary = {"va": {"impressions": 10, "evr": 0.5}, "ghost": {"impressions": 3}}
    registry, recorded = apply_snapshot(registry, summary, AT)
    assert recorded == 1 and registry.get("va").online[-1]["at"] == AT.isoformat()
    registry, recorded = apply_snapshot(registry, summary, AT)
    assert recorded == 0 and len(registry.get("va").online) == 1
    registry, recorded = apply_snapshot(registry, {"va": {"impressions": 12, "evr": 0.5}}, AT)
    assert recorded == 1 and len(registry.get("va").online) == 2
