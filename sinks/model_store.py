"""Model registry persistence (Redis + S3) and publishing of exported ranking versions.

Layout (``name`` is the model name, ``ranking`` by default):

* S3, models bucket: ``{name}/{version}/model.tflite`` (float32), ``model_quant.tflite``
  (dynamic-range int8), ``checkpoint/ckpt.index`` + ``checkpoint/ckpt.data-00000-of-00001``
  (TF checkpoint: model + optimizer), ``manifest.json`` (uploaded last: its presence means
  the version is complete); ``registry/{name}.json``, a copy of the registry.
* Redis: ``vitrina:model:{name}:registry`` the registry (JSON, with a revision counter),
  ``vitrina:model:{name}:current`` the Production version's manifest (what devices read).

The registry is changed only through ``ModelStore.update``: an optimistic transaction
(WATCH/MULTI) that applies a pure function from processors/ranking/registry.py and moves
the current-model pointer in the same MULTI, so the pointer and the registry never
disagree. If Redis lost the registry (flushed, new instance), it is reloaded from the S3
copy and the pointer is healed from the S3 manifest.
"""
from __future__ import annotations

import io
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import redis as syncredis
from minio import Minio
from minio.error import S3Error

from infra.logs import get_logger
from infra.object_store import ensure_buckets, object_store
from infra.settings import Settings
from processors.ranking.artifacts import FLOAT_KIND, QUANT_KIND
from processors.ranking.errors import RegistryError
from processors.ranking.registry import (
    GATE_TASKS,
    Decision,
    ModelState,
    ModelVersion,
    Registry,
    evaluate_candidate,
    promote,
    record_evaluation,
    register,
    rollback,
    stage,
)
from processors.ranking.tasks import TASKS
from sinks.redis_views import model_checkpoint_request_key, model_current_key, model_registry_key, sync_client

log = get_logger("vitrina.model_store")
T = TypeVar("T")

ARTIFACT_FILES = {FLOAT_KIND: "model.tflite", QUANT_KIND: "model_quant.tflite"}
CHECKPOINT_FILES = ("ckpt.index", "ckpt.data-00000-of-00001")


@dataclass(frozen=True)
class VersionKeys:
    name: str
    version: str

    @property
    def prefix(self) -> str:
        return f"{self.name}/{self.version}/"

    def artifact(self, kind: str) -> str:
        return self.prefix + ARTIFACT_FILES[kind]

    @property
    def manifest(self) -> str:
        return self.prefix + "manifest.json"

    def checkpoint(self, file_name: str) -> str:
        return f"{self.prefix}checkpoint/{file_name}"

    def as_paths(self, kinds: Sequence[str]) -> dict[str, str]:
        paths = {kind: self.artifact(kind) for kind in kinds}
        paths["manifest"] = self.manifest
        paths["checkpoint"] = self.prefix + "checkpoint/ckpt"
        return paths


def registry_copy_key(name: str) -> str:
    return f"registry/{name}.json"


@dataclass(frozen=True)
class PublishOutcome:
    version: str
    state: str
    decision: Decision
    manifest: dict[str, Any]
    production_before: str | None
    production_metrics: dict[str, float | None] | None
    seconds: float


def previous_production(registry: Registry) -> str | None:
    """The ARCHIVED version that most recently left PRODUCTION (the default rollback target)."""
    best: tuple[datetime, str] | None = None
    for record in registry.in_state(ModelState.ARCHIVED):
        left = [t.at for t in record.transitions
                if t.from_state is ModelState.PRODUCTION and t.to_state is ModelState.ARCHIVED]
        if left and (best is None or max(left) > best[0]):
            best = (max(left), record.version)
    return best[1] if best else None


