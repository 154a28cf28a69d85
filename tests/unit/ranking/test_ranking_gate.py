"""Optional GRF gate: choppy-play samples from playback events, training, TFLite parity."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import support.ranking as _ranking_helpers  # noqa: F401 - quiets TF logging before TF is imported
import numpy as np
import pytest

from processors.ranking.errors import RankingInputError
from processors.ranking.export import run_tflite
from processors.ranking.gate import (
    GATE_OUTPUT,
    GateConfig,
    GateSampleBuilder,
    GateTrainer,
    encode_gate_batch,
    export_gate_tflite,
    gate_metrics,
    recall_at_precision,
    replace_choppy,
)
from demo.ranking_synthetic import SyntheticConfig, generate

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


def ev(kind, t, session="s1", item="i1", user="u1", stall=0, kbps=900, buffered=0.1):
    return {
        "event_id": f"{session}{kind}{t}",
        "session_id": session,
        "user_id": user,
        "device_id": "d1",
        "device_type": "MOBILE",
        "os": "android",
        "app_version": "1",
        "item_id": item,
        "event_type": kind,
        "position_ms": 0,
        "duration_ms": 120_000,
        "network_kbps": kbps,
        "buffered_ratio": buffered,
        "stall_ms": stall,
        "bitrate_kbps": 2_000,
        "event_time": T0 + timedelta(seconds=t),
    }


def test_samples_use_start_features_and_history_before_the_play():
    builder = GateSampleBuilder(device_scores={"d1": 0.3})
    assert builder.add_playback(ev("START", 0)) is None
    assert builder.add_playback(ev("STALL", 2, stall=1500)) is None
    first = builder.add_playback(ev("STOP", 30))
    assert first["label"] == 1 and first["choppy_history"] is None
    assert first["size_mb"] == pytest.approx(2_000 * 120_000 / 8_000_000) and first["device_score"] == 0.3
    builder.add_playback(ev("START", 100, session="s2", kbps=20_000))
    second = builder.add_playback(ev("COMPLETE", 220, session="s2"))
    assert second["label"] == 0 and second["choppy_history"] == 1.0 and second["network_kbps"] == 20_000
    builder.add_playback(ev("START", 300, session="s3"))
    third = builder.add_playback(ev("STOP", 310, session="s3"))
    assert third["choppy_history"] == 0.5
    assert builder.add_playback(ev("HEARTBEAT", 400, session="mid-play")) is None
    with pytest.raises(RankingInputError):
        builder.add_playback({**ev("START", 0), "event_type": "BOOM"})
    buckets = encode_gate_batch([first, second], GateConfig())
    assert buckets["gate_buckets"].shape == (2, 6) and buckets["device_type"].tolist() == [2, 2]


def test_recall_at_precision_and_threshold():
    labels = np.array([1, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert recall_at_precision(labels, scores, 0.7) == pytest.approx(1.0)  # top-4 precision 0.75
    assert recall_at_precision(labels, scores, 1.0) == pytest.approx(2 / 3)
    assert replace_choppy(0.75) and not replace_choppy(0.7499)
    assert gate_metrics(labels, scores)["flagged_share"] == pytest.approx(2 / 6)


def test_gate_learns_stalls_from_the_synthetic_stream_and_exports():
    stream = generate(SyntheticConfig(seed=11, users=200, items=100, clusters=4, requests=2_500))
    scores = {imp["device_id"]: imp["context"]["device_score"] for imp in stream.impressions}
    builder = GateSampleBuilder(device_scores=scores)
    samples = [s for e in stream.playbacks if (s := builder.add_playback(e)) is not None]
    cut = int(len(samples) * 0.75)
    train, test = samples[:cut], samples[cut:]
    trainer = GateTrainer(GateConfig(hidden_units=(16,)), learning_rate=1e-2)
    for _ in range(3):
        for i in range(0, len(train), 128):
            trainer.train_step(train[i : i + 128])
    labels = np.array([s["label"] for s in test])
    metrics = gate_metrics(labels, trainer.predict(test))
    assert metrics["auc"] > 0.75, metrics
    model_bytes, diff = export_gate_tflite(trainer, test[:200])
    assert diff <= 1e-4
    got = run_tflite(model_bytes, encode_gate_batch(test[:50], trainer.config), output=GATE_OUTPUT)[:, 0]
    np.testing.assert_allclose(got, trainer.predict(test[:50]), atol=1e-4)


def test_gate_step_state_is_plain_json_bounded_and_ignores_plays_joined_midway():
    """The engine store keeps gate_step's state as JSON: a restart between two events of a play (state
    serialised and read back) gives the same sample as an uninterrupted run."""
    import json

    from processors.ranking.gate_runtime import MAX_OPEN_PLAYS, gate_step

    t0 = datetime(2026, 11, 2, 20, 0, tzinfo=timezone.utc)

    def ev(kind, session="s1", item="i1", minute=0, **extra):
        return {"event_type": kind, "session_id": session, "item_id": item, "user_id": "u1", "device_id": "d1",
                "device_type": "TV", "duration_ms": 600_000, "bitrate_kbps": 3000, "network_kbps": 900,
                "buffered_ratio": 0.2, "stall_ms": 0, "event_time": t0 + timedelta(minutes=minute), **extra}

    state, sample, changed = gate_step(None, ev("HEARTBEAT"))
    assert sample is None and not changed and state == {"open": {}, "h": []}  # joined mid-play: ignored
    plays = [ev("START"), ev("STALL", minute=1, stall_ms=4000), ev("STOP", minute=2)]
    straight = None
    for event in plays:
        straight, sample, _ = gate_step(straight, event)
    restarted = None
    for event in plays:
        restarted, resumed, _ = gate_step(json.loads(json.dumps(restarted)) if restarted else None, event)
    assert sample == resumed and sample["label"] == 1 and sample["choppy_history"] is None
    assert straight == restarted == {"open": {}, "h": [1]}
    _, second, _ = gate_step(straight, ev("START", session="s2"))
    assert second is None
    state = straight
    for n in range(MAX_OPEN_PLAYS + 5):  # apps killed mid-play: open plays stay bounded
        state, _, _ = gate_step(state, ev("START", session=f"k{n}"))
    assert len(state["open"]) == MAX_OPEN_PLAYS
    state, done, _ = gate_step(state, ev("START", session="s3", minute=5))
    state, done, _ = gate_step(state, ev("COMPLETE", session="s3", minute=15))
    assert done["label"] == 0 and done["choppy_history"] == 1.0 and state["h"] == [1, 0]
    with pytest.raises(RankingInputError):
        gate_step(state, ev("REWIND"))
