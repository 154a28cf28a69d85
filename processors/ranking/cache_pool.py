"""The device's cache pool policy after GRF (pure: the device client applies it to its local pool).

* Capacity ``Cu`` = the most titles the viewer consumed in one day over the last 7 days (at least
  ``min_capacity``, so a new device still caches something).
* Replenish: when the fresh pool holds fewer than ``0.75 x Cu`` entries, ask the server for
  ``Cu - fresh`` titles (``replenish_request``); titles already in the pool are excluded.
* Evict: entries cached more than 14 days ago (``CACHE_MAX_AGE``, the same age the offline ranking
  skips) leave the pool.
* A video the gate predicts choppy is skipped and replaced from the pool; the skipped video goes
  back into the pool (``return_choppy``): it may play fine later, from cache.
* Offline: rank the pool only (``DeviceRanker.rank_offline``).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from processors.ranking.device import CACHE_MAX_AGE
from processors.ranking.errors import RankingInputError

REPLENISH_BELOW = 0.75
CONSUMPTION_DAYS = 7


@dataclass(frozen=True)
class PoolPlan:
    capacity: int
    keep: list[dict[str, Any]]
    evicted: list[str]
    replenish: int  # titles to ask the server for (0: none)


def capacity(plays: Iterable[datetime], now: datetime, *, days: int = CONSUMPTION_DAYS, min_capacity: int = 4) -> int:
    """Cu: max titles consumed in one (UTC) day over the ``days`` days up to ``now``."""
    first: date = (now - timedelta(days=days - 1)).date()
    per_day = Counter(p.date() for p in plays if first <= p.date() <= now.date())
    return max(min_capacity, max(per_day.values(), default=0))


def plan_pool(pool: Sequence[Mapping[str, Any]], plays: Iterable[datetime], now: datetime, *,
              max_age: timedelta = CACHE_MAX_AGE, min_capacity: int = 4) -> PoolPlan:
    """What the device keeps, evicts and asks for. Pool entries: item_id, cached_at (aware datetime)."""
    cap = capacity(plays, now, min_capacity=min_capacity)
    keep, evicted = [], []
    for entry in pool:
        cached_at = entry.get("cached_at")
        if not isinstance(cached_at, datetime) or cached_at.tzinfo is None:
            raise RankingInputError("bad_timestamp", "cache entries need an aware cached_at", field="cached_at")
        (evicted.append(str(entry["item_id"])) if now - cached_at > max_age else keep.append(dict(entry)))
    if len(keep) > cap:  # over capacity: the oldest go first
        keep.sort(key=lambda e: e["cached_at"], reverse=True)
        evicted += [str(e["item_id"]) for e in keep[cap:]]
        keep = keep[:cap]
    replenish = cap - len(keep) if len(keep) < math.ceil(REPLENISH_BELOW * cap) else 0
    return PoolPlan(cap, keep, evicted, replenish)


def add_to_pool(pool: Sequence[Mapping[str, Any]], items: Iterable[Mapping[str, Any]], now: datetime,
                capacity_: int) -> list[dict[str, Any]]:
    """The pool after caching ``items`` (server replenishment or a returned choppy video), deduplicated
    by item id, at most ``capacity_`` entries (newest kept)."""
    merged: dict[str, dict[str, Any]] = {str(e["item_id"]): dict(e) for e in pool}
    for item in items:
        merged[str(item["item_id"])] = {"cached_at": now, **dict(item)}
    out = sorted(merged.values(), key=lambda e: e["cached_at"], reverse=True)
    return out[:capacity_]


def return_choppy(pool: Sequence[Mapping[str, Any]], skipped: Mapping[str, Any], now: datetime,
                  capacity_: int) -> list[dict[str, Any]]:
    """A video skipped as choppy goes back into the pool (cached now), to be played from cache later."""
    return add_to_pool(pool, [skipped], now, capacity_)


def replenish_titles(view: Mapping[str, Any], count: int, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Titles for a device's pool from its served showcase view: the model-ranked shelves first ("for
    you", "watch also", with their served scores), then the other title shelves row by row; each title
    once, none the device already holds (``exclude``)."""
    skip = set(exclude)
    shelves = [s for s in view.get("shelves", ()) if s.get("kind") not in ("SUPER_SHELF", "FAVOURITE_CHANNELS",
                                                                            "CONTINUE_WATCHING")]
    shelves.sort(key=lambda s: (not (s.get("meta") or {}).get("model_version"), s.get("row", 0)))
    out: list[dict[str, Any]] = []
    for shelf in shelves:
        meta = shelf.get("meta") or {}
        scores = meta.get("model_scores") or []
        for position, item in enumerate(shelf.get("items", ())):
            if item in skip:
                continue
            skip.add(item)
            score = scores[position] if position < len(scores) else None
            out.append({"item_id": item, "shelf_id": shelf.get("shelf_id"), "row": shelf.get("row"),
                        "position": position, "model_version": meta.get("model_version") if score is not None else None,
                        "model_score": score})
            if len(out) >= count:
                return out
    return out
