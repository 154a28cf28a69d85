"""Device runtime: download the current ranking model and score a local candidate pool.

What an app does (GRF): ask which version is current (the read API's
``/v1/models/{name}/current``, or Redis directly for a backend process), download the
TFLite file from object storage (the CDN role), check its sha256 against the manifest,
load it into LiteRT and rank the ~24 cached candidates with the same feature code the
trainer used (``DeviceRanker``; no TensorFlow). A download that fails the check is never
used or cached; the previously loaded model stays active.

The gate model (GRF stage 1) is published beside it as ``<name>-gate``; ``refresh_gate`` downloads it
the same way (``DeviceGate``, LiteRT) and ``next_video`` uses both models: the ranking model orders
the candidates and the cached pool, the gate skips a candidate predicted choppy (>= 0.75) and the best
cached title plays instead; the skipped video goes back into the pool (``cache_pool.return_choppy``).
Without a published gate, ``next_video`` plays the best-ranked candidate.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from processors.ranking.artifacts import FLOAT_KIND, sha256_hex
from processors.ranking.cache_pool import PoolPlan, add_to_pool, plan_pool, return_choppy
from processors.ranking.device import DeviceRanker, RankedCandidate
from processors.ranking.errors import ModelIntegrityError
from processors.ranking.gate_runtime import DeviceGate, NextPlay, pick_next, play_context
from processors.ranking.registry import gate_model_name


@dataclass(frozen=True)
class PoolUpkeep:
    pool: list[dict[str, Any]]  # the pool after eviction and replenishment
    plan: PoolPlan
    fetched: int  # titles the server sent
    offline: bool  # the server could not be reached: nothing fetched


@dataclass(frozen=True)
class NextDecision:
    play: NextPlay  # the title to play, whether from the pool, the candidates skipped as choppy
    ranked: list[RankedCandidate]
    pool: list[dict[str, Any]]  # the pool after the decision (played pool entry out, skipped ones in)


class ManifestSource(Protocol):
    def current_model(self, name: str = "ranking") -> dict: ...


class RedisManifestSource:
    """Reads the pointer from Redis (backend processes; devices use the read API client)."""

    def __init__(self, settings: Any) -> None:
        from sinks.redis_views import sync_client
        self.redis = sync_client(settings)

    def current_model(self, name: str = "ranking") -> dict:
        import json

        from sinks.redis_views import model_current_key
        raw = self.redis.get(model_current_key(name))
        if raw is None:
            raise ModelIntegrityError("no_current_model", f"no Production version of {name!r}", field="name")
        return json.loads(raw)


class DeviceModelClient:
    def __init__(self, settings: Any, source: ManifestSource, name: str = "ranking", *, kind: str = FLOAT_KIND,
                 cache_dir: Path | None = None) -> None:
        from infra.object_store import object_store
        self.settings = settings
        self.source = source
        self.name = name
        self.kind = kind
        self.s3 = object_store(settings)
        self.cache_dir = cache_dir
        self.ranker: DeviceRanker | None = None
        self.manifest: dict[str, Any] | None = None
        self.gate: DeviceGate | None = None
        self.gate_manifest: dict[str, Any] | None = None

    def _download(self, bucket: str, key: str) -> bytes:
        response = self.s3.get_object(bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def refresh(self) -> DeviceRanker:
        """Load the current version if it changed; raises ModelIntegrityError and keeps the old model otherwise."""
        manifest = self.source.current_model(self.name)
        artifact = (manifest.get("artifacts") or {}).get(self.kind)
        if not isinstance(artifact, Mapping) or not artifact.get("key"):
            raise ModelIntegrityError("artifact_not_in_manifest", f"manifest has no downloadable {self.kind}",
                                      field="artifacts")
        if self.ranker is not None and self.manifest and self.manifest["artifacts"][self.kind]["sha256"] == \
                artifact["sha256"]:
            return self.ranker
        data = self._cached(artifact["sha256"])
        if data is None:
            data = self._download(manifest.get("bucket") or self.settings.models_bucket, artifact["key"])
        ranker = DeviceRanker(manifest, data, kind=self.kind)  # checks sha256 + input signature
        self._store(artifact["sha256"], data)
        self.ranker, self.manifest = ranker, manifest
        return ranker

    def refresh_gate(self) -> DeviceGate | None:
        """Load the current gate (``<name>-gate``) if it changed; None while no gate is published (a
        gate that fails its checks raises ModelIntegrityError and the loaded one stays)."""
        try:
            manifest = self.source.current_model(gate_model_name(self.name))
        except ModelIntegrityError as exc:
            if exc.code == "no_current_model":
                return self.gate
            raise
        artifact = (manifest.get("artifacts") or {}).get(FLOAT_KIND)
        if not isinstance(artifact, Mapping) or not artifact.get("key"):
            raise ModelIntegrityError("artifact_not_in_manifest", "gate manifest has no downloadable model",
                                      field="artifacts")
        if self.gate is not None and self.gate_manifest and \
                self.gate_manifest["artifacts"][FLOAT_KIND]["sha256"] == artifact["sha256"]:
            return self.gate
        data = self._cached(artifact["sha256"])
        if data is None:
            data = self._download(manifest.get("bucket") or self.settings.models_bucket, artifact["key"])
        gate = DeviceGate(manifest, data)  # checks sha256 + input signature
        self._store(artifact["sha256"], data)
        self.gate, self.gate_manifest = gate, manifest
        return gate

    def refresh_all(self) -> tuple[DeviceRanker, DeviceGate | None]:
        return self.refresh(), self.refresh_gate()

    def next_video(self, request: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]],
                   pool: Sequence[Mapping[str, Any]], now: datetime, *, pool_capacity: int,
                   play: Mapping[str, Any] | None = None, check_top: int = 3) -> NextDecision:
        """What to play next with both models: rank ``candidates`` (and the cached ``pool``, offline
        mode), ask the gate about the best ``check_top`` candidates (``play``: network_kbps,
        device_score, choppy_history, bitrate_kbps of this device now), skip a choppy one for the best
        cached title (``gate_runtime.pick_next``); skipped videos go back into the pool."""
        ranker = self.ranker or self.refresh()
        ranked = ranker.rank(request, candidates)
        by_id = {str(c.get("item_id")): c for c in candidates}
        p_choppy: dict[str, float] = {}
        if self.gate is not None and ranked:
            context = {**dict(request.get("context") or {}), **dict(play or {})}
            top = [r.item_id for r in ranked[:check_top]]
            probs = self.gate.predict([play_context(by_id[i], context, request.get("device_type")) for i in top])
            p_choppy = {item: float(p) for item, p in zip(top, probs)}
        pool_ranked = [r.item_id for r in ranker.rank_offline(request, pool, now).ranked] if pool else []
        decision = pick_next([r.item_id for r in ranked], p_choppy, pool_ranked,
                             self.gate.threshold if self.gate is not None else 1.0)
        new_pool = [dict(e) for e in pool]
        if decision.from_pool:
            new_pool = [e for e in new_pool if str(e.get("item_id")) != decision.item_id]
        for item in decision.skipped:
            new_pool = return_choppy(new_pool, {**by_id[item], "item_id": item}, now, pool_capacity)
        return NextDecision(decision, ranked, new_pool)

    def maintain_pool(self, pool: Sequence[Mapping[str, Any]], plays: Iterable[datetime], now: datetime,
                      replenish: Callable[[int, list[str]], Sequence[Mapping[str, Any]]]) -> PoolUpkeep:
        """GRF's cache-pool policy applied (``cache_pool.plan_pool``): entries older than 2 weeks and over
        the capacity Cu leave; below 0.75 x Cu the server is asked for ``Cu - fresh`` titles the pool does
        not hold (``replenish(count, exclude)``, e.g. ``VitrinaClient.cache_pool``). An unreachable server
        (``OSError``: offline) leaves the kept pool as is; the device then ranks the pool only."""
        plan = plan_pool(pool, plays, now)
        fetched: list[dict[str, Any]] = []
        offline = False
        if plan.replenish:
            try:
                fetched = [dict(item) for item in replenish(plan.replenish, [str(e["item_id"]) for e in plan.keep])]
            except OSError:
                offline = True
        return PoolUpkeep(add_to_pool(plan.keep, fetched, now, plan.capacity), plan, len(fetched), offline)

    def _cached(self, sha256: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{sha256}.tflite"
        if not path.exists():
            return None
        data = path.read_bytes()
        return data if sha256_hex(data) == sha256 else None

    def _store(self, sha256: str, data: bytes) -> None:
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            (self.cache_dir / f"{sha256}.tflite").write_bytes(data)

    def rank(self, request: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]],
             top_k: int | None = None) -> list[RankedCandidate]:
        ranker = self.ranker or self.refresh()
        return ranker.rank(request, candidates, top_k)
