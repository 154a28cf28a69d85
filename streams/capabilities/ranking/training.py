"""Shell of the online trainer: bounded buffer -> mini-batches in one thread -> checkpoints -> publishing.

``TrainingCore`` lives in the training thread (a single-thread executor): it owns the
OnlineTrainer (TensorFlow is imported there, never on the event loop), drains the
SampleBuffer in mini-batches, decides checkpoints (schedule.py: event time or sample
count, or an operator request) and exports (export.py: checkpoint + float32 + quantized
TFLite, each verified against TF). ``TrainingService`` is its asyncio face: the agent
pushes samples and returns to consuming at once; exports are handed to a second
single-thread executor that uploads to S3 and applies the registry rule (model_store).

The gate model (GRF stage 1, ``processors/ranking/gate.py``) trains in the same thread from gate
samples (``push_gate``: a play's START features + whether it stalled, built from the playback stream by
``GateSampleBuilder``); every 10th is held out. With each ranking checkpoint, a gate that trained on
new samples and has a held-out window with both outcomes is exported (verified TFLite + manifest) and
published under its own name (``registry.gate_model_name``: ``ranking-gate``) by the same KION rule on
its AUC (``ModelStore.publish_gate``), with its checkpoint; the next holder of the trainer continues from
the newest gate checkpoint (``GateCore.restore``), as the ranking model does from its own.

Restart: the core restores the latest registered version's checkpoint from S3 (model +
optimizer + counters) and the checkpoint mark from its manifest, so the schedule goes on
where it stopped. Samples trained after that checkpoint but before a crash are not in the
restored model (their offsets were already committed): at-most-once between checkpoints.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from infra.logs import get_logger
from infra.settings import Settings
from processors.ranking.errors import RankingInputError
from processors.ranking.features import encode_labels, encode_one
from processors.ranking.metrics import pxtr_matrix, task_aucs
from processors.ranking.schedule import CheckpointMark, checkpoint_due
from processors.ranking.tasks import TASKS
from sinks.model_store import ModelStore, PublishOutcome
from streams.capabilities.ranking.metrics import (
    BUFFER_SIZE,
    CHECKPOINTS,
    EXPORT_SECONDS,
    MODEL_SAMPLES,
    MODEL_VERSION,
    TRAIN_LOSS,
    TRAIN_RATE,
    TRAIN_SAMPLES,
    TRAIN_STEPS,
)
from streams.capabilities.ranking.settings import RankingSettings

log = get_logger("vitrina.ranking.trainer")
GATE_BUFFER = 50_000  # gate samples waiting for the training thread (oldest dropped beyond)
GATE_BATCH = 256
GATE_HOLDOUT_EVERY = 10
GATE_EVAL_WINDOW = 5_000
GATE_MIN_EVAL = 50  # held-out gate samples (with both outcomes) needed to export a gate
SEEN_IDS = 500_000  # impression ids remembered to drop repeated samples (the label join is at-least-once)
KEEP_EXPORTS = 3


def sample_problem(sample: Mapping[str, Any], features: Any) -> RankingInputError | None:
    """Why a sample cannot be trained on (None if it can): labels missing or features unencodable."""
    if sample.get("labels") is None:
        return RankingInputError("missing_labels", "a training sample needs labels", field="labels")
    try:
        encode_one(sample, features)
        encode_labels([sample])
    except RankingInputError as exc:
        return exc
    return None


def version_id(at: datetime, step: int) -> str:
    return f"{at:%Y%m%dT%H%M%SZ}-s{step}"


@dataclass
class ExportJob:
    version: str
    reason: str
    artifact_paths: dict[str, str]
    checkpoint_prefix: str
    manifest: dict[str, Any]
    eval_samples: list[Mapping[str, Any]]
    seconds: float


@dataclass
class GateExportJob:
    version: str
    reason: str
    tflite_path: str
    manifest: dict[str, Any]
    eval_samples: list[Mapping[str, Any]]
    checkpoint_prefix: str | None = None  # weights + optimizer, so the next holder of the trainer continues


class GateCore:
    """The gate's online training (in the training thread): held-out every ``GATE_HOLDOUT_EVERY``th."""

    def __init__(self) -> None:
        from processors.ranking.gate import GateTrainer

        self.trainer = GateTrainer()
        self.trained = 0
        self.trained_at_export = 0
        self.seen = 0
        self.holdout: deque[Mapping[str, Any]] = deque(maxlen=GATE_EVAL_WINDOW)

    def train(self, samples: list[Mapping[str, Any]]) -> None:
        batch = []
        for sample in samples:
            self.seen += 1
            (self.holdout if self.seen % GATE_HOLDOUT_EVERY == 0 else batch).append(sample)
        if batch:
            self.trainer.train_step(batch)
            self.trained += len(batch)

    def export(self, export_dir: Path, version: str, reason: str) -> GateExportJob | None:
        from processors.ranking.gate import export_gate_version, gate_metrics

        window = list(self.holdout)
        positives = sum(int(s["label"]) for s in window)
        if self.trained == self.trained_at_export or len(window) < GATE_MIN_EVAL or not 0 < positives < len(window):
            return None
        import numpy as np

        labels = np.asarray([int(s["label"]) for s in window])
        measured = gate_metrics(labels, self.trainer.predict(window))
        metrics = {"choppy": measured["auc"], "recall_at_p0.7": measured["recall_at_p0.7"]}
        from processors.ranking.export import save_checkpoint

        manifest, path = export_gate_version(self.trainer, export_dir, version, window[:512], metrics=metrics,
                                             stream={"samples_seen": self.seen, "trained": self.trained,
                                                     "eval_window": len(window)})
        prefix = save_checkpoint(self.trainer, Path(path).parent / "checkpoint", max_to_keep=1)
        self.trained_at_export = self.trained
        log.info("gate_exported", version=version, reason=reason, metrics=metrics, trained=self.trained)
        return GateExportJob(version, reason, path, manifest, window, prefix)

    def restore(self, store: Any) -> str | None:
        """Continue from the newest gate version with a checkpoint and this gate configuration; returns
        the version restored from (None: starts from scratch)."""
        from processors.ranking.export import restore_checkpoint

        registry = store.load()
        for record in sorted(registry.versions, key=lambda v: v.created_at, reverse=True):
            manifest = store.manifest(record.version)
            keys = (manifest.get("keys") or {}).get("checkpoint") or []
            if not keys or manifest.get("gate_config") != self.trainer.config.to_dict():
                continue
            with tempfile.TemporaryDirectory(prefix="gate-restore-") as folder:
                for key in keys:
                    (Path(folder) / key.rsplit("/", 1)[1]).write_bytes(store.get_bytes(key))
                restore_checkpoint(self.trainer, Path(folder) / "ckpt")
            stream = manifest.get("stream") or {}
            self.seen = int(stream.get("samples_seen", 0))
            self.trained = self.trained_at_export = int(stream.get("trained", 0))
            log.info("gate_restored", version=record.version, trained=self.trained)
            return record.version
        return None


