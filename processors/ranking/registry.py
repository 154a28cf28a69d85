"""Model-version lifecycle and KION's promotion rule, as pure functions on plain data.

States: NONE -> STAGING -> PRODUCTION -> ARCHIVED, plus ARCHIVED -> PRODUCTION for a
rollback. At most one version is in PRODUCTION; promoting or rolling back archives
the previous one. Every function returns a new ``Registry``; ``to_dict``/``from_dict``
give JSON-ready records the I/O shell persists (Redis hash, S3 object...).

Promotion rule (KION): compare the candidate's offline metrics with the active model's
last N evaluations; promote only if, for every task, candidate AUC >= mean(last N AUCs)
- tolerance. Without any production history the first candidate is promoted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any

from processors.ranking.errors import RegistryError
from processors.ranking.tasks import TASKS

# Model names: they appear in Redis keys, S3 prefixes and URLs
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def model_name_ok(name: str) -> bool:
    return bool(MODEL_NAME_PATTERN.match(name))


GATE_TASKS: tuple[str, ...] = ("choppy",)  # the gate model's promotion metric: AUC of P(choppy)


def gate_model_name(ranking_name: str) -> str:
    """The registry name the gate model of a ranking model is published under (``ranking`` -> ``ranking-gate``)."""
    return f"{ranking_name}-gate"



class ModelState(str, Enum):
    NONE = "NONE"
    STAGING = "STAGING"
    PRODUCTION = "PRODUCTION"
    ARCHIVED = "ARCHIVED"


ALLOWED_TRANSITIONS: dict[ModelState, frozenset[ModelState]] = {
    ModelState.NONE: frozenset({ModelState.STAGING}),
    ModelState.STAGING: frozenset({ModelState.PRODUCTION, ModelState.ARCHIVED}),
    ModelState.PRODUCTION: frozenset({ModelState.ARCHIVED}),
    ModelState.ARCHIVED: frozenset({ModelState.PRODUCTION}),
}

Metrics = Mapping[str, float | None]
_FLOAT_SLACK = 1e-9  # a mean of equal AUCs must not count as a drop


@dataclass(frozen=True)
class Evaluation:
    at: datetime
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class Transition:
    at: datetime
    from_state: ModelState
    to_state: ModelState
    reason: str


@dataclass(frozen=True)
class ModelVersion:
    version: str
    created_at: datetime
    sha256: str
    paths: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    state: ModelState = ModelState.NONE
    evaluations: tuple[Evaluation, ...] = ()
    transitions: tuple[Transition, ...] = ()
    online: tuple[dict[str, Any], ...] = ()  # online metrics snapshots from the stream, oldest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "sha256": self.sha256,
            "paths": dict(self.paths),
            "metrics": dict(self.metrics),
            "state": self.state.value,
            "evaluations": [{"at": e.at.isoformat(), "metrics": dict(e.metrics)} for e in self.evaluations],
            "transitions": [
                {"at": t.at.isoformat(), "from": t.from_state.value, "to": t.to_state.value, "reason": t.reason}
                for t in self.transitions
            ],
            "online": [dict(o) for o in self.online],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelVersion:
        try:
            return cls(
                version=str(data["version"]),
                created_at=datetime.fromisoformat(data["created_at"]),
                sha256=str(data["sha256"]),
                paths=dict(data.get("paths") or {}),
                metrics=dict(data.get("metrics") or {}),
                state=ModelState(data.get("state", "NONE")),
                evaluations=tuple(
                    Evaluation(datetime.fromisoformat(e["at"]), dict(e["metrics"])) for e in data.get("evaluations", ())
                ),
                transitions=tuple(
                    Transition(datetime.fromisoformat(t["at"]), ModelState(t["from"]), ModelState(t["to"]), t["reason"])
                    for t in data.get("transitions", ())
                ),
                online=tuple(dict(o) for o in data.get("online", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError("bad_record", f"cannot read model version record: {exc}") from exc


@dataclass(frozen=True)
class Registry:
    versions: tuple[ModelVersion, ...] = ()
    playoff: tuple[str, ...] = ()  # candidate versions serving traffic beside Production (at most 5)

    def get(self, version: str) -> ModelVersion:
        for record in self.versions:
            if record.version == version:
                return record
        raise RegistryError("unknown_version", f"no model version {version!r}", field="version")

    def production(self) -> ModelVersion | None:
        return next((v for v in self.versions if v.state is ModelState.PRODUCTION), None)

    def in_state(self, state: ModelState) -> list[ModelVersion]:
        return [v for v in self.versions if v.state is state]

    def serving(self) -> tuple[str, ...]:
        """The versions serving traffic, split by a stable hash: Production first, then the playoff."""
        current = self.production()
        arms = [current.version] if current is not None else []
        arms += [v for v in self.playoff if v not in arms]
        return tuple(arms)

    def to_dict(self) -> dict[str, Any]:
        return {"versions": [v.to_dict() for v in self.versions], "playoff": list(self.playoff)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Registry:
        return cls(tuple(ModelVersion.from_dict(v) for v in data.get("versions", ())),
                   tuple(str(v) for v in data.get("playoff", ()) or ()))


@dataclass(frozen=True)
class TaskCheck:
    candidate: float | None
    reference: float | None
    ok: bool


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]
    checks: dict[str, TaskCheck] = field(default_factory=dict)


def decide_promotion(
    candidate_metrics: Metrics,
    production_history: Sequence[Metrics],
    tolerance: float = 0.0,
    *,
    last_n: int | None = None,
    tasks: Sequence[str] = TASKS,
) -> Decision:
    """KION's rule: no task may fall below the active model's mean over its last N evaluations."""
    if tolerance < 0:
        raise RegistryError("bad_tolerance", "tolerance must be >= 0", field="tolerance")
    history = list(production_history)[-last_n:] if last_n else list(production_history)
    if not history:
        return Decision(True, ("no_production_history",))
    reasons: list[str] = []
    checks: dict[str, TaskCheck] = {}
    for task in tasks:
        values = [float(h[task]) for h in history if h.get(task) is not None]
        candidate = candidate_metrics.get(task)
        if not values:
            checks[task] = TaskCheck(candidate, None, True)
            reasons.append(f"{task}:no_reference")
            continue
        reference = sum(values) / len(values)
        if candidate is None:
            checks[task] = TaskCheck(None, reference, False)
            reasons.append(f"{task}:candidate_metric_missing")
            continue
        ok = candidate >= reference - tolerance - _FLOAT_SLACK
        checks[task] = TaskCheck(float(candidate), reference, ok)
        reasons.append(f"{task}:{'ok' if ok else 'dropped'} {candidate:.4f} vs {reference:.4f} (tol {tolerance:g})")
    return Decision(all(c.ok for c in checks.values()), tuple(reasons), checks)


def _transition(record: ModelVersion, to_state: ModelState, at: datetime, reason: str) -> ModelVersion:
    if to_state not in ALLOWED_TRANSITIONS[record.state]:
        raise RegistryError(
            "illegal_transition", f"{record.version}: {record.state.value} -> {to_state.value} is not allowed"
        )
    return replace(
        record, state=to_state, transitions=(*record.transitions, Transition(at, record.state, to_state, reason))
    )


def _replace(registry: Registry, *records: ModelVersion) -> Registry:
    by_version = {r.version: r for r in records}
    return replace(registry, versions=tuple(by_version.get(v.version, v) for v in registry.versions))


def register(registry: Registry, record: ModelVersion) -> Registry:
    if any(v.version == record.version for v in registry.versions):
        raise RegistryError("duplicate_version", f"version {record.version!r} already registered", field="version")
    if record.state is not ModelState.NONE:
        raise RegistryError("bad_state", "new versions start in NONE", field="state")
    return replace(registry, versions=(*registry.versions, record))


def stage(registry: Registry, version: str, at: datetime) -> Registry:
    return _replace(registry, _transition(registry.get(version), ModelState.STAGING, at, "staged"))


def _make_production(registry: Registry, version: str, at: datetime, reason: str) -> Registry:
    target = registry.get(version)
    if target.state is ModelState.PRODUCTION:
        raise RegistryError("already_production", f"{version} is already in production")
    promoted = _transition(target, ModelState.PRODUCTION, at, reason)
    current = registry.production()
    if current is None:
        return _replace(registry, promoted)
    return _replace(registry, promoted, _transition(current, ModelState.ARCHIVED, at, f"replaced by {version}"))


def promote(registry: Registry, version: str, at: datetime, reason: str = "promoted") -> Registry:
    if registry.get(version).state is not ModelState.STAGING:
        raise RegistryError("illegal_transition", f"only a STAGING version can be promoted, {version} is not")
    return _make_production(registry, version, at, reason)


def reject(registry: Registry, version: str, at: datetime, reason: str = "rejected") -> Registry:
    return _replace(registry, _transition(registry.get(version), ModelState.ARCHIVED, at, reason))


def rollback(registry: Registry, version: str, at: datetime) -> Registry:
    """Put an ARCHIVED ``version`` back into PRODUCTION; the current one is archived."""
    if registry.get(version).state is not ModelState.ARCHIVED:
        raise RegistryError("illegal_transition", f"rollback target {version} must be ARCHIVED")
    return _make_production(registry, version, at, "rollback")


def record_evaluation(registry: Registry, version: str, metrics: Metrics, at: datetime) -> Registry:
    record = registry.get(version)
    return _replace(registry, replace(record, evaluations=(*record.evaluations, Evaluation(at, dict(metrics)))))


def production_history(registry: Registry, last_n: int) -> list[dict[str, float | None]]:
    current = registry.production()
    if current is None:
        return []
    return [dict(e.metrics) for e in current.evaluations[-last_n:]] if last_n > 0 else []


def evaluate_candidate(
    registry: Registry, version: str, at: datetime, *, tolerance: float = 0.0, last_n: int = 5,
    tasks: Sequence[str] = TASKS,
) -> tuple[Registry, Decision]:
    """The whole KION step for a STAGING candidate: promote it, or archive it and keep the old one.
    ``tasks``: the metrics compared (the ranking model's four tasks; the gate model's ``GATE_TASKS``)."""
    candidate = registry.get(version)
    if candidate.state is not ModelState.STAGING:
        raise RegistryError("illegal_transition", f"candidate {version} must be STAGING")
    decision = decide_promotion(candidate.metrics, production_history(registry, last_n), tolerance, tasks=tasks)
    if decision.promote:
        return promote(registry, version, at, "; ".join(decision.reasons)), decision
    return reject(registry, version, at, "; ".join(decision.reasons)), decision


# -- playoff and online metrics ----------------------------------------------------------------------

MAX_PLAYOFF = 5  # + Production = at most 6 versions side by side
ONLINE_HISTORY = 200  # online snapshots kept per version


def start_playoff(registry: Registry, versions: Sequence[str]) -> Registry:
    """``versions`` serve traffic beside Production (a stable hash splits viewers evenly)."""
    wanted = list(dict.fromkeys(versions))
    if not wanted:
        raise RegistryError("empty_playoff", "name at least one candidate version", field="versions")
    if len(wanted) > MAX_PLAYOFF:
        raise RegistryError("too_many_candidates", f"at most {MAX_PLAYOFF} candidates beside Production")
    for version in wanted:
        if registry.get(version).state is ModelState.PRODUCTION:
            raise RegistryError("already_production", f"{version} is Production; it serves anyway", field="versions")
    return replace(registry, playoff=tuple(wanted))


def stop_playoff(registry: Registry) -> Registry:
    return replace(registry, playoff=())


def record_online(registry: Registry, version: str, snapshot: Mapping[str, Any], keep: int = ONLINE_HISTORY
                  ) -> Registry:
    """Append one online-metrics snapshot (cumulative figures at ``snapshot['at']``) to a version's history."""
    record = registry.get(version)
    history = (*record.online, dict(snapshot))[-keep:]
    return _replace(registry, replace(record, online=history))


def promote_on_online(registry: Registry, version: str, at: datetime, decision: Decision) -> Registry:
    """Make a playoff candidate Production on an online decision (``online.compare_versions``)."""
    if not decision.promote:
        raise RegistryError("not_significant", "; ".join(decision.reasons), field="version")
    record = registry.get(version)
    if record.state is ModelState.ARCHIVED:
        out = _make_production(registry, version, at, "online: " + "; ".join(decision.reasons))
    elif record.state is ModelState.STAGING:
        out = promote(registry, version, at, "online: " + "; ".join(decision.reasons))
    else:
        raise RegistryError("illegal_transition", f"{version} is {record.state.value}")
    return replace(out, playoff=tuple(v for v in out.playoff if v != version))
