"""Checkpoints (tf.train.Checkpoint) and verified TFLite exports of the ranking model.

Conversion path: a tf.function ``serve(inputs) -> {"predictions": sigmoid(logits)}`` is
traced, its variables are **frozen into constants** (convert_variables_to_constants_v2)
and converted with builtin ops only. Freezing matters with Keras 3: converting the
un-frozen concrete function keeps VAR_HANDLE / READ_VARIABLE ops whose variables are
never initialised in LiteRT, so XNNPACK silently returns NaN. ``verify_tflite`` rejects
any artifact that still holds variable ops, and compares LiteRT with TF on a
validation batch.

Batch: ``batch=None`` exports a signature with a dynamic batch dimension (LiteRT resizes
on each call: works for 1..N candidates); ``batch=24`` fixes it (device pads the pool).
Both variants work with ai-edge-litert 2.3; see bench/ranking.py for their latency.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from processors.ranking.artifacts import FLOAT_KIND, OUTPUT_NAME, QUANT_KIND, SIGNATURE_KEY, sha256_hex
from processors.ranking.errors import ExportVerificationError
from processors.ranking.features import FeatureConfig, encode_batch, input_specs
from processors.ranking.scoring import DEFAULT_SCORE_WEIGHTS
from processors.ranking.tasks import TASKS

_VARIABLE_OPS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"})


@dataclass(frozen=True)
class ExportConfig:
    batch: int | None = None
    quantize: bool = True
    float_tolerance: float = 1e-4
    quant_tolerance: float = 0.05
    score_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SCORE_WEIGHTS))


@dataclass(frozen=True)
class Artifact:
    kind: str
    path: str
    bytes: int
    sha256: str
    max_abs_diff: float
    ops: tuple[str, ...]


@dataclass(frozen=True)
class ExportResult:
    version: str
    checkpoint_path: str
    manifest_path: str
    artifacts: dict[str, Artifact]
    input_signature: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["artifacts"] = {k: {**asdict(a), "ops": list(a.ops)} for k, a in self.artifacts.items()}
        return data


def _checkpoint(trainer: Any) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(
        model=trainer.model, optimizer=trainer.optimizer, step=trainer.step, samples_trained=trainer.samples_trained
    )


def save_checkpoint(trainer: Any, directory: str | Path, max_to_keep: int = 5) -> str:
    """Save model + optimizer + counters; returns the checkpoint prefix path."""
    with trainer.lock:
        manager = tf.train.CheckpointManager(_checkpoint(trainer), str(directory), max_to_keep=max_to_keep)
        return manager.save(checkpoint_number=int(trainer.step.numpy()))


def restore_checkpoint(trainer: Any, path_or_directory: str | Path) -> str:
    """Restore from a checkpoint prefix or the latest one in a directory."""
    path = str(path_or_directory)
    if Path(path).is_dir():
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {path}")
        path = latest
    elif not Path(path + ".index").exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with trainer.lock:
        _checkpoint(trainer).restore(path).assert_existing_objects_matched()
    return path


def input_signature(features: FeatureConfig, batch: int | None = None) -> list[dict[str, Any]]:
    return [
        {"name": name, "shape": [batch if batch is not None else -1, *shape], "dtype": dtype}
        for name, (shape, dtype) in input_specs(features).items()
    ]


def frozen_serving_function(model: Any, features: FeatureConfig, batch: int | None = None) -> Any:
    """Concrete serving function with the model's current weights baked in as constants."""
    return freeze_model(model, input_specs(features), batch)


