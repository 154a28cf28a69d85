"""Device runtime: verify downloaded model bytes, score a candidate pool with LiteRT.

The I/O shell downloads ``manifest.json`` and the model bytes; ``DeviceRanker`` checks
the sha256 and the input signature against the manifest's feature config, then ranks
candidates with the same ``features.encode_batch`` the trainer used. ``rank_offline``
ranks only the local cache pool (GRF offline mode), skipping entries older than two
weeks (GRF's eviction age).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from processors.ranking.artifacts import FLOAT_KIND, OUTPUT_NAME, SIGNATURE_KEY, sha256_hex
from processors.ranking.errors import ModelIntegrityError, RankingInputError
from processors.ranking.features import FeatureConfig, encode_batch, encode_candidates, input_specs
from processors.ranking.scoring import final_scores
from processors.ranking.tasks import TASKS

CACHE_MAX_AGE = timedelta(days=14)


@dataclass(frozen=True)
class RankedCandidate:
    item_id: str
    score: float
    predictions: dict[str, float]


@dataclass(frozen=True)
class OfflineRanking:
    ranked: list[RankedCandidate]
    expired_item_ids: list[str]


def _manifest_signature(manifest: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    try:
        return {
            entry["name"]: (tuple(int(d) for d in entry["shape"]), str(entry["dtype"]))
            for entry in manifest["input_signature"]
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelIntegrityError(
            "bad_manifest", f"input_signature unreadable: {exc}", field="input_signature"
        ) from exc


class DeviceRanker:
    def __init__(self, manifest: Mapping[str, Any], model_bytes: bytes, *, kind: str = FLOAT_KIND,
                 num_threads: int | None = None) -> None:
        artifact = (manifest.get("artifacts") or {}).get(kind)
        if not isinstance(artifact, Mapping) or "sha256" not in artifact:
            raise ModelIntegrityError("artifact_not_in_manifest", f"manifest has no {kind} artifact", field="artifacts")
        actual = sha256_hex(model_bytes)
        if actual != artifact["sha256"]:
            raise ModelIntegrityError(
                "sha256_mismatch",
                f"model bytes hash {actual[:12]}... != manifest {str(artifact['sha256'])[:12]}...",
                field="sha256",
            )
        if list((manifest.get("output") or {}).get("tasks") or []) != list(TASKS):
            raise ModelIntegrityError("task_mismatch", f"manifest tasks must be {list(TASKS)}", field="output")
        try:
            self.features = FeatureConfig.from_dict(manifest["feature_config"])
        except (KeyError, TypeError, RankingInputError) as exc:
            raise ModelIntegrityError(
                "bad_manifest", f"feature_config unreadable: {exc}", field="feature_config"
            ) from exc
        declared = _manifest_signature(manifest)
        expected = input_specs(self.features)
        batch_dims = {shape[0] for shape, _ in declared.values()} if declared else {-1}
        if (
            set(declared) != set(expected)
            or len(batch_dims) != 1
            or any(
                declared[name][0][1:] != shape or declared[name][1] != dtype
                for name, (shape, dtype) in expected.items()
            )
        ):
            raise ModelIntegrityError("signature_mismatch", "manifest signature does not match its feature config")
        self.batch: int | None = None if batch_dims == {-1} else batch_dims.pop()
        self.version = str(manifest.get("version"))
        self.kind = kind
        self.score_weights = dict(manifest.get("score_weights") or {})
        self._lock = threading.Lock()
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads)
            self._runner = interpreter.get_signature_runner(manifest.get("signature_key", SIGNATURE_KEY))
        except (ValueError, RuntimeError) as exc:
            raise ModelIntegrityError("unloadable_model", f"LiteRT cannot load the model: {exc}") from exc
        details = self._runner.get_input_details()
        for name, (shape, dtype) in declared.items():
            got = details.get(name)
            if (
                got is None
                or tuple(int(d) for d in got["shape_signature"]) != shape
                or np.dtype(got["dtype"]).name != dtype
            ):
                raise ModelIntegrityError(
                    "signature_mismatch", f"model input {name} differs from the manifest", field=name
                )

    def predict(self, impressions: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(n, 4) task probabilities for impression-like dicts."""
        return self._run(encode_batch(impressions, self.features))

    def _run(self, inputs: Mapping[str, np.ndarray], pad_to: int | None = None, tail_step: int | None = None
             ) -> np.ndarray:
        """``pad_to`` (dynamic-batch models): run in chunks of exactly that many rows, the last one
        zero-padded, so the input shape stays among a few sizes and LiteRT rarely re-allocates its
        tensors (the showcase builder's calls vary in size). ``tail_step``: the last chunk is padded
        only to the next multiple of it (a 256-row batch with 40 rows left runs 64, not 256). Rows are
        scored independently: a row's output does not depend on the chunk it runs in."""
        total = len(inputs["item_id"])
        if total == 0:
            return np.zeros((0, len(TASKS)), np.float32)
        fixed = self.batch or pad_to
        chunk = fixed or total
        out = []
        with self._lock:
            for start in range(0, total, chunk):
                part = {k: v[start : start + chunk] for k, v in inputs.items()}
                rows = len(part["item_id"])
                if fixed is not None and rows < fixed:
                    size = fixed if self.batch or not tail_step else min(fixed, -(-rows // tail_step) * tail_step)
                    if size > rows:
                        part = {
                            k: np.concatenate([v, np.zeros((size - rows, *v.shape[1:]), v.dtype)])
                            for k, v in part.items()
                        }
                out.append(np.array(self._runner(**part)[OUTPUT_NAME][:rows]))
        return np.concatenate(out)

    def score_encoded(self, inputs: Mapping[str, np.ndarray], pad_to: int = 256, tail_step: int = 32) -> np.ndarray:
        """(n,) final scores of rows already encoded (``features.encode_candidates`` or the builder's
        ``serving.PoolEncoder``), possibly of many requests at once: the showcase builder scores the
        candidates of a whole batch of users in a few ``pad_to``-row LiteRT calls."""
        predictions = self._run(inputs, pad_to=pad_to, tail_step=tail_step)
        return final_scores(predictions, self.score_weights) if self.score_weights else final_scores(predictions)

    def score(self, request: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]],
              pad_to: int | None = 32) -> np.ndarray:
        """(n,) final scores of the candidates, in their order (what ``rank`` sorts by); run in fixed
        chunks of ``pad_to`` rows (see ``_run``)."""
        if not candidates:
            return np.zeros(0, np.float64)
        predictions = self._run(encode_candidates(request, candidates, self.features), pad_to=pad_to)
        return final_scores(predictions, self.score_weights) if self.score_weights else final_scores(predictions)

    def rank(
        self, request: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]], top_k: int | None = None
    ) -> list[RankedCandidate]:
        """Candidates sorted by final score (best first), with per-task predictions."""
        if not candidates:
            return []
        predictions = self._run(encode_candidates(request, candidates, self.features))
        scores = final_scores(predictions, self.score_weights) if self.score_weights else final_scores(predictions)
        order = np.argsort(-scores, kind="stable")
        ranked = [
            RankedCandidate(
                item_id=str(candidates[i].get("item_id")),
                score=float(scores[i]),
                predictions={task: float(predictions[i, t]) for t, task in enumerate(TASKS)},
            )
            for i in order
        ]
        return ranked[:top_k] if top_k is not None else ranked

    def rank_offline(
        self,
        request: Mapping[str, Any],
        cache_pool: Sequence[Mapping[str, Any]],
        now: datetime,
        max_age: timedelta = CACHE_MAX_AGE,
    ) -> OfflineRanking:
        """Rank only the locally cached pool; entries cached longer than ``max_age`` are skipped.

        Each pool entry: item_id, cached_at (aware datetime), pxtr (as scored when cached),
        item_duration_ms; cached files are fully local, so cached_ratio defaults to 1.0.
        """
        fresh, expired = [], []
        for entry in cache_pool:
            cached_at = entry.get("cached_at")
            if not isinstance(cached_at, datetime) or cached_at.tzinfo is None:
                raise RankingInputError("bad_timestamp", "cache entries need an aware cached_at", field="cached_at")
            if now - cached_at > max_age:
                expired.append(str(entry.get("item_id")))
            else:
                fresh.append({"cached_ratio": 1.0, **entry})
        return OfflineRanking(self.rank(request, fresh), expired)
