"""The one feature function shared by the trainer and the device runtime (no skew).

Input: an impression-like dict (the ranking-impression contract; only the keys below are
read). Output: fixed-shape numpy arrays named after the model inputs:

* ``item_id`` / ``user_id``: stable hash (blake2b, salted) into ``item_buckets`` /
  ``user_buckets``; bucket 0 is reserved for padding / missing, so new ids never need a
  vocabulary update. Guests (user_id None) hash as ``device:<device_id>``.
* ``recent_ids``: the recent watched list (newest first) hashed with the item hash,
  truncated / zero-padded to ``recent_len``.
* ``upcoming_ids`` (only when ``upcoming_len`` > 0; GRF's "upcoming list" context): the titles
  queued to be shown after the candidate (the impression's ``upcoming``, in order), hashed and
  padded like ``recent_ids``. 0 (the default) keeps the older input signature.
* ``device_type`` / ``surface``: index in the fixed contract enum (0 = unknown symbol).
* ``numeric_buckets``: network kbps, device score, cached ratio, item duration (s),
  hour of day, each bucketized by fixed boundaries (0 = missing).
* ``pxtr``: the server's evr/lvr/svr/fpr scores as float32 clipped to [0, 1] (0 if absent).

Plain Python + numpy only, so the device runtime (Python) imports this module verbatim;
the ``FeatureConfig`` travels in the model manifest so both sides bucketize alike.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np

from processors.ranking.errors import RankingInputError
from processors.ranking.tasks import TASKS

NUMERIC_FEATURES: tuple[str, ...] = ("network_kbps", "device_score", "cached_ratio", "item_duration_s", "hour_of_day")


@dataclass(frozen=True)
class FeatureConfig:
    item_buckets: int = 16_384
    user_buckets: int = 16_384
    recent_len: int = 20
    hash_salt: str = "vitrina-ranking-v1"
    device_types: tuple[str, ...] = ("TV", "MOBILE", "TABLET", "WEB", "STB")
    surfaces: tuple[str, ...] = ("HOME", "WATCH_ALSO", "AUTOPLAY", "FEED", "SEARCH")
    network_kbps_bounds: tuple[float, ...] = (300, 700, 1_500, 3_000, 6_000, 12_000, 25_000, 50_000)
    device_score_bounds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    cached_ratio_bounds: tuple[float, ...] = (0.01, 0.1, 0.25, 0.5, 0.75, 0.99)
    duration_s_bounds: tuple[float, ...] = (10, 20, 40, 60, 120, 300, 900, 1_800, 3_600, 5_400, 7_200)
    hour_bounds: tuple[float, ...] = tuple(range(1, 24))
    upcoming_len: int = 0

    def __post_init__(self) -> None:
        if self.item_buckets < 2 or self.user_buckets < 2 or self.recent_len < 1 or self.upcoming_len < 0:
            raise RankingInputError("bad_feature_config", "buckets must be >= 2 and recent_len >= 1")

    @property
    def numeric_bounds(self) -> tuple[tuple[float, ...], ...]:
        return (
            self.network_kbps_bounds,
            self.device_score_bounds,
            self.cached_ratio_bounds,
            self.duration_s_bounds,
            self.hour_bounds,
        )

    @property
    def numeric_vocab_sizes(self) -> tuple[int, ...]:
        """Bucket count per numeric feature: missing + len(bounds) + 1 intervals."""
        return tuple(len(bounds) + 2 for bounds in self.numeric_bounds)

    @property
    def categorical_vocab_sizes(self) -> dict[str, int]:
        return {"device_type": len(self.device_types) + 1, "surface": len(self.surfaces) + 1}

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise RankingInputError("bad_feature_config", f"unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def input_specs(config: FeatureConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-sample shape and dtype of every model input, in the canonical order."""
    specs = {
        "item_id": ((), "int32"),
        "user_id": ((), "int32"),
        "device_type": ((), "int32"),
        "surface": ((), "int32"),
        "recent_ids": ((config.recent_len,), "int32"),
        "numeric_buckets": ((len(NUMERIC_FEATURES),), "int32"),
        "pxtr": ((len(TASKS),), "float32"),
    }
    if config.upcoming_len:
        specs["upcoming_ids"] = ((config.upcoming_len,), "int32")
    return specs


def _hashed_list(value: Any, name: str, length: int, config: FeatureConfig) -> list[int]:
    items = value or ()
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise RankingInputError(f"bad_{name}", f"{name} must be a list of item ids", field=name)
    ids = [stable_bucket(config.hash_salt, "item", str(i), config.item_buckets) for i in items[:length]]
    return ids + [0] * (length - len(ids))


