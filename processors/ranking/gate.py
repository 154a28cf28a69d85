"""GRF stage 1: a gate model predicting whether the upcoming play will be choppy.

Samples come from playback events: ``GateSampleBuilder`` follows each play (session x
item); its features are known at START (duration, bitrate x duration "size", network
speed, buffered/cached ratio, device type) plus the viewer's choppy history (share of
their previous plays that stalled, computed before this play: no leakage). The label is
1 when the play had a STALL event. Device score is not in the playback contract, so an
optional ``device_scores`` lookup (device_id -> score) may be supplied by the caller.

On the device, ``replace_choppy`` applies GRF's threshold (0.75): above it, the upcoming
video is swapped for the best-ranked cached one. The model is a small embedding + MLP
exported with the same frozen TFLite path as the ranking model.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from processors.ranking.errors import RankingInputError
from processors.ranking.gate_runtime import (  # noqa: F401 - re-exported (TF-free part)
    GATE_FEATURES,
    GATE_OUTPUT,
    GATE_THRESHOLD,
    GateConfig,
    GateSampleBuilder,
    encode_gate_batch,
    replace_choppy,
)
from processors.ranking.metrics import roc_auc


def build_gate_model(config: GateConfig) -> keras.Model:
    buckets = keras.Input((len(GATE_FEATURES),), dtype="int32", name="gate_buckets")
    device = keras.Input((), dtype="int32", name="device_type")
    parts = [
        layers.Embedding(len(b) + 2, config.embedding_dim, name=f"{name}_embedding")(buckets[:, i])
        for i, (name, b) in enumerate(zip(GATE_FEATURES, config.bounds, strict=False))
    ]
    parts.append(layers.Embedding(len(config.device_types) + 1, config.embedding_dim, name="device_embedding")(device))
    x = layers.Concatenate()(parts)
    for units in config.hidden_units:
        x = layers.Dense(units, activation="relu")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model({"gate_buckets": buckets, "device_type": device}, ops.reshape(logit, (-1, 1)), name="grf_gate")


class GateTrainer:
    def __init__(self, config: GateConfig | None = None, learning_rate: float = 3e-3) -> None:
        self.config = config or GateConfig()
        self.lock = threading.Lock()
        self.model = build_gate_model(self.config)
        self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        # counters kept in the checkpoint beside the weights (processors/ranking/export.py save_checkpoint)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.samples_trained = tf.Variable(0, dtype=tf.int64, trainable=False, name="samples_trained")
        spec = {n: tf.TensorSpec((None, *s), tf.as_dtype(d), name=n) for n, (s, d) in self.config.specs().items()}
        self._train_fn = tf.function(self._train_graph, input_signature=[spec, tf.TensorSpec((None, 1), tf.float32)])
        self._predict_fn = tf.function(lambda x: tf.sigmoid(self.model(x, training=False)), input_signature=[spec])

    def _train_graph(self, inputs: dict[str, tf.Tensor], labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, self.model(inputs, training=True)))
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=False))
        return loss

    def train_step(self, samples: Sequence[Mapping[str, Any]]) -> float:
        inputs = encode_gate_batch(samples, self.config)
        labels = np.asarray([[float(s["label"])] for s in samples], dtype=np.float32)
        with self.lock:
            loss = float(self._train_fn(inputs, labels).numpy())
            self.step.assign_add(1)
            self.samples_trained.assign_add(len(samples))
            return loss

    def predict(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        with self.lock:
            return self._predict_fn(encode_gate_batch(samples, self.config)).numpy()[:, 0]


def recall_at_precision(labels: np.ndarray, scores: np.ndarray, precision: float = 0.7) -> float | None:
    """Best recall over thresholds whose precision >= ``precision`` (GRF reports recall@p0.7)."""
    y = np.asarray(labels).astype(bool)
    if y.sum() == 0:
        return None
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.cumsum(y[order])
    precisions = hits / np.arange(1, y.size + 1)
    ok = precisions >= precision
    return float(hits[ok].max() / y.sum()) if ok.any() else 0.0


def gate_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = GATE_THRESHOLD) -> dict[str, float | None]:
    y = np.asarray(labels).astype(bool)
    flagged = np.asarray(scores) >= threshold
    return {
        "auc": roc_auc(y, scores),
        "recall_at_p0.7": recall_at_precision(y, scores, 0.7),
        "flagged_share": float(flagged.mean()) if y.size else None,
        "precision_at_threshold": float(y[flagged].mean()) if flagged.any() else None,
    }


def export_gate_tflite(
    trainer: GateTrainer, validation_samples: Sequence[Mapping[str, Any]], tolerance: float = 1e-4
) -> tuple[bytes, float]:
    """Frozen float32 TFLite bytes of the gate, verified against TF with LiteRT."""
    from processors.ranking.export import convert_frozen, freeze_model, verify_tflite

    if not validation_samples:
        raise RankingInputError("no_validation_samples", "need at least one validation sample")
    inputs = encode_gate_batch(validation_samples, trainer.config)
    with trainer.lock:
        frozen = freeze_model(trainer.model, trainer.config.specs(), output=GATE_OUTPUT)
        reference = trainer._predict_fn(inputs).numpy()
    model_bytes = convert_frozen(frozen, trainer.model, quantize=False)
    diff, _ = verify_tflite(model_bytes, inputs, reference, tolerance, kind="gate_float32", output=GATE_OUTPUT)
    return model_bytes, diff


def export_gate_version(trainer: GateTrainer, out_dir: Any, version: str,
                        validation_samples: Sequence[Mapping[str, Any]], *, metrics: Mapping[str, Any] | None = None,
                        created_at: Any = None, stream: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """Export the gate like a ranking version: verified float32 TFLite file + manifest (``kind: gate``,
    its config, signature, sha256, threshold, metrics). Returns (manifest, tflite path)."""
    from datetime import datetime, timezone
    from pathlib import Path

    from processors.ranking.artifacts import FLOAT_KIND, SIGNATURE_KEY, sha256_hex
    from processors.ranking.gate_runtime import GATE_KIND, gate_signature

    model_bytes, diff = export_gate_tflite(trainer, validation_samples)
    target = Path(out_dir) / version
    target.mkdir(parents=True, exist_ok=True)
    path = target / "gate.tflite"
    path.write_bytes(model_bytes)
    created = created_at or datetime.now(timezone.utc)
    manifest = {
        "version": version,
        "kind": GATE_KIND,
        "created_at": created.isoformat(),
        "signature_key": SIGNATURE_KEY,
        "input_signature": gate_signature(trainer.config),
        "output": {"name": GATE_OUTPUT, "tasks": ["choppy"]},
        "gate_config": trainer.config.to_dict(),
        "threshold": GATE_THRESHOLD,
        "artifacts": {FLOAT_KIND: {"sha256": sha256_hex(model_bytes), "bytes": len(model_bytes),
                                   "max_abs_diff": diff}},
        "metrics": dict(metrics or {}),
        "stream": dict(stream or {}),
    }
    return manifest, str(path)
