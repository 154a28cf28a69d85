"""Event builders for the coview tests (decoded-Avro-shaped dicts)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

T0 = datetime(2024, 5, 1, 20, 0, tzinfo=timezone.utc)
T0_MS = round(T0.timestamp() * 1000)
S = 1000  # ms per second
MIN = 60 * S


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def playback(item: str, t: float, pos: float, kind: str = "HEARTBEAT", duration: float = 7200,
             user: str | None = "u1", device: str = "dev1", session: str = "c1", event_id: str | None = None) -> dict:
    """A playback event; t, pos and duration in seconds."""
    return {
        "event_id": event_id or f"{item}-{kind}-{t}-{pos}",
        "session_id": session, "user_id": user, "device_id": device, "device_type": "TV",
        "os": "tizen 7", "app_version": "3.1.0", "item_id": item, "event_type": kind,
        "position_ms": round(pos * S), "duration_ms": round(duration * S),
        "network_kbps": 20000, "buffered_ratio": 0.5, "stall_ms": 0, "bitrate_kbps": 6000,
        "event_time": at(t),
    }


def session_event(kind: str, t: float, user: str | None = "u1", device: str = "dev1", session: str = "c1",
                  reason: str | None = "EXPLICIT") -> dict:
    return {"session_id": session, "user_id": user, "device_id": device, "device_type": "TV",
            "kind": kind, "end_reason": reason if kind == "END" else None, "event_time": at(t)}


def watch(item: str, t: float, seconds: float = 150, duration: float = 7200, **kw) -> list[dict]:
    """START at t and a HEARTBEAT `seconds` later: a view by the default rule when seconds >= 120."""
    return [playback(item, t, 0, "START", duration, **kw), playback(item, t + seconds, seconds, "HEARTBEAT", duration, **kw)]


def reference_counts(events: list[dict]) -> dict[str, float]:
    """Per-title co-view counts (value at time 0) of the pure core over ``events`` in order: what the
    engine must end with, nothing lost and nothing applied twice."""
    from processors.coview.memory import CoviewIndex, SessionStore
    from processors.coview.sessionize import ViewCompleted
    from streams.agents.coview import COVIEW_CONFIG, SESSION_CONFIG

    sessions, index = SessionStore(SESSION_CONFIG), CoviewIndex(COVIEW_CONFIG)
    for event in events:
        for record in sessions.feed(event):
            if type(record) is ViewCompleted:
                index.add_view(record)
    return {title: state["n"] * 2.0 ** ((state["L"] - 0) / COVIEW_CONFIG.half_life_ms)
            for title, state in index.titles.items() if state["n"] > 0}


def stored_counts(client, prefix: str) -> dict[str, float]:
    """The engine's per-title co-view counts in Redis (``<prefix>coview-counts``), as values at time 0."""
    from streams.agents.coview import COVIEW_CONFIG

    raw = client.hgetall(f"{prefix}coview-counts")
    counts = {}
    for title, value in raw.items():
        n, landmark = value.split("|")
        counts[title] = float(n) * 2.0 ** (int(landmark) / COVIEW_CONFIG.half_life_ms)  # value at time 0
    return {title: n for title, n in counts.items() if n > 0}
