"""Tiny configs and labelled data for the ranking TF tests (kept small so the suite is quick)."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from processors.ranking.features import FeatureConfig  # noqa: E402
from processors.ranking.labels import LabelJoiner  # noqa: E402
from processors.ranking.model import ModelConfig  # noqa: E402
from demo.ranking_synthetic import SyntheticConfig, generate  # noqa: E402

TINY_FEATURES = FeatureConfig(item_buckets=257, user_buckets=129, recent_len=8)
TINY_MODEL = ModelConfig(
    item_dim=8,
    user_dim=4,
    categorical_dim=2,
    numeric_dim=2,
    attention_heads=2,
    attention_head_dim=4,
    experts=2,
    expert_units=8,
    tower_units=4,
)


@lru_cache(maxsize=4)
def labelled_samples(requests: int = 400, seed: int = 3) -> tuple[dict, ...]:
    """Impressions from the synthetic stream, labelled by the real LabelJoiner, in time order."""
    stream = generate(SyntheticConfig(seed=seed, users=60, items=120, clusters=4, requests=requests))
    joiner = LabelJoiner()
    out = []
    last = None
    for kind, event in stream.events():
        (joiner.add_impression if kind == "impression" else joiner.add_playback)(event)
        last = event["event_time"]
    out = joiner.expire(last + timedelta(days=1))
    return tuple(sorted((s.impression for s in out), key=lambda i: (i["event_time"], i["impression_id"])))


def request_and_candidates(samples, n: int = 24):
    """A scoring request built from the first sample's viewer and ``n`` candidate items."""
    first = samples[0]
    request = {k: first[k] for k in ("user_id", "device_id", "device_type", "surface", "recent_watched")}
    request["context"] = {k: v for k, v in first["context"].items() if k != "item_duration_ms"}
    candidates, seen = [], set()
    for s in samples:
        if s["item_id"] not in seen:
            seen.add(s["item_id"])
            candidates.append(
                {"item_id": s["item_id"], "pxtr": s["pxtr"], "item_duration_ms": s["context"]["item_duration_ms"]}
            )
        if len(candidates) == n:
            break
    return request, candidates


@lru_cache(maxsize=1)
def trained_tiny_trainer():
    """One tiny trainer trained on 1,600 synthetic samples, shared (read-only) by the export/device tests."""
    from processors.ranking.trainer import OnlineTrainer, TrainerConfig

    trainer = OnlineTrainer(TINY_FEATURES, TINY_MODEL, TrainerConfig(holdout_every=10))
    samples = list(labelled_samples())
    for i in range(0, 1_600, 64):
        trainer.train_step(samples[i : i + 64])
    return trainer
