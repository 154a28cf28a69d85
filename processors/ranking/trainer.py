"""Online trainer: one Keras model + optimizer updated from labelled mini-batches.

Meant to be driven by a stream agent: push labelled impressions into a ``SampleBuffer``,
drain a batch and call ``OnlineTrainer.train_step(batch)`` in a thread executor. All
TensorFlow work runs under one lock, so train_step / evaluate / predict / checkpoint
export may be called from different threads. Feature encoding happens outside the lock.

Holdout: a sample whose impression_id hashes to 0 mod ``holdout_every`` is never trained
on; it goes to a bounded deque of recent held-out samples used by ``evaluate``. Hashing
the id (not counting arrivals) keeps the split identical across restarts and replays.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from processors.ranking.features import FeatureConfig, encode_batch, encode_labels, input_specs
from processors.ranking.metrics import task_aucs
from processors.ranking.model import ModelConfig, build_ranking_model
from processors.ranking.tasks import TASKS


@dataclass(frozen=True)
class TrainerConfig:
    learning_rate: float = 2e-3
    holdout_every: int = 10
    holdout_capacity: int = 20_000
    task_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    clipnorm: float | None = 5.0


class SampleBuffer:
    """Thread-safe bounded FIFO of labelled samples; the oldest are dropped when full."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._items: deque[Mapping[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.dropped = 0

    def push(self, sample: Mapping[str, Any]) -> None:
        with self._lock:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(sample)

    def extend(self, samples: Iterable[Mapping[str, Any]]) -> None:
        for sample in samples:
            self.push(sample)

    def drain(self, max_items: int) -> list[Mapping[str, Any]]:
        with self._lock:
            count = min(max_items, len(self._items))
            return [self._items.popleft() for _ in range(count)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def is_holdout(sample: Mapping[str, Any], every: int) -> bool:
    impression_id = str(sample.get("impression_id") or "")
    digest = hashlib.blake2b(impression_id.encode(), digest_size=8, person=b"holdout").digest()
    return int.from_bytes(digest, "little") % every == 0


class OnlineTrainer:
    def __init__(
        self,
        features: FeatureConfig | None = None,
        model_config: ModelConfig | None = None,
        config: TrainerConfig | None = None,
    ) -> None:
        self.features = features or FeatureConfig()
        self.model_config = model_config or ModelConfig()
        self.config = config or TrainerConfig()
        if len(self.config.task_weights) != len(TASKS):
            raise ValueError(f"task_weights needs {len(TASKS)} entries")
        self.lock = threading.RLock()
        self.model = build_ranking_model(self.features, self.model_config)
        self.optimizer = keras.optimizers.Adam(learning_rate=self.config.learning_rate, clipnorm=self.config.clipnorm)
        self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.samples_trained = tf.Variable(0, dtype=tf.int64, trainable=False, name="samples_trained")
        self.samples_seen = 0
        self._holdout: deque[Mapping[str, Any]] = deque(maxlen=self.config.holdout_capacity)
        self._task_weights = tf.constant(self.config.task_weights, dtype=tf.float32)
        signature = {
            name: tf.TensorSpec((None, *shape), tf.as_dtype(dtype), name=name)
            for name, (shape, dtype) in input_specs(self.features).items()
        }
        labels_spec = tf.TensorSpec((None, len(TASKS)), tf.float32, name="labels")
        self._train_fn = tf.function(self._train_graph, input_signature=[signature, labels_spec])
        self._predict_fn = tf.function(self._predict_graph, input_signature=[signature])

    def _train_graph(self, inputs: dict[str, tf.Tensor], labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = self.model(inputs, training=True)
            per_task = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=0)
            total = tf.reduce_sum(per_task * self._task_weights)
        grads = tape.gradient(total, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=False))
        self.step.assign_add(1)
        self.samples_trained.assign_add(tf.cast(tf.shape(labels)[0], tf.int64))
        return tf.concat([per_task, tf.reshape(total, (1,))], axis=0)

    def _predict_graph(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.sigmoid(self.model(inputs, training=False))

    def split_holdout(self, samples: Sequence[Mapping[str, Any]]) -> tuple[list, list]:
        train, holdout = [], []
        for sample in samples:
            (holdout if is_holdout(sample, self.config.holdout_every) else train).append(sample)
        return train, holdout

    def train_step(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Hold out every N-th sample, train one step on the rest; returns losses and counts.

        Raises RankingInputError (before touching the model) if any sample is malformed.
        """
        train, holdout = self.split_holdout(samples)
        inputs = encode_batch(train, self.features)
        labels = encode_labels(train)
        encode_batch(holdout, self.features)
        encode_labels(holdout)
        result: dict[str, Any] = {"trained": len(train), "held_out": len(holdout)}
        with self.lock:
            self.samples_seen += len(samples)
            self._holdout.extend(holdout)
            if train:
                losses = self._train_fn(inputs, labels).numpy()
                result.update({task: float(losses[i]) for i, task in enumerate(TASKS)})
                result["loss"] = float(losses[-1])
            result["step"] = int(self.step.numpy())
        return result

    def predict(self, samples: Sequence[Mapping[str, Any]], batch_size: int = 4096) -> np.ndarray:
        """(n, 4) task probabilities in TASKS order."""
        out = []
        for start in range(0, len(samples), batch_size):
            inputs = encode_batch(samples[start : start + batch_size], self.features)
            with self.lock:
                out.append(self._predict_fn(inputs).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(TASKS)), dtype=np.float32)

    def predict_inputs(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities for already-encoded inputs (same weights as a concurrent export)."""
        with self.lock:
            return self._predict_fn(dict(inputs)).numpy()

    def holdout_samples(self) -> list[Mapping[str, Any]]:
        with self.lock:
            return list(self._holdout)

    def evaluate(self, samples: Sequence[Mapping[str, Any]] | None = None) -> dict[str, float | None]:
        """Per-task AUC on ``samples`` (default: the recent holdout); None = one class only."""
        samples = self.holdout_samples() if samples is None else list(samples)
        if not samples:
            return {task: None for task in TASKS}
        return task_aucs(encode_labels(samples), self.predict(samples))

    def counters(self) -> dict[str, int]:
        with self.lock:
            return {
                "samples_seen": self.samples_seen,
                "samples_trained": int(self.samples_trained.numpy()),
                "steps": int(self.step.numpy()),
                "holdout": len(self._holdout),
            }