@lru_cache(maxsize=1 << 18)
def stable_bucket(salt: str, namespace: str, value: str, buckets: int) -> int:
    """1 + blake2b64(salt|namespace|value) mod (buckets - 1); identical on every platform."""
    digest = hashlib.blake2b(f"{salt}\x1f{namespace}\x1f{value}".encode(), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (buckets - 1)


def bucketize(value: Any, bounds: Sequence[float]) -> int:
    """0 for missing / non-numeric / NaN, else 1 + number of bounds <= value."""
    if value is None or isinstance(value, bool):
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    if math.isnan(number):
        return 0
    return 1 + bisect.bisect_right(bounds, number)


def _enum_index(value: Any, vocab: Sequence[str]) -> int:
    try:
        return 1 + vocab.index(value)
    except ValueError:
        return 0


def _user_token(impression: Mapping[str, Any]) -> str:
    user_id = impression.get("user_id")
    if user_id is not None and user_id != "":
        return f"user:{user_id}"
    return f"device:{impression.get('device_id') or ''}"


def _clip01(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(number):
        return 0.0
    return min(1.0, max(0.0, number))


def encode_one(impression: Mapping[str, Any], config: FeatureConfig) -> dict[str, Any]:
    """Features of one impression as plain Python values (see module docstring)."""
    if not isinstance(impression, Mapping):
        raise RankingInputError("bad_sample", f"expected a mapping, got {type(impression).__name__}")
    item_id = impression.get("item_id")
    if item_id is None or item_id == "":
        raise RankingInputError("missing_field", "item_id is required", field="item_id")
    salt = config.hash_salt
    recent = impression.get("recent_watched") or ()
    if isinstance(recent, (str, bytes)) or not isinstance(recent, Sequence):
        raise RankingInputError(
            "bad_recent_watched", "recent_watched must be a list of item ids", field="recent_watched"
        )
    recent_ids = [stable_bucket(salt, "item", str(i), config.item_buckets) for i in recent[: config.recent_len]]
    recent_ids += [0] * (config.recent_len - len(recent_ids))
    context = impression.get("context") or {}
    if not isinstance(context, Mapping):
        raise RankingInputError("bad_context", "context must be a mapping", field="context")
    duration_ms = context.get("item_duration_ms")
    duration_s = duration_ms / 1000.0 if isinstance(duration_ms, (int, float)) and duration_ms > 0 else None
    numeric_values = (
        context.get("network_kbps"),
        context.get("device_score"),
        context.get("cached_ratio"),
        duration_s,
        context.get("hour_of_day"),
    )
    pxtr = impression.get("pxtr") or {}
    if not isinstance(pxtr, Mapping):
        raise RankingInputError("bad_pxtr", "pxtr must be a mapping of task -> float", field="pxtr")
    extra = {}
    if config.upcoming_len:
        extra["upcoming_ids"] = _hashed_list(impression.get("upcoming"), "upcoming", config.upcoming_len, config)
    return {
        **extra,
        "item_id": stable_bucket(salt, "item", str(item_id), config.item_buckets),
        "user_id": stable_bucket(salt, "user", _user_token(impression), config.user_buckets),
        "device_type": _enum_index(impression.get("device_type"), config.device_types),
        "surface": _enum_index(impression.get("surface"), config.surfaces),
        "recent_ids": recent_ids,
        "numeric_buckets": [bucketize(v, b) for v, b in zip(numeric_values, config.numeric_bounds, strict=False)],
        "pxtr": [_clip01(pxtr.get(task)) for task in TASKS],
    }


def encode_batch(impressions: Sequence[Mapping[str, Any]], config: FeatureConfig) -> dict[str, np.ndarray]:
    """Stacked model inputs for a batch of impressions (batch may be empty)."""
    rows = [encode_one(imp, config) for imp in impressions]
    specs = input_specs(config)
    batch: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in specs.items():
        if rows:
            batch[name] = np.asarray([row[name] for row in rows], dtype=dtype)
        else:
            batch[name] = np.zeros((0, *shape), dtype=dtype)
    return batch


def encode_labels(impressions: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(batch, 4) float32 labels in TASKS order from each impression's ``labels``."""
    out = np.zeros((len(impressions), len(TASKS)), dtype=np.float32)
    for row, imp in enumerate(impressions):
        labels = imp.get("labels")
        if not isinstance(labels, Mapping):
            raise RankingInputError("missing_labels", f"sample {row} has no labels", field="labels")
        for col, task in enumerate(TASKS):
            value = labels.get(task)
            if not isinstance(value, (bool, int)):
                raise RankingInputError("missing_labels", f"sample {row} lacks label {task}", field=f"labels.{task}")
            out[row, col] = float(bool(value))
    return out


def candidate_impressions(request: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Impression-like dicts for scoring: the request's viewer/context + each candidate.

    ``request``: user_id, device_id, device_type, surface, recent_watched, context
    (network_kbps, device_score, cached_ratio, hour_of_day). Each candidate: item_id,
    pxtr, item_duration_ms (and optionally its own cached_ratio, e.g. for cached files).
    """
    base_context = dict(request.get("context") or {})
    out = []
    for cand in candidates:
        context = dict(base_context)
        for key in ("item_duration_ms", "cached_ratio"):
            if cand.get(key) is not None:
                context[key] = cand[key]
        out.append(
            {
                "user_id": request.get("user_id"),
                "device_id": request.get("device_id"),
                "device_type": request.get("device_type"),
                "surface": request.get("surface"),
                "recent_watched": request.get("recent_watched") or [],
                "upcoming": cand.get("upcoming") if cand.get("upcoming") is not None else request.get("upcoming") or [],
                "item_id": cand.get("item_id"),
                "pxtr": cand.get("pxtr") or {},
                "context": context,
            }
        )
    return out


def _duration_s(duration_ms: Any) -> float | None:
    return duration_ms / 1000.0 if isinstance(duration_ms, (int, float)) and duration_ms > 0 else None


def encode_candidates(
    request: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]], config: FeatureConfig
) -> dict[str, np.ndarray]:
    """``encode_batch(candidate_impressions(request, candidates), config)``, equal array for array, with
    the request's features (viewer, recent list, device, surface, context) encoded once instead of
    once per candidate: the showcase builder scores ~100-170 candidates per user."""
    if not candidates:
        return encode_batch([], config)
    shared = encode_one(candidate_impressions(request, candidates[:1])[0], config)  # validates the request
    base_context = dict(request.get("context") or {})
    bounds = config.numeric_bounds
    n = len(candidates)
    salt, item_buckets = config.hash_salt, config.item_buckets
    base_cached, base_duration = base_context.get("cached_ratio"), base_context.get("item_duration_ms")
    item_col, cached_col, duration_col, pxtr_rows = [], [], [], []
    zero = [0.0] * len(TASKS)
    for cand in candidates:
        item_id = cand.get("item_id")
        if item_id is None or item_id == "":
            raise RankingInputError("missing_field", "item_id is required", field="item_id")
        item_col.append(stable_bucket(salt, "item", str(item_id), item_buckets))
        cached = cand.get("cached_ratio")
        duration = cand.get("item_duration_ms")
        cached_col.append(bucketize(cached if cached is not None else base_cached, bounds[2]))
        duration_col.append(bucketize(_duration_s(duration if duration is not None else base_duration), bounds[3]))
        scores = cand.get("pxtr") or {}
        if not isinstance(scores, Mapping):
            raise RankingInputError("bad_pxtr", "pxtr must be a mapping of task -> float", field="pxtr")
        pxtr_rows.append([_clip01(scores.get(task)) for task in TASKS] if scores else zero)
    numeric = np.tile(np.asarray(shared["numeric_buckets"], dtype="int32"), (n, 1))
    numeric[:, 2] = cached_col
    numeric[:, 3] = duration_col
    items = np.asarray(item_col, dtype="int32")
    pxtr = np.asarray(pxtr_rows, dtype="float32").reshape(n, len(TASKS))
    out = {}
    if config.upcoming_len:
        length = config.upcoming_len
        base = _hashed_list(request.get("upcoming"), "upcoming", length, config)
        out["upcoming_ids"] = np.asarray(
            [base if c.get("upcoming") is None else _hashed_list(c.get("upcoming"), "upcoming", length, config)
             for c in candidates], dtype="int32").reshape(n, length)
    return {
        **out,
        "item_id": items,
        "user_id": np.full(n, shared["user_id"], dtype="int32"),
        "device_type": np.full(n, shared["device_type"], dtype="int32"),
        "surface": np.full(n, shared["surface"], dtype="int32"),
        "recent_ids": np.tile(np.asarray(shared["recent_ids"], dtype="int32"), (n, 1)),
        "numeric_buckets": numeric,
        "pxtr": pxtr,
    }
