"""Faust commits past a compaction gap that follows offset 0.

Compaction leaves gaps in a partition's offsets. Faust (faust-streaming 0.15) commits the highest
offset below which every offset was acked, and learns about gaps while reading: a record whose offset
is more than one past the last read one adds the offsets in between as a "gap" (acked by definition).
Its check is ``if gap > 1 and r_offset:``, so when the last read offset is 0 the gap is never
recorded: after reading offset 0 and then, say, 11 (1..10 compacted away), the commit stays at 1 for
good. A live worker then reports lag forever and re-reads the partition at every restart, and
``vitrina rebuild`` / ``vitrina replay`` (which wait for the replay group's commits to reach the ends)
never finish. It happens as soon as the first record of a partition is the only version of its key
while the next ones were superseded, e.g. a catalogue where the first title of a partition was never
edited and the next ones were (tests/integration/test_compaction.py).

``activate()`` gives every Faust consumer a read-offset map that stores offset 0 as a truthy 0, so
Faust's own gap bookkeeping covers offset 0 like any other offset. Nothing else changes (equality and
arithmetic are those of 0).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

_PATCHED = "_vitrina_read_offset_patch"


class ReadOffset0(int):
    """Offset 0 that is truthy (only ``bool`` differs from 0)."""

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "0"


class ReadOffsets(defaultdict):
    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, ReadOffset0(0) if type(value) is int and value == 0 else value)


def activate() -> None:
    """Patch Faust's consumer once per process (idempotent)."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer, _PATCHED, False):
        return
    original = Consumer.__init__

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: N807 - wraps Faust's __init__
        original(self, *args, **kwargs)
        self._read_offset = ReadOffsets(lambda: None, self._read_offset)

    Consumer.__init__ = __init__  # type: ignore[method-assign]
    setattr(Consumer, _PATCHED, True)
