"""Seeded generator of a realistic event stream for the main job, tests and benchmarks.

Viewers have genre tastes; a session picks titles mostly from the viewer's
favourite genres (so co-view structure exists), watches series episodes in
order, sometimes abandons a title in the first seconds (short views), stalls
on slow networks, and sees ranked impressions before playing. Everything is
derived from ``random.Random(seed)``: the same seed gives the same stream.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator

DEVICE_TYPES = ("TV", "MOBILE", "WEB", "TABLET", "STB")
OS_BY_DEVICE = {"TV": "tizen 7", "MOBILE": "android 14", "WEB": "chrome 131", "TABLET": "ipados 18", "STB": "android tv 12"}
HEARTBEAT_MS = 60_000


@dataclass
class Viewer:
    user_id: str | None
    device_id: str
    device_type: str
    app_version: str
    tastes: list[str]
    network_kbps: int
    device_score: float
    watched: list[str] = field(default_factory=list)


@dataclass
class StreamConfig:
    viewers: int = 200
    sessions_per_viewer: float = 3.0
    titles_per_session: tuple[int, int] = (1, 6)
    guest_share: float = 0.2
    impressions_per_play: int = 6
    start: datetime = datetime(2026, 11, 1, tzinfo=timezone.utc)
    days: float = 7.0


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_viewers(rng: random.Random, n: int, genres: list[str], guest_share: float) -> list[Viewer]:
    viewers = []
    for i in range(n):
        device_type = rng.choices(DEVICE_TYPES, weights=(4, 5, 3, 1, 1))[0]
        viewers.append(Viewer(
            user_id=None if rng.random() < guest_share else f"u{i}",
            device_id=f"d{i}",
            device_type=device_type,
            app_version=rng.choice(["3.2.0", "3.4.1", "4.0.0", "4.1.2"]),
            tastes=rng.sample(genres, k=min(len(genres), rng.randint(1, 3))),
            network_kbps=int(rng.lognormvariate(8.3, 0.9)),
            device_score=round(rng.uniform(0.2, 1.0), 2),
        ))
    return viewers


def _by_genre(titles: list[dict]) -> dict[str, list[dict]]:
    index: dict[str, list[dict]] = {}
    for title in titles:
        for genre in title["genres"] or ["other"]:
            index.setdefault(genre, []).append(title)
    return index


def _episodes(titles: list[dict]) -> dict[str, list[dict]]:
    series: dict[str, list[dict]] = {}
    for title in titles:
        if title.get("series_id"):
            series.setdefault(title["series_id"], []).append(title)
    for episodes in series.values():
        episodes.sort(key=lambda t: (t.get("season") or 0, t.get("episode") or 0))
    return series


def _pick_title(rng: random.Random, viewer: Viewer, by_genre: dict[str, list[dict]], titles: list[dict],
                series: dict[str, list[dict]], previous: dict | None) -> dict:
    if previous and previous.get("series_id") and rng.random() < 0.7:
        episodes = series[previous["series_id"]]
        index = episodes.index(previous)
        if index + 1 < len(episodes):
            return episodes[index + 1]
    if rng.random() < 0.85:
        pool = by_genre.get(rng.choice(viewer.tastes)) or titles
        # popularity skew: early titles in each genre list are watched more (Zipf-like)
        return pool[min(int(rng.paretovariate(1.2)) - 1, len(pool) - 1)]
    return rng.choice(titles)


def _scores(rng: random.Random, affinity: float) -> dict:
    noisy = lambda p: round(min(0.99, max(0.01, p + rng.gauss(0, 0.15))), 3)
    return {"evr": noisy(0.3 + 0.5 * affinity), "lvr": noisy(0.15 + 0.5 * affinity),
            "svr": noisy(0.5 - 0.4 * affinity), "fpr": noisy(0.05 + 0.4 * affinity)}


def playback_session(rng: random.Random, viewer: Viewer, session_id: str, title: dict, at: datetime,
                     watch_fraction: float) -> tuple[list[dict], datetime]:
    """One title's playback from ``at`` (START, heartbeats, stalls on slow networks, STOP or CREDITS_START
    + COMPLETE); returns the events and the clock when it ended."""
    duration = max(int(title.get("duration_ms") or 0), 60_000)
    watched = int(duration * watch_fraction)
    base = dict(session_id=session_id, user_id=viewer.user_id, device_id=viewer.device_id,
                device_type=viewer.device_type, os=OS_BY_DEVICE[viewer.device_type], app_version=viewer.app_version,
                item_id=title["item_id"], duration_ms=duration, network_kbps=viewer.network_kbps,
                buffered_ratio=round(rng.random(), 2), stall_ms=0,
                bitrate_kbps=min(viewer.network_kbps, 6000))
    events = []

    def emit(kind: str, position: int, when: datetime, **extra: object) -> None:
        events.append({**base, "event_id": _uuid(rng), "event_type": kind, "position_ms": position,
                       "event_time": when, **extra})

    emit("START", 0, at)
    position, clock = 0, at
    while position + HEARTBEAT_MS < watched:
        position += HEARTBEAT_MS
        clock += timedelta(milliseconds=HEARTBEAT_MS)
        if viewer.network_kbps < 1500 and rng.random() < 0.15:
            stall = rng.randint(500, 8000)
            clock += timedelta(milliseconds=stall)
            emit("STALL", position, clock, stall_ms=stall)
        emit("HEARTBEAT", position, clock)
    clock += timedelta(milliseconds=watched - position)
    if watch_fraction >= 0.97:
        emit("CREDITS_START", int(duration * 0.97), clock - timedelta(milliseconds=int(duration * 0.03)))
        emit("COMPLETE", duration, clock)
    else:
        emit("STOP", watched, clock)
    return events, clock


def generate(titles: list[dict], config: StreamConfig, seed: int = 7) -> Iterator[tuple[str, dict]]:
    """Yield (topic, event) pairs in event-time order per viewer (viewers interleaved by day)."""
    rng = random.Random(seed)
    genres = sorted({g for t in titles for g in t["genres"]}) or ["other"]
    by_genre = _by_genre(titles)
    series = _episodes(titles)
    viewers = make_viewers(rng, config.viewers, genres, config.guest_share)
    horizon_s = config.days * 86400
    sessions: list[tuple[datetime, Viewer]] = []
    for viewer in viewers:
        for _ in range(max(1, int(rng.expovariate(1 / config.sessions_per_viewer)))):
            sessions.append((config.start + timedelta(seconds=rng.uniform(0, horizon_s)), viewer))
    sessions.sort(key=lambda s: s[0])
    for start, viewer in sessions:
        session_id = _uuid(rng)
        common = dict(session_id=session_id, user_id=viewer.user_id, device_id=viewer.device_id,
                      device_type=viewer.device_type)
        yield "sessions", {**common, "kind": "START", "end_reason": None, "event_time": start}
        clock, previous = start, None
        for _ in range(rng.randint(*config.titles_per_session)):
            title = _pick_title(rng, viewer, by_genre, titles, series, previous)
            affinity = 1.0 if set(title["genres"]) & set(viewer.tastes) else 0.2
            request_id = _uuid(rng)
            shown = [title] + rng.sample(titles, k=min(len(titles), config.impressions_per_play - 1))
            rng.shuffle(shown)
            for position, candidate in enumerate(shown):
                cand_affinity = 1.0 if set(candidate["genres"]) & set(viewer.tastes) else 0.2
                yield "ranking.impressions", {
                    "impression_id": _uuid(rng), "request_id": request_id, "user_id": viewer.user_id,
                    "device_id": viewer.device_id, "device_type": viewer.device_type,
                    "item_id": candidate["item_id"], "position": position, "surface": "HOME",
                    "recent_watched": list(reversed(viewer.watched[-20:])), "pxtr": _scores(rng, cand_affinity),
                    "context": {"network_kbps": viewer.network_kbps, "device_score": viewer.device_score,
                                "cached_ratio": round(rng.random(), 2),
                                "item_duration_ms": int(candidate.get("duration_ms") or 0),
                                "hour_of_day": clock.hour},
                    "labels": None, "event_time": clock,
                }
            clock += timedelta(seconds=rng.uniform(2, 20))
            roll = rng.random()
            if roll < 0.15 + 0.2 * (1 - affinity):
                fraction = rng.uniform(0.0, 0.02)  # abandoned within seconds: a short view
            elif roll < 0.55:
                fraction = rng.uniform(0.1, 0.9)
            else:
                fraction = 1.0
            events, clock = playback_session(rng, viewer, session_id, title, clock, fraction)
            for event in events:
                yield "playback", event
            viewer.watched.append(title["item_id"])
            previous = title
            clock += timedelta(seconds=rng.uniform(5, 120))
        yield "sessions", {**common, "kind": "END", "end_reason": rng.choice(["EXPLICIT", "INACTIVITY", "APP_BACKGROUND"]),
                           "event_time": clock}
