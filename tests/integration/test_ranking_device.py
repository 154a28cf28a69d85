"""Device runtime: integrity checks, ranking 24 candidates with LiteRT, offline cache pool."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from support.ranking import labelled_samples, request_and_candidates, trained_tiny_trainer

from processors.ranking.device import DeviceRanker
from processors.ranking.errors import ModelIntegrityError
from processors.ranking.export import FLOAT_KIND, QUANT_KIND, ExportConfig, export_version
from processors.ranking.features import candidate_impressions
from processors.ranking.scoring import final_scores

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2024, 3, 20, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    trainer = trained_tiny_trainer()
    samples = list(labelled_samples())
    out = tmp_path_factory.mktemp("device")
    dynamic = export_version(trainer, out, "dyn", samples[-100:], ExportConfig())
    fixed = export_version(trainer, out, "fix", samples[-100:], ExportConfig(batch=24, quantize=False))

    def load(result, kind=FLOAT_KIND):
        manifest = json.loads(Path(result.manifest_path).read_text())
        return manifest, Path(result.artifacts[kind].path).read_bytes()

    return trainer, samples, load(dynamic), load(dynamic, QUANT_KIND), load(fixed)


def test_ranks_24_candidates_with_the_same_features_as_training(bundle):
    trainer, samples, (manifest, data), _, _ = bundle
    ranker = DeviceRanker(manifest, data)
    request, candidates = request_and_candidates(samples, 24)
    assert len(candidates) == 24
    ranked = ranker.rank(request, candidates)
    assert sorted(r.item_id for r in ranked) == sorted(c["item_id"] for c in candidates)
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    expected = trainer.predict(candidate_impressions(request, candidates))
    by_item = {c["item_id"]: expected[i] for i, c in enumerate(candidates)}
    for r in ranked:
        np.testing.assert_allclose(
            [r.predictions[t] for t in ("evr", "lvr", "svr", "fpr")], by_item[r.item_id], atol=1e-4
        )
        assert r.score == pytest.approx(
            float(final_scores(by_item[r.item_id][None], manifest["score_weights"])[0]), abs=1e-4
        )
    assert [r.item_id for r in ranker.rank(request, candidates, top_k=5)] == [r.item_id for r in ranked[:5]]
    assert ranker.rank(request, []) == []


def test_quantized_and_fixed_batch_models_rank_alike(bundle):
    trainer, samples, (manifest, data), (qmanifest, qdata), (fmanifest, fdata) = bundle
    request, candidates = request_and_candidates(samples, 24)
    float_preds = DeviceRanker(manifest, data).predict(candidate_impressions(request, candidates))
    quant = DeviceRanker(qmanifest, qdata, kind=QUANT_KIND)
    assert np.abs(quant.predict(candidate_impressions(request, candidates)) - float_preds).max() <= 0.05
    fixed = DeviceRanker(fmanifest, fdata)
    assert fixed.batch == 24
    for n in (5, 24, 30):  # padded, exact, chunked
        request_n, cands_n = request_and_candidates(samples, n)
        np.testing.assert_allclose(
            fixed.predict(candidate_impressions(request_n, cands_n)),
            trainer.predict(candidate_impressions(request_n, cands_n)),
            atol=1e-4,
        )


def test_rejects_bytes_that_do_not_match_the_manifest(bundle):
    _, _, (manifest, data), _, _ = bundle
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(ModelIntegrityError) as err:
        DeviceRanker(manifest, bytes(tampered))
    assert err.value.code == "sha256_mismatch"
    wrong_hash = {**manifest, "artifacts": {FLOAT_KIND: {**manifest["artifacts"][FLOAT_KIND], "sha256": "0" * 64}}}
    with pytest.raises(ModelIntegrityError) as err:
        DeviceRanker(wrong_hash, data)
    assert err.value.code == "sha256_mismatch"
    with pytest.raises(ModelIntegrityError) as err:
        DeviceRanker({**manifest, "artifacts": {}}, data)
    assert err.value.code == "artifact_not_in_manifest"


def test_rejects_a_manifest_whose_features_do_not_fit_the_model(bundle):
    _, _, (manifest, data), _, (fmanifest, _) = bundle
    other = {**manifest, "feature_config": {**manifest["feature_config"], "recent_len": 12}}
    with pytest.raises(ModelIntegrityError) as err:
        DeviceRanker(other, data)
    assert err.value.code == "signature_mismatch"
    # the fixed-batch signature pasted onto the dynamic model: caught against the model itself
    with pytest.raises(ModelIntegrityError) as err:
        DeviceRanker({**manifest, "input_signature": fmanifest["input_signature"]}, data)
    assert err.value.code == "signature_mismatch"
    with pytest.raises(ModelIntegrityError) as err:
        DeviceRanker({**manifest, "output": {"name": "predictions", "tasks": ["ctr"]}}, data)
    assert err.value.code == "task_mismatch"


def test_offline_mode_ranks_only_fresh_cached_items(bundle):
    _, samples, (manifest, data), _, _ = bundle
    ranker = DeviceRanker(manifest, data)
    request, candidates = request_and_candidates(samples, 24)
    pool = [{**c, "cached_at": NOW - timedelta(days=20 if i % 4 == 0 else 1)} for i, c in enumerate(candidates)]
    result = ranker.rank_offline(request, pool, NOW)
    assert sorted(result.expired_item_ids) == sorted(c["item_id"] for i, c in enumerate(candidates) if i % 4 == 0)
    assert len(result.ranked) == 18
    assert not {r.item_id for r in result.ranked} & set(result.expired_item_ids)
    # cached files are local: scored with cached_ratio 1.0, same as ranking them online with that ratio
    fresh = [{**c, "cached_ratio": 1.0} for i, c in enumerate(candidates) if i % 4]
    assert [r.item_id for r in result.ranked] == [r.item_id for r in ranker.rank(request, fresh)]


def test_device_runtime_does_not_import_tensorflow():
    code = "import sys, processors.ranking.device; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
