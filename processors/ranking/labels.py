"""Training labels: join ranking impressions with the playback that follows them.

Label rules (``LabelRules``; watched = milliseconds actually played, see ``PlayAccumulator``):

* **svr** short view: the item was played, watched < 3 s (GRF) and the play did not
  finish. A finished play is never a short view (matters only for clips under 3 s).
* **evr** effective view: finished, or watched >= max(3 s, min(10 s, 30 % of duration)).
  Short clips need 30 % of their length, anything >= 33 s needs 10 s; never < 3 s so
  evr and svr are mutually exclusive.
* **lvr** long view: finished, or watched >= max(3 s, min(60 s, 60 % of duration)).
* **fpr** finished play: watched >= 95 % of duration, or a finish event (COMPLETE, and
  CREDITS_START: KION counts reaching the end credits as finishing a title).
* Unknown duration (0 or None, 18 of the 200 KuaiRand rows): the fractional thresholds
  are dropped (evr needs 10 s, lvr 60 s) and fpr needs a finish event.

So fpr => lvr => evr, and svr excludes evr. An impression never played within the window
is a negative for all four tasks, **including svr**: svr means "started, then abandoned
within 3 s"; not starting at all is a different outcome the evr/lvr heads already score
as negative, and counting it as a short view would turn svr into a "not clicked" label.

Join rules (``LabelJoiner``): the viewer is ``user_id`` or, for guests, ``device:<id>``.
A play (one ``session_id`` x ``item_id``) is attributed to the latest impression of the
same viewer and item shown at or before the play's first event and at most ``window``
earlier (last touch). Several plays attributed to one impression add up. An impression
is final once its window has closed and each attributed play has ended (STOP/COMPLETE
seen or idle for ``idle_timeout``), or ``max_label_age`` after it was shown. ``now`` is
an event-time watermark the caller advances (e.g. max event time seen minus lateness).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from processors.partition_keys import viewer_key as partition_viewer_key
from processors.ranking.errors import RankingInputError
from processors.ranking.tasks import TASKS

PLAYBACK_EVENT_TYPES = frozenset(
    {"START", "HEARTBEAT", "PAUSE", "RESUME", "SEEK", "STALL", "QUALITY_CHANGE", "CREDITS_START", "COMPLETE", "STOP"}
)
_TERMINAL_EVENTS = frozenset({"STOP", "COMPLETE"})
_RESUMING_EVENTS = frozenset({"START", "RESUME", "HEARTBEAT"})


@dataclass(frozen=True)
class LabelRules:
    short_view_ms: int = 3_000
    effective_view_ms: int = 10_000
    effective_view_fraction: float = 0.3
    long_view_ms: int = 60_000
    long_view_fraction: float = 0.6
    finish_fraction: float = 0.95
    finish_events: frozenset[str] = frozenset({"COMPLETE", "CREDITS_START"})


DEFAULT_RULES = LabelRules()


def label_watch(
    watched_ms: float,
    duration_ms: float | None,
    *,
    played: bool = True,
    finished_event: bool = False,
    rules: LabelRules = DEFAULT_RULES,
) -> dict[str, bool]:
    """The four labels of one impression from how long its item was watched."""
    if not played:
        return {task: False for task in TASKS}
    if watched_ms < 0:
        raise RankingInputError("negative_watch_time", f"watched_ms={watched_ms}", field="watched_ms")
    known_duration = duration_ms is not None and duration_ms > 0
    if known_duration:
        finished = finished_event or watched_ms >= rules.finish_fraction * duration_ms
        evr_threshold = max(
            rules.short_view_ms, min(rules.effective_view_ms, rules.effective_view_fraction * duration_ms)
        )
        lvr_threshold = max(rules.short_view_ms, min(rules.long_view_ms, rules.long_view_fraction * duration_ms))
    else:
        finished = finished_event
        evr_threshold, lvr_threshold = rules.effective_view_ms, rules.long_view_ms
    return {
        "evr": finished or watched_ms >= evr_threshold,
        "lvr": finished or watched_ms >= lvr_threshold,
        "svr": (not finished) and watched_ms < rules.short_view_ms,
        "fpr": finished,
    }


def viewer_key(event: Mapping[str, Any]) -> str:
    """The viewer of an impression or playback event: the one viewer key of the system (the user, else
    ``device:<id>``, processors/partition_keys.py), refused when the event names neither."""
    if not event.get("user_id") and not event.get("device_id"):
        raise RankingInputError("missing_viewer", "neither user_id nor device_id is set", field="device_id")
    return partition_viewer_key(event)


def require_time(event: Mapping[str, Any], name: str = "event_time") -> datetime:
    value = event.get(name)
    if not isinstance(value, datetime):
        raise RankingInputError("bad_timestamp", f"{name} must be a datetime, got {type(value).__name__}", field=name)
    if value.tzinfo is None:
        raise RankingInputError("naive_datetime", f"{name} must be timezone-aware", field=name)
    return value


def _require_str(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise RankingInputError("missing_field", f"{name} must be a non-empty string", field=name)
    return value


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000.0


@dataclass
class PlayAccumulator:
    """Watch time of one play, accumulated from its player events.

    Between consecutive events, progress counts only while playing (not after PAUSE
    until RESUME/HEARTBEAT) and is min(position advance, event-time elapsed), so a
    forward seek or a clock jump does not inflate it. A SEEK event credits the elapsed
    time before the jump (capped by ``max_gap_ms``). Out-of-order events (earlier than
    the last one) only set flags.
    """

    session_id: str
    item_id: str
    viewer: str
    start_time: datetime
    last_time: datetime
    last_position_ms: int
    duration_ms: int = 0
    watched_ms: float = 0.0
    paused: bool = False
    finish_event: bool = False
    ended: bool = False
    max_gap_ms: float = 120_000.0

    def advance(self, event_type: str, position_ms: int, event_time: datetime, finish_events: frozenset[str]) -> None:
        if event_type in finish_events:
            self.finish_event = True
        if event_type in _TERMINAL_EVENTS:
            self.ended = True
        if event_time < self.last_time:
            return
        elapsed = _ms(event_time - self.last_time)
        if not self.paused and elapsed > 0:
            if event_type == "SEEK":
                self.watched_ms += min(elapsed, self.max_gap_ms)
            else:
                advance = position_ms - self.last_position_ms
                if advance > 0:
                    self.watched_ms += min(advance, elapsed)
        self.last_time = event_time
        self.last_position_ms = position_ms
        if event_type == "PAUSE":
            self.paused = True
        elif event_type in _RESUMING_EVENTS:
            self.paused = False


@dataclass(frozen=True)
class LabelledSample:
    """``impression`` is a copy of the impression event with ``labels`` filled in."""

    impression: dict[str, Any]
    watched_ms: float
    played: bool
    forced: bool = False


@dataclass
class _PendingImpression:
    impression: Mapping[str, Any]
    shown_at: datetime
    duration_ms: int


@dataclass
class _KeyState:
    impressions: list[_PendingImpression] = field(default_factory=list)
    plays: dict[str, PlayAccumulator] = field(default_factory=dict)


@dataclass(frozen=True)
class JoinerConfig:
    window: timedelta = timedelta(minutes=30)
    idle_timeout: timedelta = timedelta(minutes=10)
    max_label_age: timedelta = timedelta(hours=6)
    max_pending_impressions: int = 2_000_000
    rules: LabelRules = DEFAULT_RULES


@dataclass
class JoinerStats:
    impressions: int = 0
    playback_events: int = 0
    ignored_events: int = 0
    emitted: int = 0
    emitted_played: int = 0
    forced: int = 0
    orphan_plays_dropped: int = 0


class LabelJoiner:
    """Incremental impression x playback join; not thread-safe (one agent owns it)."""

    def __init__(self, config: JoinerConfig | None = None) -> None:
        self.config = config or JoinerConfig()
        self.stats = JoinerStats()
        self._keys: dict[tuple[str, str], _KeyState] = {}
        self._schedule: list[tuple[datetime, int, tuple[str, str]]] = []
        self._seq = itertools.count()
        self._closed_plays: dict[str, tuple[datetime, datetime]] = {}  # play id -> (forget at, last event)
        self._closed_expiry: list[tuple[datetime, str]] = []
        self._pending = 0
        self._dirty: set[tuple[str, str]] = set()

    @property
    def pending_impressions(self) -> int:
        return self._pending

    def add_impression(self, impression: Mapping[str, Any]) -> None:
        _require_str(impression, "impression_id")
        item_id = _require_str(impression, "item_id")
        shown_at = require_time(impression)
        key = (viewer_key(impression), item_id)
        context = impression.get("context") or {}
        duration = context.get("item_duration_ms") or 0
        if not isinstance(duration, int) or duration < 0:
            raise RankingInputError("bad_duration", "context.item_duration_ms must be an int >= 0", field="context")
        state = self._keys.setdefault(key, _KeyState())
        state.impressions.append(_PendingImpression(impression, shown_at, duration))
        self._dirty.add(key)
        self._pending += 1
        self.stats.impressions += 1
        self._schedule_check(shown_at + self.config.window, key)

    def add_playback(self, event: Mapping[str, Any]) -> None:
        session_id = _require_str(event, "session_id")
        item_id = _require_str(event, "item_id")
        event_type = event.get("event_type")
        if event_type not in PLAYBACK_EVENT_TYPES:
            raise RankingInputError("bad_event_type", f"unknown event_type {event_type!r}", field="event_type")
        position = event.get("position_ms")
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise RankingInputError("bad_position", "position_ms must be an int >= 0", field="position_ms")
        event_time = require_time(event)
        key = (viewer_key(event), item_id)
        play_id = f"{session_id}\x1f{item_id}"
        self.stats.playback_events += 1
        closed = self._closed_plays.get(play_id)
        if closed is not None:
            if event_type == "START" and event_time > closed[1]:
                del self._closed_plays[play_id]  # the same item played again in the same session
            else:
                self.stats.ignored_events += 1
                return
        state = self._keys.setdefault(key, _KeyState())
        self._dirty.add(key)
        play = state.plays.get(play_id)
        duration = event.get("duration_ms") or 0
        if play is None:
            play = PlayAccumulator(session_id, item_id, key[0], event_time, event_time, position)
            state.plays[play_id] = play
            self._schedule_check(event_time + self.config.window, key)
        if isinstance(duration, int) and duration > 0:
            play.duration_ms = duration
        if event_time < play.start_time:
            play.start_time = event_time
        was_ended = play.ended
        play.advance(event_type, position, event_time, self.config.rules.finish_events)
        if play.ended and not was_ended:
            self._schedule_check(event_time, key)

    def expire(self, now: datetime) -> list[LabelledSample]:
        """Labelled samples whose label is final at watermark ``now``."""
        require_time({"now": now}, "now")
        out: list[LabelledSample] = []
        while self._schedule and self._schedule[0][0] <= now:
            _, _, key = heapq.heappop(self._schedule)
            out.extend(self._settle(key, now, force=False))
        while self._pending > self.config.max_pending_impressions and self._schedule:
            _, _, key = heapq.heappop(self._schedule)
            out.extend(self._settle(key, now, force=True))
        while self._closed_expiry and self._closed_expiry[0][0] <= now:
            until, play_id = heapq.heappop(self._closed_expiry)
            entry = self._closed_plays.get(play_id)
            if entry is not None and entry[0] <= now:
                del self._closed_plays[play_id]
        return out

    def flush(self, now: datetime) -> list[LabelledSample]:
        """Finalize everything with what is known (shutdown, end of a replay)."""
        out: list[LabelledSample] = []
        for key in list(self._keys):
            out.extend(self._settle(key, now, force=True))
        self._schedule.clear()
        return out

    def _schedule_check(self, at: datetime, key: tuple[str, str]) -> None:
        heapq.heappush(self._schedule, (at, next(self._seq), key))

    def _settle(self, key: tuple[str, str], now: datetime, *, force: bool) -> list[LabelledSample]:
        state = self._keys.get(key)
        if state is None:
            return []
        self._dirty.add(key)
        cfg = self.config
        shown = sorted(state.impressions, key=lambda p: p.shown_at)
        attributed: dict[int, list[str]] = {i: [] for i in range(len(shown))}
        unclaimed: list[str] = []
        for play_id, play in state.plays.items():
            owner = None
            for i, pending in enumerate(shown):
                if pending.shown_at <= play.start_time <= pending.shown_at + cfg.window:
                    owner = i
            (attributed[owner] if owner is not None else unclaimed).append(play_id)
        out: list[LabelledSample] = []
        keep: list[_PendingImpression] = []
        next_check: datetime | None = None
        for i, pending in enumerate(shown):
            plays = [state.plays[p] for p in attributed[i]]
            window_end = pending.shown_at + cfg.window
            plays_done = all(p.ended or now >= p.last_time + cfg.idle_timeout for p in plays)
            hard_deadline = pending.shown_at + cfg.max_label_age
            if force or now >= hard_deadline or (now >= window_end and plays_done):
                out.append(self._label(pending, plays, forced=force))
                for play_id in attributed[i]:
                    self._close_play(state, play_id)
                continue
            keep.append(pending)
            if plays_done:
                due = window_end
            else:
                idle_deadlines = [p.last_time + cfg.idle_timeout for p in plays if not p.ended]
                due = max(window_end, min([hard_deadline, *idle_deadlines]))
            next_check = due if next_check is None else min(next_check, due)
        for play_id in unclaimed:
            play = state.plays[play_id]
            if force or now >= play.start_time + cfg.window:
                self._close_play(state, play_id)
                self.stats.orphan_plays_dropped += 1
            else:
                due = play.start_time + cfg.window
                next_check = due if next_check is None else min(next_check, due)
        self._pending -= len(shown) - len(keep)
        state.impressions = keep
        if not state.impressions and not state.plays:
            del self._keys[key]
        elif next_check is not None:
            self._schedule_check(max(next_check, now + timedelta(microseconds=1)), key)
        return out

    def _close_play(self, state: _KeyState, play_id: str) -> None:
        play = state.plays.pop(play_id)
        until = play.last_time + self.config.max_label_age
        self._closed_plays[play_id] = (until, play.last_time)
        heapq.heappush(self._closed_expiry, (until, play_id))

    def _label(self, pending: _PendingImpression, plays: list[PlayAccumulator], *, forced: bool) -> LabelledSample:
        played = bool(plays)
        watched = sum(p.watched_ms for p in plays)
        duration = next((p.duration_ms for p in plays if p.duration_ms > 0), pending.duration_ms)
        labels = label_watch(
            watched,
            duration,
            played=played,
            finished_event=any(p.finish_event for p in plays),
            rules=self.config.rules,
        )
        impression = dict(pending.impression)
        impression["labels"] = labels
        self.stats.emitted += 1
        self.stats.emitted_played += int(played)
        self.stats.forced += int(forced)
        return LabelledSample(impression=impression, watched_ms=watched, played=played, forced=forced)

    # -- durable state: the stream shell keeps each (viewer, item) key in a changelog-backed table --

    def take_dirty_keys(self) -> set[tuple[str, str]]:
        """(viewer, item) keys whose state changed since the last call (persist these)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def key_state(self, key: tuple[str, str]) -> dict[str, Any] | None:
        """JSON-ready state of one (viewer, item) key; None when nothing is pending for it.

        Closed plays (kept to ignore their late events) are not part of it: after a restore,
        a late event of an already-labelled play starts a new play, which is dropped as an
        orphan unless a pending impression of the same item can claim it.
        """
        state = self._keys.get(key)
        if state is None:
            return None
        return {
            "impressions": [
                {"impression": _json_impression(p.impression), "duration_ms": p.duration_ms}
                for p in state.impressions
            ],
            "plays": {play_id: _json_play(play) for play_id, play in state.plays.items()},
        }

    def restore_key(self, key: tuple[str, str], data: Mapping[str, Any]) -> None:
        """Load a ``key_state`` snapshot into this (fresh) joiner; the key is re-checked at the next expire."""
        if key in self._keys:
            raise RankingInputError("duplicate_key", f"key {key!r} is already loaded", field="key")
        try:
            impressions = []
            for entry in data.get("impressions", ()):
                impression = _impression_from_json(entry["impression"])
                impressions.append(_PendingImpression(impression, require_time(impression), int(entry["duration_ms"])))
            plays = {play_id: _play_from_json(raw) for play_id, raw in (data.get("plays") or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise RankingInputError("bad_key_state", f"cannot restore {key!r}: {exc}", field="key_state") from exc
        if not impressions and not plays:
            return
        self._keys[key] = _KeyState(impressions, plays)
        self._pending += len(impressions)
        due = [p.shown_at + self.config.window for p in impressions]
        due += [p.start_time + self.config.window for p in plays.values()]
        self._schedule_check(min(due), key)


_PLAY_TIMES = ("start_time", "last_time")
_PLAY_FIELDS = frozenset(f.name for f in fields(PlayAccumulator))


def _json_impression(impression: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level datetimes become ISO-8601 strings, listed under ``_datetimes``."""
    out = dict(impression)
    stamped = sorted(k for k, v in impression.items() if isinstance(v, datetime))
    for name in stamped:
        out[name] = impression[name].isoformat()
    out["_datetimes"] = stamped
    return out


def _impression_from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k != "_datetimes"}
    for name in data.get("_datetimes", ()):
        out[name] = datetime.fromisoformat(out[name])
    return out


def _json_play(play: PlayAccumulator) -> dict[str, Any]:
    data = asdict(play)
    for name in _PLAY_TIMES:
        data[name] = data[name].isoformat()
    return data


def _play_from_json(data: Mapping[str, Any]) -> PlayAccumulator:
    values = {k: v for k, v in data.items() if k in _PLAY_FIELDS}
    for name in _PLAY_TIMES:
        values[name] = datetime.fromisoformat(values[name])
    play = PlayAccumulator(**values)
    for name in _PLAY_TIMES:
        require_time({name: getattr(play, name)}, name)
    return play
