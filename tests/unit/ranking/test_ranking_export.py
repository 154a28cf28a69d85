"""Checkpoint round trip and TFLite export verified with LiteRT (float32 + dynamic range)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from support.ranking import TINY_FEATURES, TINY_MODEL, labelled_samples, trained_tiny_trainer

from processors.ranking.errors import ExportVerificationError
from processors.ranking.export import (
    FLOAT_KIND,
    QUANT_KIND,
    ExportConfig,
    export_version,
    frozen_serving_function,
    restore_checkpoint,
    run_tflite,
    save_checkpoint,
    tflite_ops,
    verify_tflite,
)
from processors.ranking.features import encode_batch
from processors.ranking.trainer import OnlineTrainer

CREATED = datetime(2024, 3, 2, 4, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def trained():
    return trained_tiny_trainer(), list(labelled_samples())


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    trainer, samples = trained
    out = tmp_path_factory.mktemp("export")
    result = export_version(
        trainer, out, "v1", samples[-200:], ExportConfig(), created_at=CREATED, metrics={"evr": 0.7}
    )
    return result


def test_export_writes_verified_float_and_quantized_artifacts(exported, trained):
    trainer, samples = trained
    float_art, quant_art = exported.artifacts[FLOAT_KIND], exported.artifacts[QUANT_KIND]
    for art in (float_art, quant_art):
        data = Path(art.path).read_bytes()
        assert len(data) == art.bytes and hashlib.sha256(data).hexdigest() == art.sha256
        assert not {"VAR_HANDLE", "READ_VARIABLE"} & set(art.ops)
    assert float_art.max_abs_diff <= 1e-4
    assert quant_art.max_abs_diff <= 0.05
    assert quant_art.bytes < float_art.bytes
    # parity on fresh inputs and other batch sizes (dynamic batch signature)
    for size in (1, 24, 57):
        batch = samples[:size]
        got = run_tflite(Path(float_art.path).read_bytes(), encode_batch(batch, trainer.features))
        np.testing.assert_allclose(got, trainer.predict(batch), atol=1e-4)
        quant = run_tflite(Path(quant_art.path).read_bytes(), encode_batch(batch, trainer.features))
        assert np.abs(quant - trainer.predict(batch)).max() <= 0.05


def test_manifest_describes_signature_hashes_and_features(exported, trained):
    trainer, _ = trained
    manifest = json.loads(Path(exported.manifest_path).read_text())
    assert manifest["version"] == "v1" and manifest["created_at"] == CREATED.isoformat()
    assert manifest["artifacts"][FLOAT_KIND]["sha256"] == exported.artifacts[FLOAT_KIND].sha256
    assert manifest["output"] == {"name": "predictions", "tasks": ["evr", "lvr", "svr", "fpr"]}
    names = [entry["name"] for entry in manifest["input_signature"]]
    assert names == ["item_id", "user_id", "device_type", "surface", "recent_ids", "numeric_buckets", "pxtr"]
    recent = next(e for e in manifest["input_signature"] if e["name"] == "recent_ids")
    assert recent == {"name": "recent_ids", "shape": [-1, TINY_FEATURES.recent_len], "dtype": "int32"}
    assert manifest["feature_config"] == TINY_FEATURES.to_dict()
    assert manifest["score_weights"]["svr"] < 0
    assert manifest["counters"]["samples_trained"] == trainer.counters()["samples_trained"]
    assert manifest["metrics"] == {"evr": 0.7}


def test_fixed_batch_export_pads_and_chunks(trained, tmp_path):
    trainer, samples = trained
    result = export_version(trainer, tmp_path, "fixed", samples[-50:], ExportConfig(batch=24, quantize=False))
    assert set(result.artifacts) == {FLOAT_KIND}
    assert all(entry["shape"][0] == 24 for entry in result.input_signature)
    data = Path(result.artifacts[FLOAT_KIND].path).read_bytes()
    got = run_tflite(data, encode_batch(samples[:30], trainer.features), batch=24)
    np.testing.assert_allclose(got, trainer.predict(samples[:30]), atol=1e-4)


def test_checkpoint_round_trip_restores_weights_and_counters(trained, tmp_path):
    trainer, samples = trained
    path = save_checkpoint(trainer, tmp_path / "ckpt")
    fresh = OnlineTrainer(TINY_FEATURES, TINY_MODEL)
    assert np.abs(fresh.predict(samples[:32]) - trainer.predict(samples[:32])).max() > 1e-4
    assert restore_checkpoint(fresh, tmp_path / "ckpt") == path
    np.testing.assert_allclose(fresh.predict(samples[:32]), trainer.predict(samples[:32]), atol=1e-6)
    assert fresh.counters()["steps"] == trainer.counters()["steps"]
    assert int(fresh.optimizer.iterations.numpy()) == int(trainer.optimizer.iterations.numpy())
    fresh.train_step(samples[:64])  # optimizer state usable after restore
    (tmp_path / "empty").mkdir()
    for missing in (tmp_path / "empty", tmp_path / "nothing"):
        with pytest.raises(FileNotFoundError):
            restore_checkpoint(fresh, missing)


def test_verification_rejects_drift_and_unfrozen_variable_models(trained):
    trainer, samples = trained
    inputs = encode_batch(samples[:16], trainer.features)
    reference = trainer.predict(samples[:16])
    frozen = frozen_serving_function(trainer.model, trainer.features)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], trainer.model)
    good = converter.convert()
    with pytest.raises(ExportVerificationError) as err:
        verify_tflite(good, inputs, reference + 0.1, 1e-3, kind="float")
    assert err.value.code == "parity_exceeded"
    # Keras 3 pitfall: converting the un-frozen function keeps resource variables that
    # LiteRT never initialises (XNNPACK then returns NaN). The verifier must catch it.
    spec = {k: tf.TensorSpec((None, *v.shape[1:]), v.dtype, name=k) for k, v in inputs.items()}
    serve = tf.function(lambda x: {"predictions": tf.sigmoid(trainer.model(x, training=False))}, input_signature=[spec])
    unfrozen = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], trainer.model).convert()
    assert {"VAR_HANDLE", "READ_VARIABLE"} <= set(tflite_ops(unfrozen))
    with pytest.raises(ExportVerificationError) as err:
        verify_tflite(unfrozen, inputs, reference, 1e-3, kind="unfrozen")
    assert err.value.code == "variable_ops_in_tflite"


def test_shared_checkpoint_directory_keeps_versions_side_by_side(trained, tmp_path):
    trainer, samples = trained
    shared = tmp_path / "checkpoints"
    first = export_version(trainer, tmp_path, "a", samples[:20], ExportConfig(quantize=False), checkpoint_dir=shared)
    assert Path(first.checkpoint_path).parent == shared
    assert tf.train.latest_checkpoint(str(shared)) == first.checkpoint_path


def test_export_needs_validation_samples(trained, tmp_path):
    trainer, _ = trained
    with pytest.raises(ExportVerificationError) as err:
        export_version(trainer, tmp_path, "v0", [])
    assert err.value.code == "no_validation_samples"
