"""Similar-list views: ``vitrina:similar:{item}`` JSON and the ``similar.updated`` event of a change.

View (one JSON string per title, written with SET so a reader never sees half a list)::

    {"item_id", "version", "updated_at", "source", "support", "items": [{"item_id", "score"}]}

``version`` is the title's co-view state version (changelogged), so it only grows. The co-view
counts hash (``vitrina:coview-counts``) lets a worker score neighbours that live in another
worker's partitions.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from sinks.redis_views import COVIEW_COUNTS_KEY, similar_key

SCORE_DIGITS = 5


def similar_view(item_id: str, version: int, updated_ms: int, source: str, support: float,
                 items: Iterable[tuple[str, float]]) -> dict:
    return {
        "item_id": item_id,
        "version": int(version),
        "updated_at": datetime.fromtimestamp(updated_ms / 1000, timezone.utc).isoformat(),
        "source": source,
        "support": round(float(support), 4),
        "items": [{"item_id": other, "score": round(float(score), SCORE_DIGITS)} for other, score in items],
    }


def list_signature(view: Mapping[str, Any]) -> tuple:
    """What makes a view "changed" for readers: the items, their order and rounded scores, source, support."""
    return (view["source"], view["support"], tuple((row["item_id"], row["score"]) for row in view["items"]))


def view_json(view: Mapping[str, Any]) -> str:
    return json.dumps(view, ensure_ascii=False, separators=(",", ":"))


def queue_views(pipe: Any, views: Iterable[Mapping[str, Any]]) -> int:
    n = 0
    for view in views:
        pipe.set(similar_key(view["item_id"]), view_json(view))
        n += 1
    return n


def count_field(n: float, landmark_ms: int) -> str:
    """A title's entry in the counts hash: its stored count and landmark, exactly (``repr`` round-trips)."""
    return f"{n!r}|{landmark_ms}"


def queue_counts(pipe: Any, counts: Mapping[str, tuple[float, int]]) -> None:
    """item -> (stored count, landmark ms) of the co-view states this worker owns."""
    if counts:
        pipe.hset(COVIEW_COUNTS_KEY, mapping={item: count_field(n, landmark) for item, (n, landmark) in counts.items()})


async def fetch_counts(redis: Any, items: list[str]) -> dict[str, tuple[float, int]]:
    if not items:
        return {}
    found: dict[str, tuple[float, int]] = {}
    for item, raw in zip(items, await redis.hmget(COVIEW_COUNTS_KEY, items)):
        if raw is None:
            continue
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            n, landmark = text.split("|")
            found[item] = (float(n), int(landmark))
        except ValueError:
            continue
    return found


def parse_view(raw: str | bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        view = json.loads(raw)
    except ValueError:
        return None
    return view if isinstance(view, dict) and isinstance(view.get("items"), list) else None


def updated_event(view: Mapping[str, Any], updated_ms: int) -> dict:
    """The ``vitrina.SimilarListUpdated`` record of a written view."""
    return {
        "item_id": view["item_id"],
        "version": view["version"],
        "similar": [{"item_id": row["item_id"], "score": float(row["score"])} for row in view["items"]],
        "source": view["source"],
        "support": float(view["support"]),
        "updated_at": datetime.fromtimestamp(updated_ms / 1000, timezone.utc),
    }
