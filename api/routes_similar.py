"""Similar titles and autoplay-next, read from the Redis views.

- ``GET /v1/similar/{item_id}?limit=`` the co-view list (``vitrina:similar:{item}``); a catalogue title
  without a list gets the metadata cold-start list (``source: METADATA``, ``version: 0``); 404
  ``UNKNOWN_TITLE`` / ``NO_SIMILAR_LIST`` otherwise.
- ``GET /v1/autoplay-next?item_id=&user_id=&device_id=&device_type=&age_limit=&kids=&streak=`` the
  next episode of a series first, else the best similar title the viewer has not watched and may
  get (processors/coview/autoplay.py). Viewer = user_id, or ``device:<device_id>`` for a guest. The answer
  carries ``request_id``, ``surface`` (AUTOPLAY) and ``position`` (0) for the client's impression.

The catalogue (all ``vitrina:title:{item}``) is cached per API process with the series index and
the metadata index, reloaded when the catalogue version counter moves (checked at most once a
second), so a request costs three small Redis reads.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from api.auth import personal_user
from api.app import REDIS, BadRequest, choice_param, int_param, json_response, not_found, raw_json_response
from processors.coview.autoplay import ViewerProfile, build_series_index, choose_next
from processors.coview.coldstart import MetadataIndex
from sinks.catalogue_views import catalogue_version, load_titles
from sinks.redis_views import history_key, similar_key
from sinks.similar_views import parse_view
from streams.kafka.topics import viewer_key

DEVICE_TYPES = ("TV", "MOBILE", "TABLET", "WEB", "STB")
AGE_LIMITS = (0, 6, 12, 16, 18)
MAX_LIMIT = 100
CHECK_EVERY_S = 1.0
_CACHES: "weakref.WeakKeyDictionary[web.Application, TitleLookup]" = weakref.WeakKeyDictionary()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class TitleLookup:
    """The API's read-only view of the catalogue for similar lists and autoplay: titles by id, the series
    index and the metadata index, reloaded when the catalogue version moves. (The showcase builder's
    ``CatalogueCache`` is a different thing: it builds the shelf index the assembly runs on.)"""

    def __init__(self) -> None:
        self.titles: dict[str, dict] = {}
        self.series: dict = {}
        self.metadata = MetadataIndex()
        self.version: tuple[int, int] | None = None
        self.checked = 0.0
        self.lock = asyncio.Lock()

    async def refresh(self, redis: Any, force: bool = False) -> None:
        """Reload when the catalogue version moved; checked at most once a second unless forced."""
        every = 0.0 if force else CHECK_EVERY_S
        if time.monotonic() - self.checked < every:
            return
        async with self.lock:
            if time.monotonic() - self.checked < every:
                return
            version = await catalogue_version(redis)
            if version != self.version:
                titles: dict[str, dict] = {}
                metadata = MetadataIndex()
                for record in await load_titles(redis):
                    if not isinstance(record, dict) or not record.get("item_id"):
                        continue
                    record["licence_start"] = _parse_time(record.get("licence_start"))
                    record["licence_end"] = _parse_time(record.get("licence_end"))
                    titles[record["item_id"]] = record
                    metadata.add_title(record)
                self.titles, self.series, self.metadata, self.version = (
                    titles, build_series_index(titles.values()), metadata, version)
            self.checked = time.monotonic()


def _cache(request: web.Request) -> TitleLookup:
    cache = _CACHES.get(request.app)
    if cache is None:
        cache = _CACHES[request.app] = TitleLookup()
    return cache


async def _catalogue(request: web.Request, item: str | None = None) -> TitleLookup:
    """The cached catalogue; a title it does not know forces a version check (it may be new)."""
    cache = _cache(request)
    await cache.refresh(request.app[REDIS])
    if item is not None and item not in cache.titles:
        await cache.refresh(request.app[REDIS], force=True)
    return cache


def _item_param(request: web.Request) -> str:
    item = (request.query.get("item_id") or "").strip()
    if not item:
        raise BadRequest("MISSING_PARAMETER", "'item_id' is required")
    if len(item) > 200:
        raise BadRequest("BAD_PARAMETER", "'item_id' is longer than 200 characters")
    return item


def _bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest("BAD_PARAMETER", f"'{name}' must be true or false, got {raw!r}")
    return raw in ("true", "1")


def _age_param(request: web.Request) -> int:
    age = int_param(request, "age_limit", 18, 0, 18)
    if age not in AGE_LIMITS:
        raise BadRequest("BAD_PARAMETER", f"'age_limit' must be one of {', '.join(map(str, AGE_LIMITS))}, got {age}")
    return age


async def similar_list(request: web.Request, item: str) -> tuple[dict | None, str | None]:
    """(view, raw JSON) from Redis, else the metadata fallback (view, None); (None, None) when neither."""
    raw = await request.app[REDIS].get(similar_key(item))
    view = parse_view(raw)
    if view is not None:
        return view, raw
    cache = await _catalogue(request, item)
    if item not in cache.titles:
        return None, None
    items = cache.metadata.similar(item, 50)
    if not items:
        return None, None
    return {"item_id": item, "version": 0, "updated_at": None, "source": "METADATA", "support": 0.0,
            "items": [{"item_id": other, "score": round(score, 5)} for other, score in items]}, None


def _brief(title: dict | None) -> dict | None:
    if title is None:
        return None
    return {key: title.get(key) for key in ("item_id", "title", "series_id", "season", "episode", "age_rating",
                                             "adult", "kids", "genres", "release_year")}


def register(routes: web.RouteTableDef) -> None:
    @routes.get("/v1/similar/{item_id}")
    async def similar(request: web.Request) -> web.Response:
        item = request.match_info["item_id"]
        limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
        view, raw = await similar_list(request, item)
        if view is None:
            cache = await _catalogue(request, item)
            if item not in cache.titles:
                return not_found("UNKNOWN_TITLE", f"no title {item!r} in the catalogue and no similar list")
            return not_found("NO_SIMILAR_LIST", f"title {item!r} has no similar list yet")
        if raw is not None and len(view["items"]) <= limit:
            return raw_json_response(raw if isinstance(raw, str) else raw.decode())
        view["items"] = view["items"][:limit]
        return json_response(view)

    @routes.get("/v1/autoplay-next")
    async def autoplay_next(request: web.Request) -> web.Response:
        item = _item_param(request)
        device_type = choice_param(request, "device_type", DEVICE_TYPES, "TV")
        age_limit = _age_param(request)
        kids = _bool_param(request, "kids")
        streak = int_param(request, "streak", 0, 0, 1000)
        user_id = personal_user(request)  # the token's user; never another's history
        device_id = (request.query.get("device_id") or "").strip() or None
        cache = await _catalogue(request, item)
        current = cache.titles.get(item)
        if current is None:
            return not_found("UNKNOWN_TITLE", f"no title {item!r} in the catalogue")
        watched: set[str] = set()
        if user_id or device_id:
            raw_history = await request.app[REDIS].get(history_key(viewer_key({"user_id": user_id,
                                                                                "device_id": device_id})))
            try:
                history = json.loads(raw_history) if raw_history else {}
            except ValueError:
                history = {}
            watched = {w for w in history.get("watched", []) if isinstance(w, str)}
        view, _raw = await similar_list(request, item)
        ranked = [(row["item_id"], float(row["score"])) for row in view["items"]] if view else []
        viewer = ViewerProfile(user_id=user_id, device_type=device_type, now=datetime.now(timezone.utc),
                               age_limit=age_limit, kids=kids, autoplay_streak=streak)
        decision = choose_next(item, ranked, cache.titles.get, watched, viewer, cache.series)
        return json_response({
            "request_id": uuid.uuid4().hex,  # impressions of this answer carry it (processors/showcase/impressions.py)
            "surface": "AUTOPLAY",
            "position": 0,
            "item_id": item,
            "next": _brief(cache.titles.get(decision.item_id)) if decision.item_id else None,
            "reason": decision.reason,
            "still_watching_prompt": decision.still_watching_prompt,
            "similar_source": view["source"] if view else None,
            "skipped": [{"item_id": other, "why": why} for other, why in decision.skipped],
        })