def published_event(name: str, manifest: Mapping[str, Any], state: str, at: datetime) -> dict[str, Any]:
    """A vitrina.ModelPublished record for a version (metrics flattened to auc_<task>, pxtr_auc_<task>)."""
    artifacts = manifest.get("artifacts", {})
    metrics: dict[str, float] = {}
    for task in (*TASKS, *GATE_TASKS):
        value = (manifest.get("metrics") or {}).get(task)
        if value is not None:
            metrics[f"auc_{task}"] = float(value)
        baseline = (manifest.get("evaluation") or {}).get("pxtr", {}).get(task)
        if baseline is not None:
            metrics[f"pxtr_auc_{task}"] = float(baseline)
    return {
        "model": name,
        "version": manifest["version"],
        "state": state,
        "tflite_key": artifacts[FLOAT_KIND]["key"],
        "tflite_quant_key": artifacts.get(QUANT_KIND, {}).get("key"),
        "manifest_key": manifest["keys"]["manifest"],
        "sha256": artifacts[FLOAT_KIND]["sha256"],
        "metrics": metrics,
        "samples_seen": int((manifest.get("stream") or {}).get("samples_seen", 0)),
        "published_at": at,
    }


class ModelStore:
    def __init__(self, settings: Settings, name: str = "ranking", *, redis: syncredis.Redis | None = None,
                 s3: Minio | None = None) -> None:
        self.settings = settings
        self.name = name
        self.bucket = settings.models_bucket
        self.redis = redis or sync_client(settings)
        self.s3 = s3 or object_store(settings)
        self.registry_key = model_registry_key(name)
        self.current_key = model_current_key(name)
        self._bytes: OrderedDict[str, bytes] = OrderedDict()

    def keys(self, version: str) -> VersionKeys:
        return VersionKeys(self.name, version)

    # -- S3 -------------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        ensure_buckets(self.s3, [self.bucket])

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.s3.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        response = self.s3.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def get_json(self, key: str) -> Any | None:
        try:
            return json.loads(self.get_bytes(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise

    def manifest(self, version: str) -> dict[str, Any]:
        manifest = self.get_json(self.keys(version).manifest)
        if manifest is None:
            raise RegistryError("manifest_missing", f"no manifest for {self.name} {version} in S3", field="version")
        return manifest

    def model_bytes(self, manifest: Mapping[str, Any], kind: str = FLOAT_KIND) -> bytes:
        """Bytes of a version's artifact (small in-process cache keyed by sha256)."""
        artifact = manifest["artifacts"][kind]
        cached = self._bytes.get(artifact["sha256"])
        if cached is not None:
            return cached
        data = self.get_bytes(artifact["key"])
        self._bytes[artifact["sha256"]] = data
        while len(self._bytes) > 3:
            self._bytes.popitem(last=False)
        return data

    # -- registry -------------------------------------------------------------------------------

    def _parse(self, raw: str | None) -> tuple[Registry, int, bool]:
        """(registry, revision, found); falls back to the S3 copy when Redis has none."""
        data = json.loads(raw) if raw else self.get_json(registry_copy_key(self.name))
        if not data:
            return Registry(), 0, False
        return Registry.from_dict(data), int(data.get("revision", 0)), True

    def load(self) -> Registry:
        return self._parse(self.redis.get(self.registry_key))[0]

    def _document(self, registry: Registry, revision: int) -> str:
        return json.dumps({"model": self.name, "revision": revision, **registry.to_dict()}, sort_keys=True)

    def pointer_document(self, record: ModelVersion, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
        manifest = dict(manifest or self.manifest(record.version))
        promoted = [t for t in record.transitions if t.to_state is ModelState.PRODUCTION]
        manifest.update(state=record.state.value, promoted_at=promoted[-1].at.isoformat() if promoted else None,
                        promotion_reason=promoted[-1].reason if promoted else None)
        return manifest

    def update(self, change: Callable[[Registry], tuple[Registry, T]],
               manifests: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Registry, T]:
        """Apply ``change`` atomically (retries on concurrent writers) and move the pointer with it."""
        manifests = manifests or {}
        for _ in range(50):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(self.registry_key, self.current_key)
                    before, revision, _ = self._parse(pipe.get(self.registry_key))
                    has_pointer = bool(pipe.exists(self.current_key))
                    after, result = change(before)
                    old, new = before.production(), after.production()
                    pointer = None
                    if new is not None and (old is None or old.version != new.version or not has_pointer
                                            or old.transitions != new.transitions):
                        pointer = self.pointer_document(new, manifests.get(new.version))
                    document = self._document(after, revision + 1)
                    pipe.multi()
                    pipe.set(self.registry_key, document)
                    if pointer is not None:
                        pipe.set(self.current_key, json.dumps(pointer, sort_keys=True))
                    elif new is None:
                        pipe.delete(self.current_key)
                    pipe.execute()
                except syncredis.WatchError:
                    continue
            self._copy_to_s3(document, revision + 1)
            return after, result
        raise RegistryError("registry_busy", "too many concurrent registry updates; try again")

    def _copy_to_s3(self, document: str, revision: int) -> None:
        """Best effort; never overwrite a newer copy written by a concurrent updater."""
        key = registry_copy_key(self.name)
        try:
            existing = self.get_json(key)
            if existing and int(existing.get("revision", 0)) >= revision:
                return
            self.put_bytes(key, document.encode(), "application/json")
        except (S3Error, OSError) as exc:
            log.warning("registry_copy_failed", model=self.name, error=repr(exc))

    def current_manifest(self) -> dict[str, Any] | None:
        """The Production manifest; heals a missing pointer from the registry (e.g. after a Redis flush)."""
        raw = self.redis.get(self.current_key)
        if raw:
            return json.loads(raw)
        registry = self.load()
        if registry.production() is None:
            return None
        self.update(lambda r: (r, None))
        raw = self.redis.get(self.current_key)
        return json.loads(raw) if raw else None

    # -- operations (agent and CLI) ---------------------------------------------------------------

    def promote(self, version: str, at: datetime | None = None) -> Registry:
        """Operator promotion: a STAGING version is promoted; an ARCHIVED one is rolled back to."""
        at = at or datetime.now(timezone.utc)

        def change(registry: Registry) -> tuple[Registry, None]:
            state = registry.get(version).state
            if state is ModelState.PRODUCTION:
                raise RegistryError("already_production", f"{version} is already in production", field="version")
            if state is ModelState.ARCHIVED:
                return rollback(registry, version, at), None
            return promote(registry, version, at, "manual promotion"), None

        return self.update(change)[0]

    def rollback(self, version: str | None = None, at: datetime | None = None) -> tuple[Registry, str]:
        """Back to ``version`` (default: the version that was Production before the current one)."""
        at = at or datetime.now(timezone.utc)

        def change(registry: Registry) -> tuple[Registry, str]:
            target = version or previous_production(registry)
            if target is None:
                raise RegistryError("no_previous_version", "no earlier Production version to roll back to")
            return rollback(registry, target, at), target

        return self.update(change)

    def request_checkpoint(self, expires_s: int = 600) -> str:
        """Ask the worker holding the trainer for a checkpoint; a request nobody takes expires."""
        at = datetime.now(timezone.utc).isoformat()
        self.redis.set(model_checkpoint_request_key(self.name), at, ex=expires_s)
        return at

    def take_checkpoint_request(self) -> str | None:
        return self.redis.getdel(model_checkpoint_request_key(self.name))

    # -- publishing a new version -------------------------------------------------------------------

    def upload_version(self, version: str, artifact_paths: Mapping[str, str], checkpoint_prefix: str | None,
                       manifest: dict[str, Any]) -> dict[str, Any]:
        """Upload artifacts (+ checkpoint), then the manifest; returns the manifest as uploaded."""
        keys = self.keys(version)
        manifest = dict(manifest)
        manifest["artifacts"] = {kind: dict(entry) for kind, entry in manifest["artifacts"].items()}
        for kind, path in artifact_paths.items():
            data = Path(path).read_bytes()
            self.put_bytes(keys.artifact(kind), data)
            manifest["artifacts"][kind]["key"] = keys.artifact(kind)
        checkpoint_keys = []
        if checkpoint_prefix:
            for file_name in CHECKPOINT_FILES:
                suffix = file_name[len("ckpt"):]
                self.put_bytes(keys.checkpoint(file_name), Path(checkpoint_prefix + suffix).read_bytes())
                checkpoint_keys.append(keys.checkpoint(file_name))
        manifest.update(model=self.name, bucket=self.bucket,
                        keys={"manifest": keys.manifest, "checkpoint": checkpoint_keys,
                              **{kind: keys.artifact(kind) for kind in artifact_paths}})
        self.put_bytes(keys.manifest, json.dumps(manifest, indent=2, sort_keys=True).encode(), "application/json")
        return manifest

    def evaluate(self, manifest: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
        """Per-task AUC of a published version on labelled samples, run with LiteRT (as on a device)."""
        from processors.ranking.device import DeviceRanker
        from processors.ranking.features import encode_labels
        from processors.ranking.metrics import task_aucs

        ranker = DeviceRanker(manifest, self.model_bytes(manifest))
        return task_aucs(encode_labels(samples), ranker.predict(samples))

    def publish(self, version: str, artifact_paths: Mapping[str, str], checkpoint_prefix: str | None,
                manifest: dict[str, Any], eval_samples: Sequence[Mapping[str, Any]], *, tolerance: float,
                last_n: int, at: datetime | None = None) -> PublishOutcome:
        """Upload, register, stage, evaluate against Production on the same window, promote or archive (KION)."""
        return self._publish(version, artifact_paths, checkpoint_prefix, manifest, eval_samples, TASKS,
                             self.evaluate, tolerance=tolerance, last_n=last_n, at=at)

    def _publish(self, version: str, artifact_paths: Mapping[str, str], checkpoint_prefix: str | None,
                 manifest: dict[str, Any], eval_samples: Sequence[Mapping[str, Any]], tasks: Sequence[str],
                 evaluate: Any, *, tolerance: float, last_n: int, at: datetime | None) -> PublishOutcome:
        """The one publication path of both models: ``evaluate(manifest, samples)`` scores a version on
        ``tasks`` (the ranking model's heads, or the gate's ``choppy``)."""
        started = time.perf_counter()
        at = at or datetime.now(timezone.utc)
        uploaded = self.upload_version(version, artifact_paths, checkpoint_prefix, manifest)
        metrics = {task: (uploaded.get("metrics") or {}).get(task) for task in tasks}
        production = self.load().production()
        production_metrics = None
        if production is not None and eval_samples:
            try:
                production_metrics = evaluate(self.manifest(production.version), eval_samples)
            except Exception as exc:  # noqa: BLE001 - a broken old version must not block new ones
                log.warning("production_evaluation_failed", model=self.name, version=production.version,
                            error=repr(exc))
        record = ModelVersion(version=version, created_at=at, sha256=uploaded["artifacts"][FLOAT_KIND]["sha256"],
                              paths=self.keys(version).as_paths(list(artifact_paths)), metrics=metrics)

        def change(registry: Registry) -> tuple[Registry, Decision]:
            registry = stage(register(registry, record), version, at)
            registry = record_evaluation(registry, version, metrics, at)
            current = registry.production()
            if current is not None and production_metrics is not None and current.version == production.version:
                registry = record_evaluation(registry, current.version, production_metrics, at)
            return evaluate_candidate(registry, version, at, tolerance=tolerance, last_n=last_n, tasks=tasks)

        registry, decision = self.update(change, manifests={version: uploaded})
        return PublishOutcome(version, registry.get(version).state.value, decision, uploaded,
                              production.version if production else None, production_metrics,
                              time.perf_counter() - started)

    # -- the gate model (GRF stage 1), published under its own name --------------------------------

    def evaluate_gate(self, manifest: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
        """AUC of a published gate on labelled gate samples, run with LiteRT (as on a device)."""
        import numpy as np

        from processors.ranking.gate_runtime import DeviceGate
        from processors.ranking.metrics import roc_auc

        gate = DeviceGate(manifest, self.model_bytes(manifest))
        labels = np.asarray([int(s["label"]) for s in samples])
        return {"choppy": roc_auc(labels.astype(bool), gate.predict(samples)) if 0 < labels.sum() < labels.size
                else None}

    def publish_gate(self, version: str, tflite_path: str, manifest: dict[str, Any],
                     eval_samples: Sequence[Mapping[str, Any]], *, tolerance: float, last_n: int,
                     at: datetime | None = None, checkpoint_prefix: str | None = None) -> PublishOutcome:
        """Upload a gate version (TFLite + manifest + its training checkpoint when given), register,
        stage, compare its AUC with the Production gate's on the same window and promote or archive it:
        KION's rule on ``choppy``."""
        return self._publish(version, {FLOAT_KIND: tflite_path}, checkpoint_prefix, manifest, eval_samples, GATE_TASKS,
                             self.evaluate_gate, tolerance=tolerance, last_n=last_n, at=at)
