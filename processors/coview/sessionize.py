"""Viewer sessions and the "viewed" rule, computed incrementally from playback events.

One ``SessionState`` per viewer key (a plain JSON-able dict, ``None`` when there is
no state); ``apply(state, event)`` returns the new state and the records it emits.
Pure and deterministic: only event time is used; the input state is never mutated.

Viewer key: ``u:<user_id>`` for logged-in users, ``d:<device_id>`` for guests,
``s:<session_id>`` for a guest event without a device id.

Session boundaries
    A session ends when the next event of the viewer comes more than
    ``inactivity_gap_ms`` after the latest event seen (default 30 min), when an
    explicit session END arrives for the last open client session of the viewer,
    or when ``close_idle(state, now_ms)`` finds the viewer idle for longer than
    the gap. Client session ids are tracked so that an END from one device does
    not cut the session another device of the same user is still playing in.

Watched time of a title in a session
    Per title the state keeps the earliest and latest (event time, position)
    anchors seen. An event later than the latest anchor credits
    ``min(position advance, elapsed event time * max_playback_rate)``: pauses and
    stalls credit nothing (the position does not move), a forward SEEK credits at
    most the elapsed time (the skipped part is not watched), a backward seek
    credits nothing and the replayed part is credited again as it plays. An
    out-of-order event earlier than the earliest anchor extends the interval
    backwards by the same rule; one that falls inside the already credited
    interval (and exact duplicates) credits nothing. START re-anchors (a new
    playback of the title), STOP/COMPLETE close the playback; watched time is
    summed over all playbacks of the title within the session.

"Viewed" rule (documented, configurable)
    watched >= ``short_view_ms`` (3 s: GRF's short-view definition, never a view)
    AND (watched >= ``min_watched_ms`` (120 s) OR watched >= ``min_fraction``
    (0.25) * duration). With duration unknown (0) only the absolute rule applies.
    A title counts once per session; ``ViewCompleted`` is emitted the moment the
    rule is met (``watched_ms`` is the watched time at that moment) so the
    co-view lists and autoplay react immediately.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, Mapping, NamedTuple, Union

__all__ = [
    "SessionConfig",
    "SessionState",
    "ViewCompleted",
    "SessionClosed",
    "Rejected",
    "Emitted",
    "sessionizer_key",
    "event_time_ms",
    "apply",
    "close_idle",
    "expired",
]

SessionState = dict[str, Any]
"""Plain-data per-viewer state (see ``apply``); ``None`` means "no state, delete the key".

Open session::

    {"sid": "u:42@1700000000000",   # our session id: viewer key @ first event ms
     "start": 1700000000000, "last": 1700000400000,   # event-time ms
     "n": 3,                          # views so far = position of the latest view
     "views": {"m1": 1, "m7": 2, "m3": 3},   # item -> position, in view order (bounded)
     "plays": {"m9": [t0, p0, t1, p1, watched_ms, duration_ms, open]},  # not yet viewed
     "clients": ["client-session-a"],  # client session ids seen and not ended
     "ended": ["client-session-z"]}    # recently ended client sessions (late events dropped)

