"""`vitrina model` on the persisted registry (Redis + S3 copy), the model read API, and store healing.

Versions are real: a tiny model trained here, exported and verified with LiteRT, published with
the same ``ModelStore.publish`` the trainer agent uses. Each test module uses its own model name.
"""
from __future__ import annotations

import json
import os
import sys
import subprocess
import uuid
from pathlib import Path

import pytest
from support.ranking import TINY_FEATURES, TINY_MODEL, labelled_samples

from api.auth import dev_client
from api.client import ApiError
from infra.ports import pick_free_ports
from processors.ranking.artifacts import FLOAT_KIND, QUANT_KIND, sha256_hex
from processors.ranking.export import ExportConfig, export_version
from processors.ranking.trainer import OnlineTrainer, TrainerConfig
from sinks.model_store import ModelStore, registry_copy_key
from sinks.redis_views import model_checkpoint_request_key, model_current_key, model_registry_key
from streams.kafka.tail import tail
from streams.kafka.codec import default_codec
from streams.ops.supervisor import start_api

VITRINA = str(Path(sys.executable).parent / "vitrina")  # the venv running the tests (not activated in CI)


def vitrina(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VITRINA, "model", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VITRINA_LOG_LEVEL": "error"})


def _publish(store: ModelStore, trainer: OnlineTrainer, out: Path, version: str, window: list, tolerance: float):
    metrics = trainer.evaluate(window)
    export = export_version(trainer, out, version, window, ExportConfig(), metrics=metrics,
                            checkpoint_dir=out / "checkpoints")
    manifest = json.loads(Path(export.manifest_path).read_text())
    manifest["stream"] = {"event_time": window[-1]["event_time"].isoformat(), "samples_seen": 0}
    return store.publish(version, {k: a.path for k, a in export.artifacts.items()}, export.checkpoint_path,
                         manifest, window, tolerance=tolerance, last_n=5)


@pytest.fixture(scope="module")
def published(topics, tmp_path_factory):
    """Two promoted versions: A (first model), then B (promoted with a permissive tolerance)."""
    name = f"clitest-{uuid.uuid4().hex[:8]}"
    store = ModelStore(topics, name)
    store.ensure_bucket()
    out = tmp_path_factory.mktemp("cli-export")
    samples = list(labelled_samples())
    trainer = OnlineTrainer(TINY_FEATURES, TINY_MODEL, TrainerConfig(holdout_every=4, learning_rate=0.01))
    for i in range(0, 1200, 64):
        trainer.train_step(samples[i:i + 64])
    window = trainer.holdout_samples()
    first = _publish(store, trainer, out, "v-a", window, tolerance=0.0)
    for i in range(1200, 2400, 64):
        trainer.train_step(samples[i:i + 64])
    second = _publish(store, trainer, out, "v-b", trainer.holdout_samples()[-300:], tolerance=1.0)
    return store, first, second


def test_publish_uploads_verified_artifacts_and_promotes(published):
    store, first, second = published
    assert first.state == "PRODUCTION" and first.decision.reasons == ("no_production_history",)
    assert second.state == "PRODUCTION" and second.production_before == "v-a"
    assert second.production_metrics is not None and set(second.production_metrics) == {"evr", "lvr", "svr", "fpr"}
    manifest = store.manifest("v-b")
    for kind, file_name in ((FLOAT_KIND, "model.tflite"), (QUANT_KIND, "model_quant.tflite")):
        key = manifest["artifacts"][kind]["key"]
        assert key == f"{store.name}/v-b/{file_name}"
        assert sha256_hex(store.get_bytes(key)) == manifest["artifacts"][kind]["sha256"]
    assert manifest["input_signature"] and manifest["keys"]["manifest"] == f"{store.name}/v-b/manifest.json"
    assert len(manifest["keys"]["checkpoint"]) == 2
    registry = store.load()
    assert registry.get("v-a").state.value == "ARCHIVED"
    # the production model was re-evaluated on B's window: A has two evaluations
    assert len(registry.get("v-a").evaluations) == 2
    copy = store.get_json(registry_copy_key(store.name))
    assert copy["revision"] >= 2 and {v["version"] for v in copy["versions"]} == {"v-a", "v-b"}
    pointer = json.loads(store.redis.get(model_current_key(store.name)))
    assert pointer["version"] == "v-b" and pointer["state"] == "PRODUCTION"


def test_cli_list_rollback_promote_show(published):
    store, _, _ = published
    listing = vitrina("list", "--name", store.name)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()[1:]}
    assert rows == {"v-a": "ARCHIVED", "v-b": "PRODUCTION"}

    rolled = vitrina("rollback", "--name", store.name)
    assert rolled.returncode == 0, rolled.stderr
    assert "rolled back to v-a" in rolled.stdout
    pointer = json.loads(store.redis.get(model_current_key(store.name)))
    assert pointer["version"] == "v-a" and pointer["promotion_reason"] == "rollback"
    assert store.load().get("v-b").state.value == "ARCHIVED"

    promoted = vitrina("promote", "v-b", "--name", store.name)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(store.redis.get(model_current_key(store.name)))["version"] == "v-b"

    shown = vitrina("show", "v-a", "--name", store.name)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["record"]["state"] == "ARCHIVED" and detail["manifest"]["version"] == "v-a"
    assert [t["to"] for t in detail["record"]["transitions"]] == ["STAGING", "PRODUCTION", "ARCHIVED",
                                                                   "PRODUCTION", "ARCHIVED"]

    events = [r.value for r in tail(store.settings, default_codec(), "models.published")
              if r.value and r.value["model"] == store.name]
    assert [(e["version"], e["state"]) for e in events][-2:] == [("v-a", "PRODUCTION"), ("v-b", "PRODUCTION")]


