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
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from processors.ranking.errors import RankingInputError
from processors.ranking.features import bucketize
from processors.ranking.labels import PLAYBACK_EVENT_TYPES, require_time, viewer_key
from processors.ranking.metrics import roc_auc

GATE_THRESHOLD = 0.75
GATE_OUTPUT = "choppy"
GATE_FEATURES: tuple[str, ...] = (
    "duration_s",
    "size_mb",
    "network_kbps",
    "cached_ratio",
    "device_score",
    "choppy_history",
)


@dataclass(frozen=True)
class GateConfig:
    duration_s_bounds: tuple[float, ...] = (10, 30, 60, 180, 600, 1_800, 3_600, 7_200)
    size_mb_bounds: tuple[float, ...] = (1, 5, 20, 50, 100, 250, 500, 1_000, 2_000)
    network_kbps_bounds: tuple[float, ...] = (300, 700, 1_500, 3_000, 6_000, 12_000, 25_000, 50_000)
    cached_ratio_bounds: tuple[float, ...] = (0.01, 0.1, 0.25, 0.5, 0.75, 0.99)
    device_score_bounds: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    choppy_history_bounds: tuple[float, ...] = (0.01, 0.1, 0.25, 0.5, 0.75)
    device_types: tuple[str, ...] = ("TV", "MOBILE", "TABLET", "WEB", "STB")
    history_len: int = 20
    embedding_dim: int = 4
    hidden_units: tuple[int, ...] = (32, 16)

    @property
    def bounds(self) -> tuple[tuple[float, ...], ...]:
        return (
            self.duration_s_bounds,
            self.size_mb_bounds,
            self.network_kbps_bounds,
            self.cached_ratio_bounds,
            self.device_score_bounds,
            self.choppy_history_bounds,
        )

    def specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"gate_buckets": ((len(GATE_FEATURES),), "int32"), "device_type": ((), "int32")}


@dataclass
class _Play:
    features: dict[str, Any]
    stalled: bool = False
    ended: bool = False


@dataclass
class GateSampleBuilder:
    """Incremental playback -> (features at START, stalled?) samples; one agent owns it."""

    config: GateConfig = field(default_factory=GateConfig)
    device_scores: Mapping[str, float] = field(default_factory=dict)
    _plays: dict[str, _Play] = field(default_factory=dict)
    _history: dict[str, deque] = field(default_factory=dict)

    def add_playback(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """Feed one event; returns a finished sample {features..., "label": 0|1} on STOP/COMPLETE."""
        event_type = event.get("event_type")
        if event_type not in PLAYBACK_EVENT_TYPES:
            raise RankingInputError("bad_event_type", f"unknown event_type {event_type!r}", field="event_type")
        require_time(event)
        viewer = viewer_key(event)
        play_id = f"{event.get('session_id')}\x1f{event.get('item_id')}"
        play = self._plays.get(play_id)
        if play is None:
            if event_type != "START":
                return None  # joined mid-play: its START features are unknown
            history = self._history.setdefault(viewer, deque(maxlen=self.config.history_len))
            duration_ms = event.get("duration_ms") or 0
            bitrate = event.get("bitrate_kbps")
            size_mb = bitrate * duration_ms / 8_000_000 if bitrate and duration_ms else None
            play = _Play(
                {
                    "viewer": viewer,
                    "device_type": event.get("device_type"),
                    "duration_s": duration_ms / 1000 if duration_ms else None,
                    "size_mb": size_mb,
                    "network_kbps": event.get("network_kbps"),
                    "cached_ratio": event.get("buffered_ratio"),
                    "device_score": self.device_scores.get(str(event.get("device_id"))),
                    "choppy_history": (sum(history) / len(history)) if history else None,
                }
            )
            self._plays[play_id] = play
        if event_type == "STALL" or (event.get("stall_ms") or 0) > 0:
            play.stalled = True
        if event_type in ("STOP", "COMPLETE"):
            del self._plays[play_id]
            self._history[play.features["viewer"]].append(int(play.stalled))
            return {**play.features, "label": int(play.stalled)}
        return None


def encode_gate_batch(samples: Sequence[Mapping[str, Any]], config: GateConfig) -> dict[str, np.ndarray]:
    buckets = np.asarray(
        [[bucketize(s.get(name), b) for name, b in zip(GATE_FEATURES, config.bounds, strict=False)] for s in samples],
        dtype=np.int32,
    ).reshape(len(samples), len(GATE_FEATURES))
    devices = [s.get("device_type") for s in samples]
    device_ids = np.asarray(
        [1 + config.device_types.index(d) if d in config.device_types else 0 for d in devices], dtype=np.int32
    )
    return {"gate_buckets": buckets, "device_type": device_ids}


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
            return float(self._train_fn(inputs, labels).numpy())

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


def replace_choppy(p_choppy: float, threshold: float = GATE_THRESHOLD) -> bool:
    """GRF: swap the upcoming video for a cached one when the gate says >= 0.75 choppy."""
    return p_choppy >= threshold


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
