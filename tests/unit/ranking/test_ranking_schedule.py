"""Checkpoint schedule: every 4 h of event time or every N samples (table-driven)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from processors.ranking.schedule import CheckpointMark, CheckpointPolicy, checkpoint_due

T = datetime(2024, 3, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("policy", "elapsed", "samples", "due", "reason"),
    [
        (CheckpointPolicy(), 3.99 * H, 10_000, False, "not_yet"),
        (CheckpointPolicy(), 4 * H, 10_000, True, "time"),
        (CheckpointPolicy(), 5 * H, 1_000, False, "no_new_samples"),  # nothing trained since
        (CheckpointPolicy(), -2 * H, 10_000, False, "not_yet"),  # replaying older events
        (CheckpointPolicy(every_samples=5_000), 1 * H, 6_000, True, "samples"),
        (CheckpointPolicy(every_samples=5_000), 1 * H, 5_999, False, "not_yet"),
        (CheckpointPolicy(every=None, every_samples=100), 100 * H, 1_050, False, "not_yet"),  # time ignored
        (CheckpointPolicy(every=timedelta(minutes=30)), 31 * timedelta(minutes=1), 1_001, True, "time"),
    ],
)
def test_checkpoint_due(policy, elapsed, samples, due, reason):
    result = checkpoint_due(policy, CheckpointMark(T, 1_000), T + elapsed, samples)
    assert (result.due, result.reason) == (due, reason)


@pytest.mark.parametrize("kwargs", [{"every": None}, {"every": timedelta(0)}, {"every_samples": 0}])
def test_bad_policies_are_rejected(kwargs):
    with pytest.raises(ValueError):
        CheckpointPolicy(**kwargs)
