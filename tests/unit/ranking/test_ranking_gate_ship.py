"""The gate model ships (GRF 002): trained beside the ranking model in the training thread, exported
with a manifest of its own, run on the device with LiteRT (no TensorFlow), and GRF's device rule."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import support.ranking as _ranking_helpers  # noqa: F401 - quiets TF logging before TF is imported
import numpy as np
import pytest

from demo.ranking_synthetic import SyntheticConfig, generate
from processors.ranking.errors import ModelIntegrityError
from processors.ranking.gate_runtime import DeviceGate, GateSampleBuilder, pick_next, play_context
from processors.ranking.registry import gate_model_name
from streams.capabilities.ranking.training import GateCore

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def gate_samples():
    stream = generate(SyntheticConfig(seed=11, users=200, items=100, clusters=4, requests=2_500))
    builder = GateSampleBuilder()
    return [s for e in stream.playbacks if (s := builder.add_playback(e)) is not None]


@pytest.fixture(scope="module")
def exported(gate_samples, tmp_path_factory):
    core = GateCore()
    for _ in range(2):
        for i in range(0, len(gate_samples), 256):
            core.train(gate_samples[i:i + 256])
    job = core.export(tmp_path_factory.mktemp("gate"), "g1", "test")
    return core, job


def test_the_trainer_side_gate_exports_a_version_with_its_own_manifest(exported):
    core, job = exported
    assert job is not None and job.version == "g1"
    manifest = job.manifest
    assert manifest["kind"] == "gate" and manifest["output"]["name"] == "choppy" and manifest["threshold"] == 0.75
    assert manifest["metrics"]["choppy"] > 0.6 and len(job.eval_samples) >= 50
    assert {e["name"] for e in manifest["input_signature"]} == {"gate_buckets", "device_type"}
    # nothing new trained since: no second export
    assert core.export(Path(job.tflite_path).parents[1], "g2", "test") is None
    assert gate_model_name("ranking") == "ranking-gate"


def test_the_device_runs_the_published_gate_like_the_trainer(exported):
    core, job = exported
    data = Path(job.tflite_path).read_bytes()
    gate = DeviceGate(job.manifest, data)
    window = job.eval_samples[:40]
    np.testing.assert_allclose(gate.predict(window), core.trainer.predict(window), atol=1e-4)
    assert gate.choppy(window) == [p >= 0.75 for p in gate.predict(window)]
    with pytest.raises(ModelIntegrityError):
        DeviceGate(job.manifest, data[:-1] + b"\0")
    with pytest.raises(ModelIntegrityError):
        DeviceGate({**job.manifest, "kind": None}, data)
    with pytest.raises(ModelIntegrityError):
        DeviceGate({**job.manifest, "input_signature": []}, data)


def test_grf_device_rule_skips_a_choppy_video_for_the_cached_pool():
    ranked = ["a", "b", "c"]
    assert pick_next(ranked, {"a": 0.2}, ["p1"]).item_id == "a"
    choppy = pick_next(ranked, {"a": 0.8, "b": 0.1}, ["p1", "p2"])
    assert (choppy.item_id, choppy.from_pool, choppy.skipped) == ("p1", True, ("a",))
    assert pick_next(ranked, {"a": 0.75}, ["a", "p2"]).item_id == "p2"  # never the skipped video itself
    no_pool = pick_next(ranked, {"a": 0.9, "b": 0.8, "c": 0.1}, [])
    assert (no_pool.item_id, no_pool.from_pool, no_pool.skipped) == ("c", False, ("a", "b"))
    assert pick_next(ranked, {"a": 0.9, "b": 0.9, "c": 0.9}, []).item_id == "a"  # all choppy: play the best
    assert pick_next([], {}, ["p1"]).item_id == "p1" and pick_next([], {}, []).item_id is None
    features = play_context({"item_id": "a", "item_duration_ms": 120_000, "bitrate_kbps": 2_000},
                            {"network_kbps": 900, "choppy_history": 0.5, "cached_ratio": 0.1}, "TV")
    assert features == {"device_type": "TV", "duration_s": 120.0, "size_mb": 30.0, "network_kbps": 900,
                        "cached_ratio": 0.1, "device_score": None, "choppy_history": 0.5}


def test_the_device_gate_does_not_import_tensorflow():
    code = ("import sys, processors.ranking.gate_runtime, sinks.device_client; "
            "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
