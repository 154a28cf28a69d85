"""Multi-task ranking model (GRF): target attention over the recent list + MMoE.

Functional Keras (Keras 3 on TF) using only ops with TFLite builtin kernels (GATHER,
FULLY_CONNECTED, MUL, SUM, SOFTMAX, TRANSPOSE, RESHAPE, ...). The model outputs the
four task **logits** ``(batch, 4)`` in TASKS order; serving applies the sigmoid (see
export.py) and the final score is a weighted sum of the probabilities (``final_scores``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from processors.ranking.errors import RankingInputError
from processors.ranking.features import NUMERIC_FEATURES, FeatureConfig, input_specs
from processors.ranking.scoring import DEFAULT_SCORE_WEIGHTS, final_scores  # noqa: F401 - re-exported
from processors.ranking.tasks import TASKS


@dataclass(frozen=True)
class ModelConfig:
    item_dim: int = 32
    user_dim: int = 16
    categorical_dim: int = 4
    numeric_dim: int = 4
    attention_heads: int = 2
    attention_head_dim: int = 16
    experts: int = 4
    expert_units: int = 64
    tower_units: int = 32
    seed: int = 7

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise RankingInputError("bad_model_config", f"unknown keys {sorted(unknown)}")
        return cls(**dict(data))


def _seeded(seed: int, name: str) -> dict[str, Any]:
    """Per-layer initializer seeds derived from the model seed and the layer name.

    Keeps builds reproducible without keras.utils.set_random_seed, which would reseed
    the whole process (Python, numpy and TF global generators) as a side effect.
    """
    derived = (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1)
    return {"kernel_initializer": keras.initializers.GlorotUniform(seed=derived)}


def _embedding(vocab: int, dim: int, seed: int, name: str) -> layers.Embedding:
    derived = (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1)
    initializer = keras.initializers.RandomUniform(-0.05, 0.05, seed=derived)
    return layers.Embedding(vocab, dim, embeddings_initializer=initializer, name=name)


class TargetAttention(layers.Layer):
    """Multi-head attention of the candidate item (query) over the recent list (keys).

    Padding (id 0) is masked with a large negative logit instead of -inf so an empty
    history yields finite values; the pooled vector is then zeroed by ``has_history``.
    """

    def __init__(self, heads: int, head_dim: int, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.heads = heads
        self.head_dim = head_dim
        self.seed = seed
        width = heads * head_dim
        self.query = layers.Dense(width, use_bias=False, name="query", **_seeded(seed, "query"))
        self.key = layers.Dense(width, use_bias=False, name="key", **_seeded(seed, "key"))
        self.value = layers.Dense(width, use_bias=False, name="value", **_seeded(seed, "value"))
        self.output_projection = layers.Dense(width, name="output", **_seeded(seed, "output"))

    def call(self, candidate: Any, history: Any, history_ids: Any) -> Any:
        heads, dim = self.heads, self.head_dim
        length = history_ids.shape[1]
        q = ops.reshape(self.query(candidate), (-1, 1, heads, dim))
        k = ops.reshape(self.key(history), (-1, length, heads, dim))
        v = ops.reshape(self.value(history), (-1, length, heads, dim))
        valid = ops.cast(ops.not_equal(history_ids, 0), "float32")  # (b, L)
        logits = ops.sum(q * k, axis=-1) / math.sqrt(dim)  # (b, L, h)
        logits = logits + ops.expand_dims((1.0 - valid) * -1e9, -1)
        weights = ops.softmax(ops.transpose(logits, (0, 2, 1)), axis=-1)  # (b, h, L)
        pooled = ops.sum(ops.expand_dims(ops.transpose(weights, (0, 2, 1)), -1) * v, axis=1)  # (b, h, d)
        pooled = ops.reshape(pooled, (-1, heads * dim))
        has_history = ops.max(valid, axis=1, keepdims=True)
        return self.output_projection(pooled) * has_history

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "heads": self.heads, "head_dim": self.head_dim, "seed": self.seed}


class MultiGateMixtureOfExperts(layers.Layer):
    """MMoE: shared ReLU experts, one softmax gate and one tower per task -> logits."""

    def __init__(
        self, experts: int, expert_units: int, tower_units: int, tasks: int, seed: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.experts = experts
        self.expert_units = expert_units
        self.tower_units = tower_units
        self.tasks = tasks
        self.expert_layer = layers.Dense(
            experts * expert_units, activation="relu", name="experts", **_seeded(seed, "experts")
        )
        self.gates = [
            layers.Dense(experts, activation="softmax", name=f"gate_{t}", **_seeded(seed, f"gate_{t}"))
            for t in range(tasks)
        ]
        self.towers = [
            layers.Dense(tower_units, activation="relu", name=f"tower_{t}", **_seeded(seed, f"tower_{t}"))
            for t in range(tasks)
        ]
        self.heads = [layers.Dense(1, name=f"logit_{t}", **_seeded(seed, f"logit_{t}")) for t in range(tasks)]

    def call(self, inputs: Any) -> Any:
        expert_out = ops.reshape(self.expert_layer(inputs), (-1, self.experts, self.expert_units))
        logits = []
        for gate, tower, head in zip(self.gates, self.towers, self.heads, strict=False):
            mixed = ops.sum(ops.expand_dims(gate(inputs), -1) * expert_out, axis=1)
            logits.append(head(tower(mixed)))
        return ops.concatenate(logits, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "experts": self.experts,
            "expert_units": self.expert_units,
            "tower_units": self.tower_units,
            "tasks": self.tasks,
            "seed": self.seed,
        }


def build_ranking_model(features: FeatureConfig, config: ModelConfig | None = None) -> keras.Model:
    config = config or ModelConfig()
    inputs = {
        name: keras.Input(shape=shape, dtype=dtype, name=name) for name, (shape, dtype) in input_specs(features).items()
    }
    item_table = _embedding(features.item_buckets, config.item_dim, config.seed, "item_embedding")
    candidate = item_table(inputs["item_id"])
    history = item_table(inputs["recent_ids"])
    user = _embedding(features.user_buckets, config.user_dim, config.seed, "user_embedding")(inputs["user_id"])
    categorical = [
        _embedding(size, config.categorical_dim, config.seed, f"{name}_embedding")(inputs[name])
        for name, size in features.categorical_vocab_sizes.items()
    ]
    numeric = [
        _embedding(size, config.numeric_dim, config.seed, f"{name}_embedding")(inputs["numeric_buckets"][:, i])
        for i, (name, size) in enumerate(zip(NUMERIC_FEATURES, features.numeric_vocab_sizes, strict=False))
    ]
    attention = TargetAttention(
        config.attention_heads, config.attention_head_dim, seed=config.seed, name="target_attention"
    )(candidate, history, inputs["recent_ids"])
    context = []
    if features.upcoming_len:  # GRF's upcoming list: what the device will show after the candidate
        upcoming = item_table(inputs["upcoming_ids"])
        context.append(TargetAttention(
            config.attention_heads, config.attention_head_dim, seed=config.seed + 1, name="upcoming_attention"
        )(candidate, upcoming, inputs["upcoming_ids"]))
    pxtr = ops.clip(inputs["pxtr"], 1e-4, 1.0 - 1e-4)
    pxtr_logit = ops.log(pxtr) - ops.log(1.0 - pxtr)
    shared = layers.Concatenate(name="shared_input")(
        [candidate, user, *categorical, *numeric, attention, *context, inputs["pxtr"], pxtr_logit]
    )
    logits = MultiGateMixtureOfExperts(
        config.experts, config.expert_units, config.tower_units, len(TASKS), seed=config.seed, name="mmoe"
    )(shared)
    return keras.Model(inputs=inputs, outputs=logits, name="grf_ranking")


def parameter_count(model: keras.Model) -> int:
    return int(sum(np.prod(v.shape) for v in model.weights))