After an explicit END the state is a tombstone ``{"sid": None, "last": ms, "ended": [...]}``
so that late events of the ended client session do not open a new session.
"""

_PLAYBACK_TYPES = frozenset(
    {"UNKNOWN", "START", "HEARTBEAT", "PAUSE", "RESUME", "SEEK", "STALL",
     "QUALITY_CHANGE", "CREDITS_START", "COMPLETE", "STOP"}
)
_SESSION_KINDS = frozenset({"START", "END"})
# Field indices of a play accumulator list.
_T0, _P0, _T1, _P1, _W, _D, _OPEN = range(7)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    inactivity_gap_ms: int = 30 * 60 * 1000
    min_fraction: float = 0.25
    min_watched_ms: int = 120_000
    short_view_ms: int = 3_000
    # Position may advance at most this fast relative to event time (2x playback
    # speed); any faster advance is a seek and is not credited.
    max_playback_rate: float = 2.0
    # Bounds that keep one viewer's state small.
    max_open_plays: int = 8
    max_session_views: int = 500
    max_clients: int = 8
    # How many earlier views of the session ride on ViewCompleted.previous; the
    # co-occurrence window must not exceed it.
    recent_views: int = 20
    # A viewer's state is forgotten once the event time of its partition (the largest playback event
    # time read from it so far) is this far past the viewer's latest event AND the partition has moved
    # on by this many records since (``expired``).
    expire_after_ms: int = 2 * 30 * 60 * 1000
    expire_after_records: int = 100_000


class ViewCompleted(NamedTuple):
    viewer: str
    session_id: str
    item_id: str
    position_in_session: int  # 1-based
    watched_ms: int
    duration_ms: int
    at_ms: int
    previous: tuple[str, ...]  # earlier views of this session, newest first


class SessionClosed(NamedTuple):
    viewer: str
    session_id: str
    started_ms: int
    ended_ms: int
    views: int
    reason: str  # "gap" | "end" | "idle"


class Rejected(NamedTuple):
    """An event that was not used. ``code`` is machine-readable."""

    code: str  # invalid_event | missing_field | bad_time | bad_value | unknown_kind | late_event | ended_session
    detail: str
    event_id: str | None


Emitted = Union[ViewCompleted, SessionClosed, Rejected]


def sessionizer_key(event: Mapping[str, Any]) -> str | None:
    """The sessionizer's state key for an event's viewer: ``u:<user>``, ``d:<device>`` or, for an event
    naming neither, ``s:<session>``; None when it names nothing. Not the system's viewer key
    (processors/partition_keys.viewer_key, which partitions the topic): these keys share a partition
    store with the ``#clocks`` entry and take session-only events, so they carry a namespace prefix;
    the prefixes also start the session ids (``u:42@1700000000000``) kept in the changelog."""
    user = event.get("user_id")
    if user:
        return f"u:{user}"
    device = event.get("device_id")
    if device:
        return f"d:{device}"
    session = event.get("session_id")
    if session:
        return f"s:{session}"
    return None


def event_time_ms(value: Any) -> int | None:
    """Epoch ms from an aware ``datetime`` or an int/float of epoch ms; None if unusable."""
    kind = type(value)
    if kind is int:
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return None
        return round(value.timestamp() * 1000)
    if kind is float and value == value:  # not NaN
        return int(value)
    return None


def apply(
    state: SessionState | None, event: Mapping[str, Any], config: SessionConfig = SessionConfig()
) -> tuple[SessionState | None, list[Emitted]]:
    """Fold one playback or session event into the viewer's state."""
    if not isinstance(event, Mapping):
        return state, [Rejected("invalid_event", "event is not a mapping", None)]
    if "event_type" in event:
        return _apply_playback(state, event, config)
    if "kind" in event:
        return _apply_session_event(state, event, config)
    return state, [Rejected("invalid_event", "neither event_type nor kind present", _event_id(event))]


def close_idle(
    state: SessionState | None, now_ms: int, config: SessionConfig = SessionConfig()
) -> tuple[SessionState | None, list[Emitted]]:
    """Close the session if the viewer has been idle for longer than the gap.

    Returns ``(None, ...)`` when nothing needs to be kept (delete the table key).
    """
    if state is None:
        return None, []
    if now_ms - state["last"] <= config.inactivity_gap_ms:
        return state, []
    if state["sid"] is None:
        return None, []
    return None, [_closed(state, "idle")]


