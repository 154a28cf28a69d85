"""Catalogue views in Redis: one JSON per title and per shelf, id sets, a change counter; and the loader.

Writers put whole records (``SET``), so a reader never sees half a title. The version hash is bumped
in the same pipeline so the showcase builders notice a change with one cheap read per tick.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterable, Mapping

from sinks.redis_views import CATALOGUE_VERSION_KEY, SHELVES_SET, TITLES_SET, shelf_key, title_key


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def record_json(record: Mapping[str, Any]) -> str:
    """A decoded event record as JSON (datetimes ISO-8601)."""
    return json.dumps(record, default=_default, ensure_ascii=False, separators=(",", ":"))


def write_titles(pipe: Any, titles: Iterable[Mapping[str, Any]]) -> int:
    """Queue the titles on a pipeline (latest record per id wins); returns how many."""
    latest = {t["item_id"]: t for t in titles}
    if not latest:
        return 0
    for item, title in latest.items():
        pipe.set(title_key(item), record_json(title))
    pipe.sadd(TITLES_SET, *latest)
    pipe.hincrby(CATALOGUE_VERSION_KEY, "titles", len(latest))
    return len(latest)


def write_shelves(pipe: Any, shelves: Iterable[Mapping[str, Any]]) -> int:
    latest = {s["shelf_id"]: s for s in shelves}
    if not latest:
        return 0
    for shelf_id, shelf in latest.items():
        pipe.set(shelf_key(shelf_id), record_json(shelf))
    pipe.sadd(SHELVES_SET, *latest)
    pipe.hincrby(CATALOGUE_VERSION_KEY, "shelves", len(latest))
    return len(latest)


async def catalogue_version(redis: Any) -> tuple[int, int]:
    found = await redis.hmget(CATALOGUE_VERSION_KEY, "titles", "shelves")
    return int(found[0] or 0), int(found[1] or 0)


async def _load_json(redis: Any, ids: list[str], key: Any, chunk: int = 2000) -> list[dict]:
    records: list[dict] = []
    for start in range(0, len(ids), chunk):
        for raw in await redis.mget([key(i) for i in ids[start:start + chunk]]):
            if raw is None:
                continue
            try:
                records.append(json.loads(raw))
            except ValueError:
                continue  # a foreign value under our key: skipped, the index build lists nothing for it
    return records


async def load_titles(redis: Any) -> list[dict]:
    return await _load_json(redis, sorted(await redis.smembers(TITLES_SET)), title_key)


async def load_shelves(redis: Any) -> list[dict]:
    return await _load_json(redis, sorted(await redis.smembers(SHELVES_SET)), shelf_key)


async def fetch_series(redis: Any, items: Iterable[str]) -> dict[str, tuple[str, int, int] | None]:
    """item -> (series_id, season, episode) for episodes, None for other titles; unknown titles are left out."""
    ids = list(dict.fromkeys(items))
    if not ids:
        return {}
    found: dict[str, tuple[str, int, int] | None] = {}
    for item, raw in zip(ids, await redis.mget([title_key(i) for i in ids])):
        if raw is None:
            continue
        try:
            title = json.loads(raw)
        except ValueError:
            continue
        series_id, episode = title.get("series_id"), title.get("episode")
        found[item] = (series_id, title.get("season") or 1, episode) if series_id and isinstance(episode, int) else None
    return found
