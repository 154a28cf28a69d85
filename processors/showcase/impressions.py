"""The impression contract of served pages: what a client reports for what it showed (pure).

Every ``/v1/showcase`` response carries ``request_id`` (new per response) and ``surface`` ("HOME");
each shelf of ``showcase.shelves`` carries ``row`` (its 0-based place in the built page) and its
``items``, where an item's ``position`` is its 0-based index in ``items``. Shelves re-ranked by the
serving model also carry ``meta.model_version`` and ``meta.model_scores`` (one per item, the served
final score). Every ``/v1/autoplay-next`` response carries ``request_id``, ``surface`` ("AUTOPLAY") and
``position`` (0: the one title proposed).

For each title it actually displayed, the client publishes a ``vitrina.RankingImpression`` on
``ranking.impressions`` with: ``impression_id`` (unique; ``{request_id}:{row}:{position}`` here),
``request_id``, ``row``, ``position``, ``shelf_id``, ``surface``, ``item_id``, the viewer
(``user_id`` or ``device_id``), ``device_type``, ``recent_watched`` and ``context`` as it knows them,
``pxtr`` (zeros: no upstream server scores), ``model_version`` / ``model_score`` copied from the
shelf, and ``event_time`` = when it was shown. The label join then labels them with the playback
that follows (processors/ranking/labels.py), so the trainer learns from vitrina's own pages and the
online metrics are kept per serving version.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

ZERO_PXTR = {"evr": 0.0, "lvr": 0.0, "svr": 0.0, "fpr": 0.0}
RANKED_SURFACES = ("HOME", "WATCH_ALSO", "AUTOPLAY", "FEED", "SEARCH")


def _context(context: Mapping[str, Any] | None, duration_ms: int, shown_at: datetime) -> dict[str, Any]:
    base = dict(context or {})
    return {
        "network_kbps": int(base.get("network_kbps") or 0),
        "device_score": float(base.get("device_score", 0.5)),
        "cached_ratio": float(base.get("cached_ratio") or 0.0),
        "item_duration_ms": int(duration_ms or 0),
        "hour_of_day": int(base.get("hour_of_day", shown_at.hour)),
    }


def page_impressions(
    response: Mapping[str, Any],
    *,
    user_id: str | None,
    device_id: str,
    device_type: str,
    shown_at: datetime,
    visible: int | None = None,
    recent_watched: Sequence[str] = (),
    context: Mapping[str, Any] | None = None,
    durations: Mapping[str, int] | None = None,
    kinds: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Impressions of the titles of a showcase response the client displayed: the first ``visible``
    of each shelf (all when None), shelves of ``kinds`` only (all title shelves when None)."""
    request_id = response["request_id"]
    surface = response.get("surface") or "HOME"
    durations = durations or {}
    out: list[dict[str, Any]] = []
    shelves = (response.get("showcase") or {}).get("shelves") or []
    for index, shelf in enumerate(shelves):
        if shelf.get("kind") in ("SUPER_SHELF", "FAVOURITE_CHANNELS") or (kinds is not None and shelf.get("kind") not in kinds):
            continue
        row = int(shelf.get("row", index))
        meta = shelf.get("meta") or {}
        scores = meta.get("model_scores") or []
        items = list(shelf.get("items") or [])
        for position, item in enumerate(items[:visible] if visible is not None else items):
            score = scores[position] if position < len(scores) else None
            out.append({
                "impression_id": f"{request_id}:{row}:{position}",
                "request_id": request_id,
                "user_id": user_id,
                "device_id": device_id,
                "device_type": device_type,
                "item_id": item,
                "position": position,
                "row": row,
                "shelf_id": shelf.get("shelf_id"),
                "surface": surface,
                "recent_watched": list(recent_watched)[:20],
                "pxtr": dict(ZERO_PXTR),
                "context": _context(context, durations.get(item, 0), shown_at),
                "labels": None,
                "model_version": meta.get("model_version") if score is not None else None,
                "model_score": float(score) if score is not None else None,
                "event_time": shown_at,
            })
    return out


def autoplay_impression(
    response: Mapping[str, Any],
    *,
    user_id: str | None,
    device_id: str,
    device_type: str,
    shown_at: datetime,
    recent_watched: Sequence[str] = (),
    context: Mapping[str, Any] | None = None,
    duration_ms: int = 0,
) -> dict[str, Any] | None:
    """The impression of the title an autoplay-next response proposed (None when it proposed none)."""
    nxt = response.get("next")
    if not nxt:
        return None
    request_id = response["request_id"]
    return {
        "impression_id": f"{request_id}:-1:{response.get('position', 0)}",
        "request_id": request_id,
        "user_id": user_id,
        "device_id": device_id,
        "device_type": device_type,
        "item_id": nxt["item_id"],
        "position": int(response.get("position", 0)),
        "row": -1,
        "shelf_id": None,
        "surface": response.get("surface") or "AUTOPLAY",
        "recent_watched": list(recent_watched)[:20],
        "pxtr": dict(ZERO_PXTR),
        "context": _context(context, duration_ms, shown_at),
        "labels": None,
        "model_version": None,
        "model_score": None,
        "event_time": shown_at,
    }