class TrainingCore:
    """Everything here runs in the single training thread (except ``push`` and ``request``)."""

    def __init__(self, settings: Settings, ranking: RankingSettings, store: ModelStore) -> None:
        from processors.ranking.model import ModelConfig
        from processors.ranking.trainer import OnlineTrainer, SampleBuffer, TrainerConfig

        self.settings = ranking
        self.store = store
        self.trainer = OnlineTrainer(ranking.features, ModelConfig(**ranking.model),
                                     TrainerConfig(learning_rate=ranking.learning_rate,
                                                   holdout_every=ranking.holdout_every))
        self.buffer = SampleBuffer(ranking.buffer_capacity)
        self.workdir = settings.data_dir / "ranking" / ranking.model_name
        self.checkpoint_dir = self.workdir / "checkpoints"
        self.export_dir = self.workdir / "exports"
        self.samples_seen = 0
        self.event_time: datetime | None = None
        self.mark: CheckpointMark | None = None
        self.holdout_since_mark = 0
        self.requested: str | None = None
        self.last_version: str | None = None
        self.restored_from: str | None = None
        self._dropped_reported = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._recent: deque[Mapping[str, Any]] = deque(maxlen=256)
        self._last_checkpoint_wall: float | None = None
        self._train_seconds = 0.0
        self._train_samples = 0
        self._warm = False
        self.gate_buffer: deque[Mapping[str, Any]] = deque(maxlen=GATE_BUFFER)
        self.gate: GateCore | None = None

    # -- called on the event loop -----------------------------------------------------------------

    def push(self, samples: Sequence[Mapping[str, Any]]) -> None:
        self.buffer.extend(samples)
        dropped = self.buffer.dropped - self._dropped_reported
        if dropped:
            TRAIN_SAMPLES.labels(outcome="dropped").inc(dropped)
            self._dropped_reported = self.buffer.dropped
        BUFFER_SIZE.set(len(self.buffer))

    def push_gate(self, samples: Sequence[Mapping[str, Any]]) -> None:
        self.gate_buffer.extend(samples)

    def request(self, reason: str = "requested") -> None:
        self.requested = reason

    @property
    def has_work(self) -> bool:
        return len(self.buffer) > 0 or self.requested is not None or len(self.gate_buffer) > 0

    # -- training thread --------------------------------------------------------------------------

    def restore(self) -> None:
        """Continue from the newest registered version's checkpoint, if its configuration matches."""
        from processors.ranking.export import restore_checkpoint
        from processors.ranking.model import ModelConfig

        registry = self.store.load()
        if not registry.versions:
            return
        latest = max(registry.versions, key=lambda v: v.created_at)
        manifest = self.store.manifest(latest.version)
        if (manifest.get("feature_config") != self.settings.features.to_dict()
                or manifest.get("model_config") != ModelConfig(**self.settings.model).to_dict()):
            log.warning("restore_skipped", version=latest.version, reason="model or feature config changed")
            return
        target = self.workdir / "restore" / latest.version
        target.mkdir(parents=True, exist_ok=True)
        for key in manifest["keys"].get("checkpoint", []):
            (target / key.rsplit("/", 1)[1]).write_bytes(self.store.get_bytes(key))
        restore_checkpoint(self.trainer, target / "ckpt")
        stream = manifest.get("stream") or {}
        self.samples_seen = int(stream.get("samples_seen", 0))
        if stream.get("event_time"):
            self.event_time = datetime.fromisoformat(stream["event_time"])
            self.mark = CheckpointMark(self.event_time, self.samples_seen)
        self.last_version = self.restored_from = latest.version
        shutil.rmtree(target, ignore_errors=True)
        MODEL_SAMPLES.set(self.samples_seen)
        log.info("trainer_restored", version=latest.version, samples_seen=self.samples_seen,
                 event_time=stream.get("event_time"))

    def _fresh(self, batch: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        fresh = []
        for sample in batch:
            impression_id = str(sample.get("impression_id"))
            if impression_id in self._seen:
                TRAIN_SAMPLES.labels(outcome="duplicate").inc()
                continue
            self._seen[impression_id] = None
            fresh.append(sample)
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        return fresh

    def _train(self, batch: list[Mapping[str, Any]]) -> None:
        started = time.perf_counter()
        result = self.trainer.train_step(batch)
        if self._warm:  # the first step traces the tf.function (seconds): not throughput
            self._train_seconds += time.perf_counter() - started
            self._train_samples += len(batch)
            TRAIN_RATE.set(self._train_samples / self._train_seconds)
        self._warm = True
        self.samples_seen += len(batch)
        self.holdout_since_mark += result["held_out"]
        TRAIN_SAMPLES.labels(outcome="trained").inc(result["trained"])
        TRAIN_SAMPLES.labels(outcome="held_out").inc(result["held_out"])
        TRAIN_STEPS.inc()
        for task in (*TASKS, "loss"):
            if task in result:
                TRAIN_LOSS.labels(task=task).set(result[task])
        latest = max(s["event_time"] for s in batch)
        self.event_time = latest if self.event_time is None else max(self.event_time, latest)
        if self.mark is None:
            self.mark = CheckpointMark(min(s["event_time"] for s in batch), 0)
        self._recent.extend(batch)
        MODEL_SAMPLES.set(self.samples_seen)

    def _due(self) -> str | None:
        if self.requested is not None:
            if self.samples_seen == 0:
                log.warning("checkpoint_request_ignored", reason="nothing trained yet")
                self.requested = None
                return None
            return self.requested
        if self.mark is None or self.event_time is None:
            return None
        if (self._last_checkpoint_wall is not None
                and time.monotonic() - self._last_checkpoint_wall < self.settings.checkpoint_min_wall_s):
            return None
        due = checkpoint_due(self.settings.policy, self.mark, self.event_time, self.samples_seen)
        return due.reason if due.due else None

    def _train_gate(self) -> None:
        while self.gate_buffer:
            batch = [self.gate_buffer.popleft() for _ in range(min(GATE_BATCH, len(self.gate_buffer)))]
            if self.gate is None:
                self.gate = GateCore()
            self.gate.train(batch)

    def run_round(self) -> list[ExportJob | GateExportJob]:
        """Train on everything buffered; stop early after a checkpoint so it can be published."""
        jobs: list[ExportJob | GateExportJob] = []
        while True:
            self._train_gate()
            reason = self._due()
            if reason is not None:
                job = self._checkpoint(reason)
                if job is not None:
                    jobs.append(job)
                    if self.gate is not None:
                        try:
                            gate_job = self.gate.export(self.export_dir / "gate", job.version, reason)
                        except Exception as exc:  # noqa: BLE001 - the gate must not stop the ranking model
                            log.exception("gate_export_failed", version=job.version, error=repr(exc))
                            gate_job = None
                        if gate_job is not None:
                            jobs.append(gate_job)
                break
            batch = self.buffer.drain(self.settings.batch_size)
            if not batch:
                break
            batch = self._fresh(batch)
            if batch:
                self._train(batch)
        BUFFER_SIZE.set(len(self.buffer))
        return jobs

    def _eval_window(self) -> list[Mapping[str, Any]]:
        holdout = self.trainer.holdout_samples()
        count = max(self.holdout_since_mark, self.settings.eval_min_samples)
        return holdout[-count:]

    def _checkpoint(self, reason: str) -> ExportJob | None:
        from processors.ranking.errors import ExportVerificationError
        from processors.ranking.export import ExportConfig, export_version

        started = time.perf_counter()
        self.requested = None
        self._last_checkpoint_wall = time.monotonic()
        now = datetime.now(timezone.utc)
        version = version_id(now, int(self.trainer.step.numpy()))
        if version == self.last_version:
            version += f"-{int(now.timestamp() * 1000) % 1000:03d}"
        window = self._eval_window()
        # AUCs of a handful of samples are noise: they would decide promotions (and, as the first
        # model's history, block better successors), so below eval_min_samples there are none.
        reliable = len(window) >= self.settings.eval_min_samples
        metrics = self.trainer.evaluate(window) if reliable else {task: None for task in TASKS}
        baseline = task_aucs(encode_labels(window), pxtr_matrix(window)) if reliable else {}
        self.mark = CheckpointMark(self.event_time or now, self.samples_seen)
        self.holdout_since_mark = 0
        try:
            export = export_version(self.trainer, self.export_dir, version, window or list(self._recent),
                                    ExportConfig(batch=self.settings.export_batch), created_at=now,
                                    metrics=metrics, checkpoint_dir=self.checkpoint_dir)
        except ExportVerificationError as exc:
            CHECKPOINTS.labels(reason=reason, outcome="export_failed").inc()
            log.error("export_failed", version=version, code=exc.code, error=exc.message)
            return None
        self.last_version = version
        manifest = json.loads(Path(export.manifest_path).read_text())
        manifest["stream"] = {"event_time": (self.event_time or now).isoformat(), "samples_seen": self.samples_seen,
                              "checkpoint_reason": reason, "restored_from": self.restored_from}
        manifest["evaluation"] = {"window": len(window), "reliable": reliable, "pxtr": baseline}
        manifest["export_seconds"] = round(export.seconds, 3)
        EXPORT_SECONDS.labels(phase="export").observe(export.seconds)
        self._prune_exports()
        log.info("checkpoint_exported", version=version, reason=reason, samples_seen=self.samples_seen,
                 seconds=round(time.perf_counter() - started, 2), metrics=metrics)
        return ExportJob(version, reason, {kind: a.path for kind, a in export.artifacts.items()},
                         export.checkpoint_path, manifest, window if reliable else [], export.seconds)

    def _prune_exports(self) -> None:
        for folder in (self.export_dir, self.export_dir / "gate"):
            if not folder.is_dir():
                continue
            exports = sorted((p for p in folder.iterdir() if p.is_dir() and p.name != "gate"),
                             key=lambda p: p.stat().st_mtime)
            for old in exports[:-KEEP_EXPORTS]:
                shutil.rmtree(old, ignore_errors=True)


class TrainingService:
    """Asyncio side: one training thread, one publishing thread, never blocks the agent."""

    def __init__(self, settings: Settings, ranking: RankingSettings,
                 announce: Callable[[PublishOutcome], Awaitable[None]]) -> None:
        self.settings = settings
        self.ranking = ranking
        self.announce = announce
        self.core: TrainingCore | None = None
        self.active = False  # this worker holds the trainer partition
        self.store: ModelStore | None = None
        self.gate_store: ModelStore | None = None
        self._train_pool = ThreadPoolExecutor(1, thread_name_prefix="ranking-train")
        self._publish_pool = ThreadPoolExecutor(1, thread_name_prefix="ranking-publish")
        self._init_lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()
        self._rounds: asyncio.Task | None = None
        self._publishing: set[asyncio.Task] = set()

    def _create_core(self) -> TrainingCore:
        self.store = ModelStore(self.settings, self.ranking.model_name)
        self.store.ensure_bucket()
        core = TrainingCore(self.settings, self.ranking, self.store)
        try:
            core.restore()
        except Exception as exc:  # noqa: BLE001 - a broken old checkpoint must not stop training
            log.error("restore_failed", error=repr(exc))
        if self.ranking.gate:
            try:
                gate = GateCore()
                if gate.restore(self._gate_store()) is not None:
                    core.gate = gate
            except Exception as exc:  # noqa: BLE001 - the gate then starts from scratch
                log.error("gate_restore_failed", error=repr(exc))
        return core

    async def ensure_core(self) -> TrainingCore:
        async with self._init_lock:
            if self.core is None:
                loop = asyncio.get_running_loop()
                self.core = await loop.run_in_executor(self._train_pool, self._create_core)
        return self.core

    async def offer(self, samples: Sequence[Mapping[str, Any]]) -> None:
        core = await self.ensure_core()
        if samples:
            core.push(samples)
            self.kick()

    async def offer_gate(self, samples: Sequence[Mapping[str, Any]]) -> None:
        """Gate samples (``GateSampleBuilder``) for the gate model trained beside the ranking model."""
        if not samples:
            return
        core = await self.ensure_core()
        core.push_gate(samples)
        self.kick()

    def request_checkpoint(self, reason: str = "requested") -> bool:
        if self.core is None:
            return False
        self.core.request(reason)
        self.kick()
        return True

    def kick(self) -> None:
        if self._rounds is None or self._rounds.done():
            self._rounds = asyncio.ensure_future(self._run_rounds())

    async def _run_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core
        while core is not None and core.has_work:
            try:
                jobs = await loop.run_in_executor(self._train_pool, core.run_round)
            except Exception as exc:  # noqa: BLE001 - log, keep the agent alive; the next batch retries
                log.exception("training_round_failed", error=repr(exc))
                return
            for job in jobs:
                task = asyncio.ensure_future(self._publish(job))
                self._publishing.add(task)
                task.add_done_callback(self._publishing.discard)

    def _gate_store(self) -> ModelStore:
        from processors.ranking.registry import gate_model_name

        if self.gate_store is None:
            self.gate_store = ModelStore(self.settings, gate_model_name(self.ranking.model_name))
        return self.gate_store

    async def _publish(self, job: ExportJob | GateExportJob) -> None:
        loop = asyncio.get_running_loop()
        async with self._publish_lock:
            try:
                if isinstance(job, GateExportJob):
                    outcome = await loop.run_in_executor(
                        self._publish_pool,
                        lambda: self._gate_store().publish_gate(job.version, job.tflite_path, job.manifest,
                                                                job.eval_samples, tolerance=self.ranking.tolerance,
                                                                last_n=self.ranking.last_n,
                                                                checkpoint_prefix=job.checkpoint_prefix))
                else:
                    outcome = await loop.run_in_executor(
                        self._publish_pool,
                        lambda: self.store.publish(job.version, job.artifact_paths, job.checkpoint_prefix,
                                                   job.manifest, job.eval_samples, tolerance=self.ranking.tolerance,
                                                   last_n=self.ranking.last_n))
            except Exception as exc:  # noqa: BLE001
                CHECKPOINTS.labels(reason=job.reason, outcome="publish_failed").inc()
                log.exception("publish_failed", version=job.version, error=repr(exc))
                return
            if isinstance(job, GateExportJob):
                log.info("gate_published", model=outcome.manifest.get("model"), version=outcome.version,
                         state=outcome.state, reasons=list(outcome.decision.reasons))
                try:
                    await self.announce(outcome)
                except Exception as exc:  # noqa: BLE001
                    log.exception("announce_failed", version=job.version, error=repr(exc))
                return
            EXPORT_SECONDS.labels(phase="publish").observe(outcome.seconds)
            CHECKPOINTS.labels(reason=job.reason, outcome=outcome.state.lower()).inc()
            if outcome.state == "PRODUCTION":
                MODEL_VERSION.clear()
                MODEL_VERSION.labels(model=self.ranking.model_name, version=outcome.version).set(1)
                log.info("model_promoted", model=self.ranking.model_name, version=outcome.version,
                         reasons=list(outcome.decision.reasons))
            else:
                # KION: keep the active model and notify (this log line + models.published with ARCHIVED)
                log.warning("model_not_promoted", model=self.ranking.model_name, version=outcome.version,
                            production=outcome.production_before, reasons=list(outcome.decision.reasons))
            try:
                await self.announce(outcome)
            except Exception as exc:  # noqa: BLE001
                log.exception("announce_failed", version=job.version, error=repr(exc))
