"""Online trainer: holdout split, counters, thread safety, bad input, sample buffer."""

from __future__ import annotations

import threading

import pytest
from support.ranking import TINY_FEATURES, TINY_MODEL, labelled_samples

from processors.ranking.errors import RankingInputError
from processors.ranking.trainer import OnlineTrainer, SampleBuffer, TrainerConfig, is_holdout


def test_holdout_split_is_stable_and_about_one_in_ten():
    samples = [{"impression_id": f"imp-{i}"} for i in range(5_000)]
    held = [s for s in samples if is_holdout(s, 10)]
    assert 400 < len(held) < 600
    assert held == [s for s in samples if is_holdout(s, 10)]  # same ids -> same split (replays, restarts)


def test_train_step_trains_on_non_holdout_and_keeps_the_rest_for_evaluation():
    trainer = OnlineTrainer(TINY_FEATURES, TINY_MODEL, TrainerConfig(holdout_every=4))
    samples = list(labelled_samples()[:256])
    result = trainer.train_step(samples)
    expected_holdout = sum(is_holdout(s, 4) for s in samples)
    assert result["held_out"] == expected_holdout and result["trained"] == 256 - expected_holdout
    assert set(result) >= {"evr", "lvr", "svr", "fpr", "loss", "step"}
    assert result["loss"] == pytest.approx(sum(result[t] for t in ("evr", "lvr", "svr", "fpr")), rel=1e-5)
    counters = trainer.counters()
    assert counters == {
        "samples_seen": 256,
        "samples_trained": 256 - expected_holdout,
        "steps": 1,
        "holdout": expected_holdout,
    }
    held_ids = {s["impression_id"] for s in trainer.holdout_samples()}
    assert held_ids == {s["impression_id"] for s in samples if is_holdout(s, 4)}
    aucs = trainer.evaluate()
    assert set(aucs) == {"evr", "lvr", "svr", "fpr"}
    assert all(v is None or 0.0 <= v <= 1.0 for v in aucs.values())


def test_holdout_is_bounded_and_evaluate_handles_one_class():
    trainer = OnlineTrainer(TINY_FEATURES, TINY_MODEL, TrainerConfig(holdout_every=1, holdout_capacity=10))
    samples = list(labelled_samples()[:40])
    result = trainer.train_step(samples)
    assert result["trained"] == 0 and "loss" not in result and result["step"] == 0
    assert len(trainer.holdout_samples()) == 10
    negatives = [{**s, "labels": {"evr": False, "lvr": False, "svr": False, "fpr": False}} for s in samples]
    assert trainer.evaluate(negatives) == {"evr": None, "lvr": None, "svr": None, "fpr": None}
    assert trainer.evaluate([]) == {"evr": None, "lvr": None, "svr": None, "fpr": None}


def test_malformed_sample_is_rejected_before_the_model_is_touched():
    trainer = OnlineTrainer(TINY_FEATURES, TINY_MODEL, TrainerConfig(holdout_every=10**9))
    samples = list(labelled_samples()[:8]) + [{"impression_id": "bad", "item_id": "x", "labels": None}]
    with pytest.raises(RankingInputError) as err:
        trainer.train_step(samples)
    assert err.value.code == "missing_labels"
    assert trainer.counters() == {"samples_seen": 0, "samples_trained": 0, "steps": 0, "holdout": 0}


def test_concurrent_train_steps_and_evaluation_keep_exact_counters():
    trainer = OnlineTrainer(TINY_FEATURES, TINY_MODEL, TrainerConfig(holdout_every=10**9))
    samples = list(labelled_samples()[:320])
    batches = [samples[i : i + 32] for i in range(0, 320, 32)]
    errors: list[BaseException] = []

    def train(part):
        try:
            for batch in part:
                trainer.train_step(batch)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    def evaluate():
        try:
            for _ in range(5):
                trainer.evaluate(samples[:64])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [
        threading.Thread(target=train, args=(batches[:5],)),
        threading.Thread(target=train, args=(batches[5:],)),
        threading.Thread(target=evaluate),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert trainer.counters()["steps"] == 10 and trainer.counters()["samples_trained"] == 320


def test_sample_buffer_drains_in_order_and_drops_the_oldest_when_full():
    buffer = SampleBuffer(capacity=3)
    buffer.extend([{"n": i} for i in range(5)])
    assert len(buffer) == 3 and buffer.dropped == 2
    assert buffer.drain(2) == [{"n": 2}, {"n": 3}]
    assert buffer.drain(10) == [{"n": 4}] and buffer.drain(10) == []
