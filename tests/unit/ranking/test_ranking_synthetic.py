"""The synthetic stream: seeded, contract-shaped, and with signal beyond the server pxtr."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from support.ranking import labelled_samples

from processors.ranking.features import encode_labels
from processors.ranking.labels import PLAYBACK_EVENT_TYPES
from processors.ranking.metrics import pxtr_matrix, task_aucs
from demo.ranking_synthetic import SyntheticConfig, generate

IMPRESSION_KEYS = {
    "impression_id",
    "request_id",
    "user_id",
    "device_id",
    "device_type",
    "item_id",
    "position",
    "surface",
    "recent_watched",
    "pxtr",
    "context",
    "labels",
    "event_time",
}
PLAYBACK_KEYS = {
    "event_id",
    "session_id",
    "user_id",
    "device_id",
    "device_type",
    "os",
    "app_version",
    "item_id",
    "event_type",
    "position_ms",
    "duration_ms",
    "network_kbps",
    "buffered_ratio",
    "stall_ms",
    "bitrate_kbps",
    "event_time",
}


def small(seed=5):
    return generate(SyntheticConfig(seed=seed, users=50, items=80, clusters=4, requests=150))


def test_same_seed_same_stream_other_seed_other_stream():
    a, b, c = small(5), small(5), small(6)
    assert a.impressions == b.impressions and a.playbacks == b.playbacks
    assert a.impressions != c.impressions


def test_events_follow_the_contracts_and_time_order():
    stream = small()
    assert all(set(e) == IMPRESSION_KEYS for e in stream.impressions)
    assert all(set(e) == PLAYBACK_KEYS for e in stream.playbacks)
    assert {e["event_type"] for e in stream.playbacks} <= PLAYBACK_EVENT_TYPES
    assert {"START", "STALL"} <= {e["event_type"] for e in stream.playbacks}
    times = [t for _, e in stream.events() for t in [e["event_time"]]]
    assert times == sorted(times) and all(isinstance(t, datetime) and t.tzinfo for t in times)
    assert any(e["user_id"] is None for e in stream.impressions)  # guests exist
    assert all(set(e["pxtr"]) == {"evr", "lvr", "svr", "fpr"} for e in stream.impressions)


def test_labels_have_both_classes_and_pxtr_is_informative_but_imperfect():
    samples = list(labelled_samples())
    labels = encode_labels(samples)
    rates = labels.mean(axis=0)
    assert np.all(rates > 0.005) and np.all(rates < 0.5)
    aucs = task_aucs(labels, pxtr_matrix(samples))
    assert all(0.5 < auc < 0.95 for auc in aucs.values()), aucs


def test_slow_networks_cause_more_short_views_which_pxtr_cannot_see():
    samples = list(labelled_samples(requests=1_500, seed=8))
    labels = encode_labels(samples)
    kbps = np.array([s["context"]["network_kbps"] for s in samples])
    slow = kbps < np.quantile(kbps, 0.25)
    fast = kbps > np.quantile(kbps, 0.75)
    assert labels[slow, 2].mean() > 1.5 * labels[fast, 2].mean()
    pxtr_svr = pxtr_matrix(samples)[:, 2]
    assert abs(pxtr_svr[slow].mean() - pxtr_svr[fast].mean()) < 0.2 * pxtr_svr.mean()
