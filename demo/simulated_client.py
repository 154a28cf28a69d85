"""The main job's simulated viewer: what it watches of the pages vitrina served it (pure, seeded).

This is synthetic behaviour, written down so that the online metrics the system computes can be read
against it: a viewer looks at the displayed titles of a page and starts a title with probability

    p = BASE_PLAY * POSITION_DECAY ** position * ROW_DECAY ** row * (1 + TASTE_BOOST * taste)

where ``taste`` is the share of the title's genres among the genres of the titles the viewer watched
before (0..1). A started title is watched nearly to the end (the credits: an "lvr" label) with
probability 0.3 + 0.6 * taste, otherwise for 2 % to 60 % of it; at most ``max_plays`` titles per page
(drawn in a random order), the first one a few minutes after the page was shown. The playback events
are the same shape as the event generator's (demo/eventgen.py), so every reader of ``playback``
(history, plays, co-view, the label join) sees an ordinary session.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from demo.eventgen import Viewer, playback_session

BASE_PLAY = 0.15
POSITION_DECAY = 0.8
ROW_DECAY = 0.9
TASTE_BOOST = 2.0


def tastes_of(watched: Iterable[str], genres_of: Mapping[str, Sequence[str]], top: int = 3) -> set[str]:
    """The viewer's favourite genres: the ``top`` most frequent among the titles it watched."""
    counts = Counter(g for item in watched for g in genres_of.get(item, ()))
    return {g for g, _ in counts.most_common(top)}


def taste(item_id: str, tastes: set[str], genres_of: Mapping[str, Sequence[str]]) -> float:
    genres = list(genres_of.get(item_id, ()))
    return sum(g in tastes for g in genres) / len(genres) if genres else 0.0


def play_probability(impression: Mapping[str, Any], tastes: set[str], genres_of: Mapping[str, Sequence[str]]) -> float:
    affinity = taste(impression["item_id"], tastes, genres_of)
    p = BASE_PLAY * POSITION_DECAY ** int(impression.get("position") or 0) * ROW_DECAY ** int(impression.get("row") or 0)
    return min(1.0, p * (1 + TASTE_BOOST * affinity))


def choose_plays(
    impressions: Sequence[Mapping[str, Any]],
    tastes: set[str],
    genres_of: Mapping[str, Sequence[str]],
    rng: random.Random,
    max_plays: int = 3,
) -> list[tuple[Mapping[str, Any], float]]:
    """(impression, watched fraction) of the titles the viewer starts: each displayed title is tempting
    with ``play_probability``; of the tempting ones (each title once) at most ``max_plays`` are started,
    in a random order (not the page's: the first rows would otherwise take every play)."""
    tempting: dict[str, Mapping[str, Any]] = {}
    for impression in impressions:
        if impression["item_id"] not in tempting and rng.random() < play_probability(impression, tastes, genres_of):
            tempting[impression["item_id"]] = impression
    picked = list(tempting.values())
    rng.shuffle(picked)
    chosen: list[tuple[Mapping[str, Any], float]] = []
    for impression in picked[:max_plays]:
        affinity = taste(impression["item_id"], tastes, genres_of)
        fraction = 0.99 if rng.random() < 0.3 + 0.6 * affinity else rng.uniform(0.02, 0.6)
        chosen.append((impression, fraction))
    return chosen


def watch(
    plays: Sequence[tuple[Mapping[str, Any], float]],
    *,
    viewer: Viewer,
    durations: Mapping[str, int],
    shown_at: datetime,
    session_id: str,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """The playback events of ``plays``, one after the other, starting 1-5 minutes after ``shown_at``."""
    events: list[dict[str, Any]] = []
    clock = shown_at + timedelta(seconds=rng.randint(60, 300))
    for impression, fraction in plays:
        title = {"item_id": impression["item_id"], "duration_ms": durations.get(impression["item_id"], 0)}
        played, clock = playback_session(rng, viewer, session_id, title, clock, fraction)
        events.extend(played)
        clock += timedelta(seconds=rng.randint(20, 120))
    return events
