"""Play counting per title, idempotent under redelivery.

The state of a title remembers the last offset it applied per source partition,
so an event replayed after a crash (at-least-once delivery) is not counted twice.
"""
from __future__ import annotations

from typing import Any

PlayState = dict[str, Any]  # {"plays": int, "events": int, "updated_ms": int, "applied": {partition: offset}}


def empty_state() -> PlayState:
    return {"plays": 0, "events": 0, "updated_ms": 0, "applied": {}}


def apply_playback(state: PlayState | None, event: dict, partition: int, offset: int) -> tuple[PlayState, bool]:
    """Count one playback event; returns (state, changed). Already-applied offsets change nothing."""
    state = dict(state) if state else empty_state()
    applied = dict(state.get("applied", {}))
    part = str(partition)
    if offset <= applied.get(part, -1):
        return state, False
    applied[part] = offset
    state["applied"] = applied
    state["events"] += 1
    if event["event_type"] == "START":
        state["plays"] += 1
    event_ms = int(event["event_time"].timestamp() * 1000)
    state["updated_ms"] = max(state["updated_ms"], event_ms)
    return state, True