def test_cli_refuses_illegal_operations_with_codes(published):
    store, _, _ = published
    unknown = vitrina("promote", "v-nope", "--name", store.name)
    assert unknown.returncode == 2 and "error unknown_version" in unknown.stderr
    already = vitrina("promote", "v-b", "--name", store.name)
    assert already.returncode == 2 and "error already_production" in already.stderr
    missing = vitrina("show", "--name", store.name)
    assert missing.returncode == 2 and "error missing_version" in missing.stderr
    bad_name = vitrina("list", "--name", "../etc")
    assert bad_name.returncode == 2 and "bad_model_name" in bad_name.stderr
    empty = vitrina("rollback", "--name", f"empty-{uuid.uuid4().hex[:6]}")
    assert empty.returncode == 2 and "error no_previous_version" in empty.stderr


def test_cli_checkpoint_sets_the_request_flag(published):
    store, _, _ = published
    done = vitrina("checkpoint", "--name", store.name)
    assert done.returncode == 0, done.stderr
    assert store.redis.get(model_checkpoint_request_key(store.name)) is not None
    assert store.take_checkpoint_request() is not None and store.take_checkpoint_request() is None


def test_registry_and_pointer_heal_from_s3_after_redis_loss(published):
    store, _, _ = published
    before = store.load()
    store.redis.delete(model_registry_key(store.name), model_current_key(store.name))
    assert store.load() == before  # read from the S3 copy
    manifest = store.current_manifest()
    assert manifest is not None and manifest["version"] == before.production().version
    assert json.loads(store.redis.get(model_current_key(store.name)))["version"] == manifest["version"]


def test_read_api_serves_current_manifest_and_versions(published):
    store, _, _ = published
    api = start_api(store.settings, port=pick_free_ports(1)[0], name=f"api-{store.name}")
    try:
        client = dev_client(api.settings, api.base_url)
        current = client.current_model(store.name)
        assert current["version"] == store.load().production().version
        assert current["artifacts"][FLOAT_KIND]["sha256"] == store.manifest(current["version"])["artifacts"][
            FLOAT_KIND]["sha256"]
        versions = client.model_versions(store.name)
        assert {v["version"] for v in versions["versions"]} == {"v-a", "v-b"}
        with pytest.raises(ApiError) as missing:
            client.current_model(f"nomodel-{uuid.uuid4().hex[:6]}")
        assert missing.value.status == 404 and missing.value.code == "MODEL_NOT_FOUND"
        with pytest.raises(ApiError) as bad:
            client.current_model("Bad Name!")
        assert bad.value.status == 400 and bad.value.code == "BAD_MODEL_NAME"
    finally:
        api.stop()
