"""Counting exactly once per (source partition, offset), under redelivery AND out-of-order delivery.

A record is identified by the partition and offset it had in its source topic (kept across
repartitions). Delivery is at least once, and not always in order: after a rebalance the new owner of
a partition starts again from the last commit while the old owner may still finish the batch it had
in flight, so a repartition topic can hold a later stretch of a partition before an earlier one. A
single high-water mark ("skip everything at or below the highest offset applied") drops those
earlier records; this happened in the 3-worker kill test (plays 1247 of 1248).

So the marks of one source partition are ``{"f": floor, "s": [offsets above the floor, ascending]}``:

* an offset is applied iff it is at or below the floor, or in ``s``;
* ``contiguous=True`` (the caller sees every offset of the partition: impressions, read straight from
  their topic) moves the floor up over consecutive offsets, so ``s`` only holds offsets that arrived
  ahead of a gap and is usually empty;
* ``contiguous=False`` (the caller sees a sparse subset: the plays of one title) keeps ``s``;
* bounded: the floor is raised to ``highest - window`` and ``s`` never holds more than ``max_seen``
  offsets (the smallest are folded into the floor). A record that arrives later than that (more than
  ``window`` offsets, or ``max_seen`` counted records, behind) is taken as already applied: exactness
  holds for reorderings within the bounds, which are far above what a rebalance produces (a batch in
  flight: at most 2000 records, streams/runtime/inbound.py).

The old format (one int per partition: the highest offset applied) reads as a floor with no set.
sinks/showcase_views.py runs the contiguous variant in a Redis script (same rules, same bounds).
"""
from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Any, Mapping

PlayState = dict[str, Any]  # {"plays": int, "events": int, "updated_ms": int, "applied": {partition: marks}}
Marks = dict[str, Any]      # {"f": int, "s": [int, ...]}


@dataclass(frozen=True)
class OffsetBounds:
    window: int = 100_000   # offsets of one source partition below the highest applied one still told apart
    max_seen: int = 256     # offsets remembered above the floor, at most


PLAY_BOUNDS = OffsetBounds(window=100_000, max_seen=256)          # per (title, source partition)
IMPRESSION_BOUNDS = OffsetBounds(window=100_000, max_seen=20_000)  # per source partition (contiguous)


def parse_marks(entry: Mapping[str, Any] | int | None) -> tuple[int, list[int]]:
    """(floor, ascending offsets above it) from a stored entry (None: nothing applied yet). The list is
    the stored one when it already holds the invariant (``mark_applied`` writes it so): this runs for
    every counted event, and sorting up to ``max_seen`` offsets each time was a tenth of a worker's time."""
    if entry is None:
        return -1, []
    if isinstance(entry, int):
        return entry, []
    floor = int(entry.get("f", -1))
    seen = entry.get("s") or []
    if seen and seen[0] <= floor:  # not written by mark_applied (which keeps it ascending, above the floor)
        seen = sorted({int(x) for x in seen if int(x) > floor})
    return floor, seen


def is_applied(entry: Mapping[str, Any] | int | None, offset: int) -> bool:
    floor, seen = parse_marks(entry)
    if offset <= floor:
        return True
    at = bisect_left(seen, offset)
    return at < len(seen) and seen[at] == offset


def _raise_floor(floor: int, seen: list[int], to: int, contiguous: bool) -> int:
    """Floor to ``max(floor, to)``: offsets at/below it leave ``seen``; then absorb consecutive ones."""
    if to > floor:
        floor = to
        del seen[:bisect_left(seen, floor + 1)]
    if contiguous:
        while seen and seen[0] == floor + 1:
            floor = seen.pop(0)
    return floor


def mark_applied(entry: Mapping[str, Any] | int | None, offset: int, bounds: OffsetBounds = PLAY_BOUNDS,
                 contiguous: bool = False) -> Marks:
    """The marks with ``offset`` applied (the input is not modified)."""
    floor, seen = parse_marks(entry)
    seen = list(seen)  # a copy: the stored list may be the one parse_marks returned
    if not is_applied({"f": floor, "s": seen}, offset):
        if contiguous and offset == floor + 1:
            floor = _raise_floor(floor, seen, offset, contiguous)
        else:
            insort(seen, offset)
            floor = _raise_floor(floor, seen, seen[-1] - bounds.window, contiguous)
            extra = len(seen) - bounds.max_seen
            if extra > 0:
                floor = _raise_floor(floor, seen, seen[extra - 1], contiguous)
    return {"f": floor, "s": seen}


def empty_state() -> PlayState:
    return {"plays": 0, "events": 0, "updated_ms": 0, "applied": {}}


def apply_playback(state: PlayState | None, event: dict, partition: int, offset: int,
                   bounds: OffsetBounds = PLAY_BOUNDS) -> tuple[PlayState, bool]:
    """Count one playback event; returns (state, changed). An applied (partition, offset) changes nothing,
    in whatever order the events come."""
    state = dict(state) if state else empty_state()
    applied = dict(state.get("applied", {}))
    part = str(partition)
    if is_applied(applied.get(part), offset):
        return state, False
    applied[part] = mark_applied(applied.get(part), offset, bounds)
    state["applied"] = applied
    state["events"] += 1
    if event["event_type"] == "START":
        state["plays"] += 1
    event_ms = int(event["event_time"].timestamp() * 1000)
    state["updated_ms"] = max(state["updated_ms"], event_ms)
    return state, True
