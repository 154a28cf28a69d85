"""When to checkpoint + export: every ``every`` of event time (GRF: 4 h) or every N samples."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class CheckpointPolicy:
    every: timedelta | None = timedelta(hours=4)
    every_samples: int | None = None

    def __post_init__(self) -> None:
        if self.every is None and self.every_samples is None:
            raise ValueError("a checkpoint policy needs a time interval, a sample count or both")
        if self.every is not None and self.every <= timedelta(0):
            raise ValueError("every must be positive")
        if self.every_samples is not None and self.every_samples <= 0:
            raise ValueError("every_samples must be positive")


@dataclass(frozen=True)
class CheckpointMark:
    """Event time and trained-sample count at the last checkpoint (or at start-up)."""

    event_time: datetime
    samples: int


@dataclass(frozen=True)
class Due:
    due: bool
    reason: str


def checkpoint_due(policy: CheckpointPolicy, last: CheckpointMark, event_time: datetime, samples: int) -> Due:
    """Is a checkpoint due at stream event time ``event_time`` with ``samples`` trained?

    Event time, not wall time: a replay of a day of events produces the same six
    checkpoints as the live stream did. Time moving backwards (replay of older data)
    never makes a checkpoint due by time. Nothing new trained -> never due.
    """
    new_samples = samples - last.samples
    if new_samples <= 0:
        return Due(False, "no_new_samples")
    if policy.every_samples is not None and new_samples >= policy.every_samples:
        return Due(True, "samples")
    if policy.every is not None and event_time - last.event_time >= policy.every:
        return Due(True, "time")
    return Due(False, "not_yet")