def expired(state: SessionState | None, watermark_ms: int, records_since: int,
            config: SessionConfig = SessionConfig()) -> bool:
    """Whether a viewer's state is forgotten: its partition's event time ``watermark_ms`` is more than
    ``expire_after_ms`` past the viewer's latest event and ``records_since`` (records of the partition
    since the viewer's latest one) exceeds ``expire_after_records``.

    Both clocks come from the partition's order, never from the wall clock, so what is kept does not
    depend on when or how fast the worker ran: the engine applies the rule to a viewer before each of its
    events (with the clocks as they were before that event) and drops such states to free memory; both
    clocks only grow, so dropping early and checking late agree. The record count keeps a replay that
    streams one viewer after another (MovieLens, user by user: the partition's event time jumps years
    back and forth) from forgetting the viewer it is reading. The rule changes a result only for an event
    that arrives after its viewer was forgotten while being at most ``inactivity_gap_ms`` after the
    viewer's latest event (out of order by more than ~30 min of event time), or of a client session
    that ended that long ago; otherwise the next event opens a new session either way.
    """
    return (state is not None and records_since > config.expire_after_records
            and watermark_ms - state["last"] > config.expire_after_ms)


# ---------------------------------------------------------------------------


def _event_id(event: Mapping[str, Any]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def _closed(state: SessionState, reason: str) -> SessionClosed:
    sid = state["sid"]
    return SessionClosed(sid.rsplit("@", 1)[0], sid, state["start"], state["last"], state["n"], reason)


def _new_session(viewer: str, t: int, ended: list[str]) -> SessionState:
    return {"sid": f"{viewer}@{t}", "start": t, "last": t, "n": 0, "views": {}, "plays": {},
            "clients": [], "ended": ended}


def _roll(state: SessionState | None, viewer: str, t: int, config: SessionConfig,
          emitted: list[Emitted]) -> SessionState:
    """Return an open session for an event at ``t``, closing the old one on a gap."""
    if state is None:
        return _new_session(viewer, t, [])
    if state["sid"] is None:  # tombstone after END
        return _new_session(viewer, t, state["ended"])
    if t - state["last"] > config.inactivity_gap_ms:
        emitted.append(_closed(state, "gap"))
        return _new_session(viewer, t, state["ended"])
    state = dict(state)
    if t > state["last"]:
        state["last"] = t
    return state


def _with_client(state: SessionState, client: str, config: SessionConfig) -> None:
    clients = state["clients"]
    if client in clients:
        return
    clients = clients + [client]
    if len(clients) > config.max_clients:
        clients = clients[-config.max_clients:]
    state["clients"] = clients


def _apply_playback(
    state: SessionState | None, event: Mapping[str, Any], config: SessionConfig
) -> tuple[SessionState | None, list[Emitted]]:
    kind = event.get("event_type")
    if not isinstance(kind, str) or kind not in _PLAYBACK_TYPES:
        return state, [Rejected("unknown_kind", f"event_type={kind!r}", _event_id(event))]
    item = event.get("item_id")
    if not isinstance(item, str) or not item:
        return state, [Rejected("missing_field", "item_id", _event_id(event))]
    t = event_time_ms(event.get("event_time"))
    if t is None:
        return state, [Rejected("bad_time", "event_time must be an aware datetime or epoch ms", _event_id(event))]
    viewer = sessionizer_key(event)
    if viewer is None:
        return state, [Rejected("missing_field", "user_id/device_id/session_id", _event_id(event))]
    pos = event.get("position_ms")
    if type(pos) is not int or pos < 0:
        if kind != "UNKNOWN" or pos is not None:
            return state, [Rejected("bad_value", f"position_ms={pos!r}", _event_id(event))]
    duration = event.get("duration_ms") or 0
    if type(duration) is not int or duration < 0:
        return state, [Rejected("bad_value", f"duration_ms={duration!r}", _event_id(event))]
    client = event.get("session_id")

    if state is not None:
        if client in state["ended"]:
            return state, [Rejected("ended_session", f"client session {client!r} already ended", _event_id(event))]
        if state["sid"] is not None and t < state["start"] - config.inactivity_gap_ms:
            return state, [Rejected("late_event", "older than the current session", _event_id(event))]

    emitted: list[Emitted] = []
    state = _roll(state, viewer, t, config, emitted)
    if isinstance(client, str) and client:
        _with_client(state, client, config)
    if kind == "UNKNOWN" or item in state["views"]:
        return state, emitted

    plays = dict(state["plays"])
    play = plays.get(item)
    if play is None:
        if len(plays) >= config.max_open_plays:
            del plays[min(plays, key=lambda key: plays[key][_T1])]
        play = [t, pos, t, pos, 0, duration, 1]
    else:
        play = list(play)
        if duration > play[_D]:
            play[_D] = duration
        if t >= play[_T1]:
            if kind == "START" or not play[_OPEN]:  # a new playback: re-anchor, no credit for the gap
                play[_T0] = play[_T1] = t
                play[_P0] = play[_P1] = pos
                play[_OPEN] = 1
            else:
                advance = pos - play[_P1]
                if advance > 0:
                    cap = (t - play[_T1]) * config.max_playback_rate
                    play[_W] += advance if advance <= cap else int(cap)
                play[_T1] = t
                play[_P1] = pos
        elif t < play[_T0]:  # late event before everything seen: extend backwards
            advance = play[_P0] - pos
            if advance > 0:
                cap = (play[_T0] - t) * config.max_playback_rate
                play[_W] += advance if advance <= cap else int(cap)
            play[_T0] = t
            play[_P0] = pos
        if kind == "STOP" or kind == "COMPLETE":
            if t >= play[_T1]:
                play[_OPEN] = 0

    watched = play[_W]
    if watched >= config.short_view_ms and (
        watched >= config.min_watched_ms or watched >= config.min_fraction * play[_D] > 0
    ):
        plays.pop(item, None)
        position = state["n"] + 1
        views = state["views"]
        previous = tuple(islice(reversed(views), config.recent_views))
        views = dict(views)
        views[item] = position
        if len(views) > config.max_session_views:
            del views[next(iter(views))]
        state["views"] = views
        state["n"] = position
        emitted.append(ViewCompleted(viewer, state["sid"], item, position, watched, play[_D], t, previous))
    else:
        plays[item] = play
    state["plays"] = plays
    return state, emitted


def _apply_session_event(
    state: SessionState | None, event: Mapping[str, Any], config: SessionConfig
) -> tuple[SessionState | None, list[Emitted]]:
    kind = event.get("kind")
    if not isinstance(kind, str) or kind not in _SESSION_KINDS:
        return state, [Rejected("unknown_kind", f"kind={kind!r}", _event_id(event))]
    t = event_time_ms(event.get("event_time"))
    if t is None:
        return state, [Rejected("bad_time", "event_time must be an aware datetime or epoch ms", _event_id(event))]
    viewer = sessionizer_key(event)
    if viewer is None:
        return state, [Rejected("missing_field", "user_id/device_id/session_id", _event_id(event))]
    client = event.get("session_id")
    if not isinstance(client, str) or not client:
        return state, [Rejected("missing_field", "session_id", _event_id(event))]

    if kind == "START":
        if state is None or state["sid"] is None:
            return state, []  # a session opens with its first playback event
        emitted: list[Emitted] = []
        state = _roll(state, viewer, t, config, emitted)
        if emitted:  # the old session ended on the gap; the new one waits for playback
            return {"sid": None, "last": t, "ended": state["ended"]}, emitted
        _with_client(state, client, config)
        return state, []

    # END
    if state is None or state["sid"] is None:
        return state, []
    if t - state["last"] > config.inactivity_gap_ms:
        return _tombstone(state, client, config), [_closed(state, "gap")]
    clients = state["clients"]
    if clients and client not in clients:
        return state, []  # another device of the same viewer; its session is not ours to end
    remaining = [c for c in clients if c != client]
    if remaining:
        state = dict(state)
        state["clients"] = remaining
        return state, []
    return _tombstone(state, client, config), [_closed(state, "end")]


def _tombstone(state: SessionState, client: str, config: SessionConfig) -> SessionState:
    ended = [c for c in state["ended"] if c != client] + [client]
    return {"sid": None, "last": state["last"], "ended": ended[-config.max_clients:]}
