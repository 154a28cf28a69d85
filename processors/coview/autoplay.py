"""Autoplay: what starts when the end credits of the current title begin (KION).

Order of choice:
1. a series episode: the next episode of the same season, else the first episode
   of the next season that exists (episodes in the catalogue may have gaps);
2. otherwise the best similar title (the i2i list, best first) the viewer has not
   watched. A similar title that is an episode of another series is replaced by
   that series' first unwatched episode, so autoplay never drops the viewer into
   the middle of a show; other episodes of the current series are skipped.

Every candidate, the next episode included, must be allowed for the viewer:
guests never get adult titles; nobody gets a title rated above their age limit;
a kids profile gets only titles flagged ``kids``; the device type must be in the
title's ``device_rights`` (empty = all devices); ``now`` must be inside the licence
window [licence_start, licence_end). If the next episode is not allowed the
decision falls through to similar titles.

KION asks "still watching?" after 3 titles in a row started by autoplay:
``still_watching_prompt`` is set when ``viewer.autoplay_streak`` has reached
``still_watching_after``.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, NamedTuple

__all__ = [
    "ViewerProfile",
    "AutoplayDecision",
    "SeriesIndex",
    "build_series_index",
    "blocked_reason",
    "next_episode",
    "choose_next",
]

Title = Mapping[str, Any]
SeriesIndex = dict[str, list[tuple[int, int, str]]]
"""series_id -> [(season, episode, item_id)] sorted by (season, episode)."""


@dataclass(frozen=True, slots=True)
class ViewerProfile:
    user_id: str | None  # None = guest
    device_type: str
    now: datetime
    age_limit: int = 18
    kids: bool = False
    autoplay_streak: int = 0  # titles started by autoplay in a row so far
    still_watching_after: int = 3


class AutoplayDecision(NamedTuple):
    item_id: str | None
    reason: str  # "next_episode" | "similar" | "none"
    still_watching_prompt: bool
    skipped: tuple[tuple[str, str], ...]  # (item_id, why) for candidates filtered out


def build_series_index(titles: Iterable[Title]) -> SeriesIndex:
    index: dict[str, list[tuple[int, int, str]]] = {}
    for title in titles:
        series = title.get("series_id")
        season, episode = title.get("season"), title.get("episode")
        if series and isinstance(season, int) and isinstance(episode, int):
            index.setdefault(series, []).append((season, episode, str(title["item_id"])))
    for episodes in index.values():
        episodes.sort()
    return index


def blocked_reason(title: Title | None, viewer: ViewerProfile) -> str | None:
    """Why the viewer may not get this title, or None if allowed."""
    if title is None:
        return "unknown_title"
    if title.get("adult") and viewer.user_id is None:
        return "adult_for_guest"
    if (title.get("age_rating") or 0) > viewer.age_limit:
        return "age_limit"
    if viewer.kids and not title.get("kids"):
        return "not_for_kids"
    rights = title.get("device_rights") or ()
    if rights and viewer.device_type not in rights:
        return "device_rights"
    start, end = title.get("licence_start"), title.get("licence_end")
    try:
        if start is not None and viewer.now < start:
            return "licence_not_started"
        if end is not None and viewer.now >= end:
            return "licence_expired"
    except TypeError:  # naive vs aware datetime, or not a datetime at all
        return "invalid_licence_window"
    return None


def next_episode(current: Title, series: SeriesIndex) -> str | None:
    """Next episode of the season, else the first episode of the next season."""
    series_id = current.get("series_id")
    season, episode = current.get("season"), current.get("episode")
    if not series_id or not isinstance(season, int) or not isinstance(episode, int):
        return None
    episodes = series.get(series_id, [])
    at = bisect.bisect_right(episodes, (season, episode, "\U0010ffff"))
    return episodes[at][2] if at < len(episodes) else None


def _series_entry(series_id: str, series: SeriesIndex, watched: set[str]) -> str | None:
    """First episode of the series the viewer has not watched."""
    for _season, _episode, item_id in series[series_id]:
        if item_id not in watched:
            return item_id
    return None


def choose_next(
    current_item_id: str,
    similar: list[tuple[str, float]],
    catalogue: Mapping[str, Title] | Callable[[str], Title | None],
    watched: set[str],
    viewer: ViewerProfile,
    series: SeriesIndex | None = None,
) -> AutoplayDecision:
    lookup = catalogue if callable(catalogue) else catalogue.get
    series = series or {}
    prompt = viewer.autoplay_streak >= viewer.still_watching_after
    skipped: list[tuple[str, str]] = []
    current = lookup(current_item_id)
    current_series = current.get("series_id") if current else None

    if current is not None:
        episode_id = next_episode(current, series)
        if episode_id is not None:
            why = blocked_reason(lookup(episode_id), viewer)
            if why is None:
                return AutoplayDecision(episode_id, "next_episode", prompt, ())
            skipped.append((episode_id, why))

    tried: set[str] = {current_item_id}
    for candidate_id, _score in similar:
        if candidate_id in tried:
            continue
        tried.add(candidate_id)
        candidate = lookup(candidate_id)
        candidate_series = candidate.get("series_id") if candidate is not None else None
        if candidate_series and candidate_series == current_series:
            skipped.append((candidate_id, "same_series"))
            continue
        if candidate_series in series:
            entry_id = _series_entry(candidate_series, series, watched)
            if entry_id is None:
                skipped.append((candidate_id, "watched"))
                continue
            if entry_id != candidate_id:
                if entry_id in tried:
                    continue
                tried.add(entry_id)
                candidate_id, candidate = entry_id, lookup(entry_id)
        if candidate_id in watched:
            skipped.append((candidate_id, "watched"))
            continue
        why = blocked_reason(candidate, viewer)
        if why is not None:
            skipped.append((candidate_id, why))
            continue
        return AutoplayDecision(candidate_id, "similar", prompt, tuple(skipped))
    return AutoplayDecision(None, "none", prompt, tuple(skipped))