def freeze_model(
    model: Any, specs: Mapping[str, tuple[tuple[int, ...], str]], batch: int | None = None, *, output: str = OUTPUT_NAME
) -> Any:
    """``{output: sigmoid(model(inputs))}`` traced for ``specs`` and frozen (no variables left)."""
    spec = {
        name: tf.TensorSpec((batch, *shape), tf.as_dtype(dtype), name=name) for name, (shape, dtype) in specs.items()
    }

    @tf.function(input_signature=[spec])
    def serve(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {output: tf.sigmoid(model(inputs, training=False))}

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    # Freezing flattens the output dict to ``output_0``; re-wrap to keep the name.
    names = list(spec)

    @tf.function(input_signature=[spec])
    def named(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        flat = frozen(**{name: inputs[name] for name in names})
        return {output: flat[0] if isinstance(flat, (list, tuple)) else flat}

    return named.get_concrete_function()


def convert_frozen(frozen: Any, model: Any, *, quantize: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no dataset: dynamic-range int8 weights
    return converter.convert()


def tflite_ops(model_bytes: bytes) -> tuple[str, ...]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    return tuple(sorted({op["op_name"] for op in interpreter._get_ops_details()}))


def run_tflite(
    model_bytes: bytes, inputs: Mapping[str, np.ndarray], batch: int | None = None, *, output: str = OUTPUT_NAME
) -> np.ndarray:
    """Run a batch through LiteRT (chunked + padded for a fixed-batch model)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model_bytes).get_signature_runner(SIGNATURE_KEY)
    total = len(next(iter(inputs.values())))
    chunk = batch or max(total, 1)
    out = []
    for start in range(0, total, chunk):
        part = {k: v[start : start + chunk] for k, v in inputs.items()}
        rows = len(next(iter(part.values())))
        if batch is not None and rows < batch:
            part = {k: np.concatenate([v, np.zeros((batch - rows, *v.shape[1:]), v.dtype)]) for k, v in part.items()}
        out.append(runner(**part)[output][:rows])
    return np.concatenate(out) if out else np.zeros((0, len(TASKS)), np.float32)


def verify_tflite(
    model_bytes: bytes,
    inputs: Mapping[str, np.ndarray],
    reference: np.ndarray,
    tolerance: float,
    *,
    kind: str,
    batch: int | None = None,
    output: str = OUTPUT_NAME,
) -> tuple[float, tuple[str, ...]]:
    """Max abs difference LiteRT vs TF; raises ExportVerificationError beyond tolerance."""
    ops = tflite_ops(model_bytes)
    leaked = _VARIABLE_OPS.intersection(ops)
    if leaked:
        raise ExportVerificationError("variable_ops_in_tflite", f"{kind} still holds {sorted(leaked)}")
    got = run_tflite(model_bytes, inputs, batch, output=output)
    if got.shape != reference.shape:
        raise ExportVerificationError("shape_mismatch", f"{kind}: {got.shape} vs {reference.shape}")
    if not np.all(np.isfinite(got)):
        raise ExportVerificationError("non_finite_output", f"{kind} produced NaN/inf")
    diff = float(np.max(np.abs(got - reference))) if got.size else 0.0
    if diff > tolerance:
        raise ExportVerificationError("parity_exceeded", f"{kind}: max abs diff {diff:.3g} > {tolerance:.3g}")
    return diff, ops


def export_version(
    trainer: Any,
    out_dir: str | Path,
    version: str,
    validation_samples: Sequence[Mapping[str, Any]],
    config: ExportConfig | None = None,
    *,
    created_at: datetime | None = None,
    metrics: Mapping[str, float | None] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> ExportResult:
    """Checkpoint + TFLite float32 (+ dynamic-range) + LiteRT verification + manifest.json.

    Only the checkpoint, freezing and the TF reference predictions hold the trainer
    lock; conversion and verification run outside it so training can continue.
    ``checkpoint_dir`` (default ``out_dir/version/checkpoint``) may be one shared
    directory so that tf.train.CheckpointManager keeps the last few across versions.
    """
    config = config or ExportConfig()
    started = time.perf_counter()
    if not validation_samples:
        raise ExportVerificationError("no_validation_samples", "need at least one validation sample")
    out = Path(out_dir) / version
    out.mkdir(parents=True, exist_ok=True)
    inputs = encode_batch(validation_samples, trainer.features)
    with trainer.lock:
        checkpoint_path = save_checkpoint(trainer, checkpoint_dir or out / "checkpoint")
        frozen = frozen_serving_function(trainer.model, trainer.features, config.batch)
        reference = trainer.predict_inputs(inputs)
        counters = trainer.counters()
    variants = [(FLOAT_KIND, False, config.float_tolerance)]
    if config.quantize:
        variants.append((QUANT_KIND, True, config.quant_tolerance))
    artifacts: dict[str, Artifact] = {}
    for kind, quantize, tolerance in variants:
        model_bytes = convert_frozen(frozen, trainer.model, quantize=quantize)
        diff, ops = verify_tflite(model_bytes, inputs, reference, tolerance, kind=kind, batch=config.batch)
        path = out / f"ranking-{version}-{kind}.tflite"
        path.write_bytes(model_bytes)
        artifacts[kind] = Artifact(kind, str(path), len(model_bytes), sha256_hex(model_bytes), diff, ops)
    signature = input_signature(trainer.features, config.batch)
    manifest = build_manifest(
        version=version,
        created_at=created_at or datetime.now(timezone.utc),
        artifacts=artifacts,
        signature=signature,
        features=trainer.features,
        score_weights=config.score_weights,
        counters=counters,
        metrics=metrics,
        model_config=trainer.model_config.to_dict(),
    )
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return ExportResult(
        version, checkpoint_path, str(manifest_path), artifacts, signature, time.perf_counter() - started
    )


def build_manifest(
    *,
    version: str,
    created_at: datetime,
    artifacts: Mapping[str, Artifact],
    signature: list[dict[str, Any]],
    features: FeatureConfig,
    score_weights: Mapping[str, float],
    counters: Mapping[str, int] | None = None,
    metrics: Mapping[str, float | None] | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Plain-JSON manifest a device needs: which bytes, how to feed them, how to score."""
    return {
        "version": version,
        "created_at": created_at.isoformat(),
        "signature_key": SIGNATURE_KEY,
        "input_signature": signature,
        "output": {"name": OUTPUT_NAME, "tasks": list(TASKS)},
        "artifacts": {
            kind: {"file": Path(a.path).name, "bytes": a.bytes, "sha256": a.sha256, "max_abs_diff": a.max_abs_diff}
            for kind, a in artifacts.items()
        },
        "feature_config": features.to_dict(),
        "score_weights": dict(score_weights),
        "counters": dict(counters or {}),
        "metrics": dict(metrics or {}),
        "model_config": dict(model_config or {}),
    }
