"""Model-version lifecycle and the KION promotion rule (pure, table-driven)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from processors.ranking.errors import RegistryError
from processors.ranking.registry import (
    ModelState,
    ModelVersion,
    Registry,
    decide_promotion,
    evaluate_candidate,
    production_history,
    promote,
    record_evaluation,
    register,
    reject,
    rollback,
    stage,
)

T = datetime(2024, 3, 1, tzinfo=timezone.utc)


def m(evr, lvr=0.8, svr=0.8, fpr=0.8):
    return {"evr": evr, "lvr": lvr, "svr": svr, "fpr": fpr}


@pytest.mark.parametrize(
    ("candidate", "history", "tolerance", "promote_expected", "failing"),
    [
        (m(0.80), [], 0.0, True, []),  # first model: nothing to compare with
        (m(0.80), [m(0.80)], 0.0, True, []),  # equal is not a drop
        (m(0.79), [m(0.80)], 0.0, False, ["evr"]),
        (m(0.79), [m(0.80)], 0.01, True, []),  # within tolerance
        (m(0.789), [m(0.80)], 0.01, False, ["evr"]),
        (m(0.80), [m(0.78), m(0.80), m(0.82)], 0.0, True, []),  # mean of last N = 0.80
        (m(0.80), [m(0.79), m(0.81), m(0.82)], 0.0, False, ["evr"]),  # mean 0.8067
        (m(0.85, fpr=0.70), [m(0.80)], 0.05, False, ["fpr"]),  # one task dropping blocks it
        (m(None), [m(0.80)], 0.0, False, ["evr"]),  # missing candidate metric blocks
        (m(0.70), [m(None)], 0.0, True, []),  # no reference for evr: not a blocker
        (m(0.80), [m(0.80, svr=None), m(0.80, svr=0.9)], 0.0, False, ["svr"]),  # None values skipped in the mean
    ],
)
def test_decide_promotion(candidate, history, tolerance, promote_expected, failing):
    decision = decide_promotion(candidate, history, tolerance)
    assert decision.promote is promote_expected
    assert sorted(t for t, c in decision.checks.items() if not c.ok) == failing
    assert decision.reasons


def test_decide_promotion_uses_only_the_last_n_evaluations():
    history = [m(0.95), m(0.80), m(0.80)]
    assert not decide_promotion(m(0.81), history).promote
    assert decide_promotion(m(0.81), history, last_n=2).promote
    with pytest.raises(RegistryError):
        decide_promotion(m(0.8), history, tolerance=-0.1)


def version(name, days=0, metrics=None):
    return ModelVersion(
        version=name,
        created_at=T + timedelta(days=days),
        sha256=name * 4,
        paths={"tflite_float32": f"s3://models/{name}.tflite"},
        metrics=metrics or {},
    )


def test_lifecycle_promote_archives_the_previous_production():
    reg = register(Registry(), version("v1"))
    assert reg.get("v1").state is ModelState.NONE
    reg = promote(stage(reg, "v1", T), "v1", T)
    reg = register(reg, version("v2", 1))
    reg = promote(stage(reg, "v2", T + timedelta(days=1)), "v2", T + timedelta(days=1))
    assert reg.production().version == "v2"
    assert reg.get("v1").state is ModelState.ARCHIVED
    assert [(t.from_state, t.to_state) for t in reg.get("v1").transitions] == [
        (ModelState.NONE, ModelState.STAGING),
        (ModelState.STAGING, ModelState.PRODUCTION),
        (ModelState.PRODUCTION, ModelState.ARCHIVED),
    ]


def test_rollback_to_a_given_version():
    reg = Registry()
    for n in range(1, 4):
        reg = register(reg, version(f"v{n}", n))
        reg = promote(stage(reg, f"v{n}", T), f"v{n}", T + timedelta(days=n))
    reg = rollback(reg, "v1", T + timedelta(days=5))
    assert reg.production().version == "v1"
    assert reg.get("v3").state is ModelState.ARCHIVED and reg.get("v2").state is ModelState.ARCHIVED
    assert reg.get("v1").transitions[-1].reason == "rollback"
    assert len(reg.in_state(ModelState.PRODUCTION)) == 1


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (lambda r: promote(r, "new", T), "illegal_transition"),  # NONE cannot skip STAGING
        (lambda r: rollback(r, "live", T), "illegal_transition"),  # target must be ARCHIVED
        (lambda r: rollback(r, "new", T), "illegal_transition"),
        (lambda r: stage(r, "live", T), "illegal_transition"),
        (lambda r: reject(r, "new", T), "illegal_transition"),
        (lambda r: register(r, version("live")), "duplicate_version"),
        (lambda r: register(r, ModelVersion("x", T, "h", state=ModelState.STAGING)), "bad_state"),
        (lambda r: stage(r, "ghost", T), "unknown_version"),
    ],
)
def test_illegal_operations_raise_coded_errors(action, code):
    reg = register(Registry(), version("live"))
    reg = promote(stage(reg, "live", T), "live", T)
    reg = register(reg, version("new"))
    with pytest.raises(RegistryError) as err:
        action(reg)
    assert err.value.code == code


def test_evaluate_candidate_promotes_or_keeps_the_old_model():
    reg = register(Registry(), version("v1"))
    reg = promote(stage(reg, "v1", T), "v1", T)
    for day, auc in enumerate([0.80, 0.81, 0.82]):
        reg = record_evaluation(reg, "v1", m(auc), T + timedelta(hours=day))
    assert production_history(reg, 2) == [m(0.81), m(0.82)]
    worse = stage(register(reg, version("v2", 1, m(0.805))), "v2", T)
    after, decision = evaluate_candidate(worse, "v2", T + timedelta(days=1), last_n=2)
    assert not decision.promote and after.production().version == "v1"
    assert after.get("v2").state is ModelState.ARCHIVED and "evr:dropped" in after.get("v2").transitions[-1].reason
    better = stage(register(reg, version("v3", 2, m(0.83))), "v3", T)
    after, decision = evaluate_candidate(better, "v3", T + timedelta(days=2), last_n=2)
    assert decision.promote and after.production().version == "v3"
    assert after.get("v1").state is ModelState.ARCHIVED


def test_records_round_trip_through_json():
    reg = register(Registry(), version("v1", metrics=m(0.8, svr=None)))
    reg = promote(stage(reg, "v1", T), "v1", T)
    reg = record_evaluation(reg, "v1", m(0.81), T + timedelta(hours=4))
    restored = Registry.from_dict(json.loads(json.dumps(reg.to_dict())))
    assert restored == reg
    with pytest.raises(RegistryError) as err:
        ModelVersion.from_dict({"version": "x"})
    assert err.value.code == "bad_record"
