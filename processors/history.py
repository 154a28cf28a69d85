"""A viewer's history from playback events: watched titles, continue watching, series progress.

Rules (``HistoryPolicy``):
  * watched: a COMPLETE or CREDITS_START event, or a position at/after ``watched_fraction`` of the
    duration. Watched stays watched (a rewatch does not undo it).
  * continue watching: the latest position of a title is at least ``max(continue_min_ms,
    continue_min_fraction * duration)`` (a few seconds of sampling is a short view, not a start),
    it is not finished, and the title was not finished at or after that latest event (so a rewatch
    in progress shows again, a title just completed does not).
  * series progress: the latest (season, episode) finished per series (needs the catalogue: the
    caller passes a lookup item -> (series_id, season, episode)). With it, continue watching holds one
    entry per series: its most recently played episode, if that one is in progress (a viewer who
    stopped E3 half way and went on to E4 resumes at E4, not at both).
  * order: newest first by event time; the state keeps the ``max_items`` most recent titles.

The per-title state merges by maximum only — (time, position, device) lexicographically, duration
and finish time by max — so the same event applied twice, or events applied out of order, give the
same state: redelivery after a crash cannot double anything (idempotent without offsets).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from processors.showcase.model import UserHistory

PLAYBACK_EVENT_TYPES = frozenset({
    "START", "HEARTBEAT", "PAUSE", "RESUME", "SEEK", "STALL", "QUALITY_CHANGE", "CREDITS_START", "COMPLETE", "STOP",
})
FINISH_EVENTS = frozenset({"COMPLETE", "CREDITS_START"})
SeriesLookup = Callable[[str], "tuple[str, int, int] | None"]


@dataclass(frozen=True)
class HistoryPolicy:
    watched_fraction: float = 0.95
    continue_min_ms: int = 60_000
    continue_min_fraction: float = 0.02
    max_items: int = 200


DEFAULT_HISTORY_POLICY = HistoryPolicy()


class HistoryInputError(ValueError):
    """A playback event the history cannot use; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class HistoryUpdate:
    state: dict
    changed: bool
    rejected: list[tuple[int, HistoryInputError]] = field(default_factory=list)  # (event index, error)


