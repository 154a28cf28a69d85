"""Small builders for showcase tests: contract-shaped title/shelf dicts and a tiny hand-made world."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from processors.showcase import CatalogueIndex, Stats, Title

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def title_dict(item_id: str, **overrides: Any) -> dict[str, Any]:
    record = {
        "item_id": item_id, "title": item_id, "original_title": item_id, "description": "", "genres": ["drama"],
        "tags": [], "age_rating": 12, "kids": False, "adult": False, "paid": False,
        "licence_start": None, "licence_end": None, "device_rights": [], "boost": False,
        "series_id": None, "season": None, "episode": None, "editorial_flags": [],
        "duration_ms": 90 * 60_000, "release_year": 2020, "rating": 7.0, "updated_at": NOW - DAY,
    }
    record.update(overrides)
    return record


def title(item_id: str, **overrides: Any) -> Title:
    return Title.from_dict(title_dict(item_id, **overrides))


def shelf_dict(shelf_id: str, kind: str, **overrides: Any) -> dict[str, Any]:
    record = {
        "shelf_id": shelf_id, "kind": kind, "title": shelf_id, "template_slot": None, "device_types": [],
        "min_app_version": None, "max_app_version": None, "item_ids": [], "rule": None, "links": [],
        "kids": False, "updated_at": NOW - DAY,
    }
    record.update(overrides)
    return record


def rule(**overrides: Any) -> dict[str, Any]:
    record = {"genres": [], "tags": [], "min_year": None, "max_age_rating": None, "kids_only": False, "sort": "POPULAR", "limit": 100}
    record.update(overrides)
    return record


def ids(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(start, start + n)]


def vod_world(
    shelves: dict[str, list[str]],
    titles: list[dict[str, Any]] | None = None,
    *,
    extra_shelves: list[dict[str, Any]] | None = None,
    ctr: dict[str, float] | None = None,
    similar: dict[str, list[tuple[str, float]]] | None = None,
    **policy_kwargs: Any,
) -> CatalogueIndex:
    """An index whose showcase is a list of editorial VOD shelves (in the given order) plus extras;
    every title id mentioned gets a plain drama title unless ``titles`` defines it."""
    from processors.showcase import ShowcasePolicy

    known = {t["item_id"]: t for t in (titles or [])}
    for items in shelves.values():
        for item in items:
            known.setdefault(item, title_dict(item))
    defs = [shelf_dict(name, "VOD", item_ids=items) for name, items in shelves.items()]
    defs += extra_shelves or []
    policy = ShowcasePolicy(**policy_kwargs)
    return CatalogueIndex.build(
        known.values(), defs, Stats(popularity={}, ctr=ctr or {}), now=NOW, policy=policy, similar=similar or {}
    )
