"""Server-side ranking of the showcase's ML candidates (pure: no I/O, no TensorFlow).

The showcase builder scores the candidates of "for you" and "watch also" with the same LiteRT
runtime and feature code the device uses (``device.DeviceRanker`` over ``features.encode_batch``):

* the candidates are each ML shelf's own pool, scored on demand (``processors.showcase.assemble.
  ModelScores``): the "for you" pool (the best ``candidates`` of the seeds' similar lists after the
  exclusions) and the first ``length x slack`` allowed titles of the "watch also" anchor's list;
* ``ranking_request`` / ``candidate_rows``: the request the model sees (the viewer, surface HOME, the
  recent watched list, the hour of the build's event time; network and device score are unknown
  server-side and stay missing, bucket 0) and one row per candidate (duration from the catalogue);
  ``pxtr`` is absent (zeros): there is no upstream server model, and the impressions the client
  reports from these pages carry the same zeros, so training sees what serving saw;
* ``PoolEncoder``: the same arrays as ``features.encode_candidates(request, candidate_rows(...))``,
  for many requests at once, with each title's features (item hash bucket, duration bucket) computed
  once per catalogue (the ``durations`` map) instead of once per candidate;
* ``assign_arm``: the stable split of viewers between the serving versions (the Production model
  and up to 5 playoff candidates): blake2b of salt|viewer, uniform over the arms in their order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from processors.ranking.errors import RankingInputError
from processors.ranking.features import (
    FeatureConfig,
    _duration_s,
    _hashed_list,
    bucketize,
    candidate_impressions,
    encode_one,
    input_specs,
    stable_bucket,
)
from processors.ranking.tasks import TASKS

MAX_ARMS = 6
ARM_SALT = "vitrina-playoff-v1"


def assign_arm(viewer: str, arms: Sequence[str], salt: str = ARM_SALT) -> str | None:
    """The version serving ``viewer``: the same for the same (viewer, arms), uniform over ``arms``."""
    if not arms:
        return None
    if len(arms) > MAX_ARMS:
        raise RankingInputError("too_many_arms", f"at most {MAX_ARMS} versions serve side by side", field="arms")
    digest = hashlib.blake2b(f"{salt}\x1f{viewer}".encode(), digest_size=8).digest()
    return arms[int.from_bytes(digest, "little") % len(arms)]


def ranking_request(user_id: str | None, device_type: str, recent: Sequence[str], now: datetime,
                    *, surface: str = "HOME", device_id: str | None = None) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "device_id": device_id,
        "device_type": device_type,
        "surface": surface,
        "recent_watched": list(recent),
        "context": {"hour_of_day": now.hour},
    }


def candidate_rows(items: Sequence[str], durations: Mapping[str, int]) -> list[dict[str, Any]]:
    return [{"item_id": item, "item_duration_ms": int(durations.get(item) or 0)} for item in items]


class PoolEncoder:
    """Model inputs of (request, candidate titles) pools, many requests at once, equal array for array
    to ``encode_candidates(request, candidate_rows(items, durations), config)`` per request, stacked.

    A title's own features (its hashed id, its duration bucket) are computed once per ``durations``
    map (the builder keeps one per catalogue index) and reused by every user and tick of that
    catalogue; the request's features (viewer, recent list, device, surface, hour) once per request."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._durations: Mapping[str, int] | None = None
        self._titles: dict[str, tuple[int, int]] = {}

    def _title(self, item: str, durations: Mapping[str, int]) -> tuple[int, int]:
        config = self.config
        if item is None or item == "":
            raise RankingInputError("missing_field", "item_id is required", field="item_id")
        found = (stable_bucket(config.hash_salt, "item", str(item), config.item_buckets),
                 bucketize(_duration_s(int(durations.get(item) or 0)), config.numeric_bounds[3]))
        self._titles[item] = found
        return found

    def encode(self, pools: Sequence[tuple[Mapping[str, Any], Sequence[str]]],
               durations: Mapping[str, int]) -> dict[str, np.ndarray]:
        config = self.config
        if durations is not self._durations:  # a new catalogue: titles' durations may have changed
            self._durations, self._titles = durations, {}
        titles, title = self._titles, self._title
        item_col: list[int] = []
        duration_col: list[int] = []
        counts: list[int] = []
        shared_rows: list[dict[str, Any]] = []
        upcoming_rows: list[list[int]] = []
        for request, items in pools:
            if not items:
                continue
            shared = encode_one(candidate_impressions(request, [{"item_id": items[0]}])[0], config)
            shared_rows.append(shared)
            counts.append(len(items))
            if config.upcoming_len:
                upcoming_rows.append(_hashed_list(request.get("upcoming"), "upcoming", config.upcoming_len, config))
            for item in items:
                found = titles.get(item)
                if found is None:
                    found = title(item, durations)
                item_col.append(found[0])
                duration_col.append(found[1])
        n = len(item_col)
        if not n:
            return {name: np.zeros((0, *shape), dtype=dtype) for name, (shape, dtype) in input_specs(config).items()}
        repeat = np.asarray(counts)

        def per_row(values: list, dtype: str) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=dtype), repeat, axis=0)

        numeric = per_row([row["numeric_buckets"] for row in shared_rows], "int32")  # the request's cached ratio
        numeric[:, 3] = duration_col
        out = {}
        if config.upcoming_len:
            out["upcoming_ids"] = per_row(upcoming_rows, "int32")
        return {
            **out,
            "item_id": np.asarray(item_col, dtype="int32"),
            "user_id": per_row([row["user_id"] for row in shared_rows], "int32"),
            "device_type": per_row([row["device_type"] for row in shared_rows], "int32"),
            "surface": per_row([row["surface"] for row in shared_rows], "int32"),
            "recent_ids": per_row([row["recent_ids"] for row in shared_rows], "int32"),
            "numeric_buckets": numeric,
            "pxtr": np.zeros((n, len(TASKS)), dtype="float32"),  # no server pxtr (module doc)
        }