def empty_state() -> dict:
    return {"items": {}, "devices": {}, "t": 0}


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise HistoryInputError("NAIVE_TIME", "event_time must be timezone-aware")
        return int(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise HistoryInputError("BAD_TIME", f"event_time must be a datetime, got {type(value).__name__}")


def _check(event: Mapping[str, Any]) -> tuple[str, str, int, int, int, str, str | None]:
    item = event.get("item_id")
    if not isinstance(item, str) or not item:
        raise HistoryInputError("MISSING_ITEM", "item_id must be a non-empty string")
    kind = event.get("event_type")
    if kind not in PLAYBACK_EVENT_TYPES:
        raise HistoryInputError("BAD_EVENT_TYPE", f"unknown event_type {kind!r}")
    position, duration = event.get("position_ms"), event.get("duration_ms")
    for name, value in (("position_ms", position), ("duration_ms", duration)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise HistoryInputError("BAD_POSITION", f"{name} must be a non-negative integer, got {value!r}")
    device = event.get("device_type") or "UNKNOWN"
    app_version = event.get("app_version") or None
    return item, kind, position, duration, _ms(event.get("event_time")), str(device), app_version


def _merge(state: dict, event: Mapping[str, Any], policy: HistoryPolicy) -> bool:
    item, kind, position, duration, t, device, app_version = _check(event)
    items: dict = state["items"]
    old = items.get(item)
    entry = dict(old) if old is not None else {"t": 0, "pos": 0, "dur": 0, "done": 0, "dev": ""}
    if (t, position, device) > (entry["t"], entry["pos"], entry["dev"]):
        entry["t"], entry["pos"], entry["dev"] = t, position, device
    entry["dur"] = max(entry["dur"], duration)
    finished = kind in FINISH_EVENTS or (duration > 0 and position >= policy.watched_fraction * duration)
    if finished:
        entry["done"] = max(entry["done"], t)
    changed = entry != old
    if changed:
        items[item] = entry
    devices: dict = state["devices"]
    seen = devices.get(device)
    candidate = {"t": t, "app_version": app_version or ""}
    if seen is None or (t, candidate["app_version"]) > (seen["t"], seen["app_version"]):
        devices[device] = candidate
        changed = True
    if t > state["t"]:
        state["t"] = t
        changed = True
    return changed


def _trim(state: dict, max_items: int) -> None:
    items = state["items"]
    if len(items) > max_items:
        keep = sorted(items.items(), key=lambda kv: (kv[1]["t"], kv[0]), reverse=True)[:max_items]
        state["items"] = dict(keep)


def apply_events(state: Mapping[str, Any] | None, events: Iterable[Mapping[str, Any]],
                 policy: HistoryPolicy = DEFAULT_HISTORY_POLICY) -> HistoryUpdate:
    """A new state with the events merged (the input is not modified); bad events are listed, not raised."""
    base = state if state else empty_state()
    working = {"items": dict(base.get("items", {})), "devices": dict(base.get("devices", {})), "t": base.get("t", 0)}
    changed = False
    rejected: list[tuple[int, HistoryInputError]] = []
    for index, event in enumerate(events):
        try:
            changed |= _merge(working, event, policy)
        except HistoryInputError as err:
            rejected.append((index, err))
    if changed:
        _trim(working, policy.max_items)
    return HistoryUpdate(working if changed else dict(base), changed, rejected)


def is_watched(entry: Mapping[str, Any]) -> bool:
    return entry["done"] > 0


def in_progress(entry: Mapping[str, Any], policy: HistoryPolicy = DEFAULT_HISTORY_POLICY) -> bool:
    duration, position = entry["dur"], entry["pos"]
    if entry["done"] >= entry["t"]:
        return False  # the latest event finished it
    if duration > 0 and position >= policy.watched_fraction * duration:
        return False
    return position >= max(policy.continue_min_ms, policy.continue_min_fraction * duration)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()


def history_view(state: Mapping[str, Any] | None, series_of: SeriesLookup | None = None,
                 policy: HistoryPolicy = DEFAULT_HISTORY_POLICY) -> dict:
    """The Redis view ``vitrina:history:{viewer}``:
    {"watched": [item, ...], "continue": [{item_id, position_ms, duration_ms, updated_at, device_type}],
     "series": {series_id: {"season", "episode", "item_id"}}, "devices": {device: {app_version, updated_at}},
     "updated_at"}; lists newest first."""
    state = state or empty_state()
    ordered = sorted(state["items"].items(), key=lambda kv: (kv[1]["t"], kv[0]), reverse=True)
    watched = [item for item, entry in ordered if is_watched(entry)]
    latest_of_series: dict[str, str] = {}  # a series resumes at its most recent episode only
    if series_of is not None:
        for item, _ in ordered:
            found = series_of(item)
            if found is not None:
                latest_of_series.setdefault(found[0], item)
    resume = [
        {"item_id": item, "position_ms": entry["pos"], "duration_ms": entry["dur"], "updated_at": _iso(entry["t"]),
         "device_type": entry["dev"]}
        for item, entry in ordered
        if in_progress(entry, policy) and _latest_in_series(item, series_of, latest_of_series)
    ]
    series: dict[str, dict] = {}
    if series_of is not None:
        for item in watched:
            found = series_of(item)
            if found is None:
                continue
            series_id, season, episode = found
            best = series.get(series_id)
            if best is None or (season, episode) > (best["season"], best["episode"]):
                series[series_id] = {"season": season, "episode": episode, "item_id": item}
    devices = {d: {"app_version": v["app_version"] or None, "updated_at": _iso(v["t"])}
               for d, v in sorted(state["devices"].items())}
    return {"watched": watched, "continue": resume, "series": series, "devices": devices,
            "updated_at": _iso(state["t"]) if state["t"] else None}


def _latest_in_series(item: str, series_of: SeriesLookup | None, latest: dict[str, str]) -> bool:
    found = series_of(item) if series_of is not None else None
    return found is None or latest.get(found[0]) == item


def series_lookup_from_titles(titles: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, int, int]]:
    """item -> (series_id, season, episode) for the episodes among catalogue title records."""
    found = {}
    for title in titles:
        series_id, episode = title.get("series_id"), title.get("episode")
        if series_id and isinstance(episode, int):
            found[title["item_id"]] = (series_id, title.get("season") or 1, episode)
    return found


def viewer_devices(view: Mapping[str, Any]) -> dict[str, str | None]:
    """device type -> the latest app version seen on it, from a history view."""
    devices = view.get("devices") or {}
    return {d: (v or {}).get("app_version") for d, v in devices.items() if isinstance(d, str)}


def user_history(view: Mapping[str, Any] | None) -> UserHistory:
    """The showcase core's UserHistory from a history view (continue watching and watched, newest first)."""
    from processors.showcase.model import UserHistory

    if not view:
        return UserHistory()
    progress = {}
    for series_id, last in (view.get("series") or {}).items():
        season, episode = last.get("season"), last.get("episode")
        if isinstance(season, int) and isinstance(episode, int):
            progress[series_id] = (season, episode)
    return UserHistory(
        continue_watching=tuple(c["item_id"] for c in view.get("continue") or () if c.get("item_id")),
        watched=tuple(i for i in view.get("watched") or () if isinstance(i, str)),
        series_progress=progress,
    )
