"""Redis key layout of every materialized view, and the client factories.

All keys start with ``vitrina:``; builders live here so writers, the read API and
the rebuild tool agree on them. JSON views are stored as one string per key
(written with SET, so a reader never sees half a view).

| key | value |
|---|---|
| ``vitrina:plays:{item}`` | hash plays, events, updated_ms |
| ``vitrina:popular`` | zset item -> plays |
| ``vitrina:title:{item}`` | JSON CatalogueTitle (datetimes ISO-8601) |
| ``vitrina:history:{viewer}`` | JSON {"watched": [...], "continue": [{item_id, position_ms, duration_ms, updated_at}], "series": {series_id: {"season", "episode"}}} |
| ``vitrina:similar:{item}`` | JSON {"item_id", "version", "updated_at", "source", "support", "items": [{"item_id", "score"}]} |
| ``vitrina:showcase:{view_key}`` | JSON showcase view; view_key = user:{id}:{device} / guest:{device} / kids:{device} / default:{device} |
| ``vitrina:model:{name}:current`` | JSON manifest of the Production model version |
"""
from __future__ import annotations

import redis as syncredis
import redis.asyncio as aioredis

from infra.settings import Settings

PREFIX = "vitrina:"
POPULAR_KEY = f"{PREFIX}popular"


def plays_key(item_id: str) -> str:
    return f"{PREFIX}plays:{item_id}"


def title_key(item_id: str) -> str:
    return f"{PREFIX}title:{item_id}"


def history_key(viewer: str) -> str:
    return f"{PREFIX}history:{viewer}"


def similar_key(item_id: str) -> str:
    return f"{PREFIX}similar:{item_id}"


def showcase_key(view_key: str) -> str:
    return f"{PREFIX}showcase:{view_key}"


def user_view_key(user_id: str, device_type: str) -> str:
    return f"user:{user_id}:{device_type}"


def variant_view_key(variant: str, device_type: str) -> str:
    """variant: guest | kids | default (the editorial "pumpkin")."""
    return f"{variant}:{device_type}"


def model_current_key(name: str) -> str:
    return f"{PREFIX}model:{name}:current"


def async_client(settings: Settings) -> aioredis.Redis:
    return aioredis.from_url(settings.redis_url, decode_responses=True)


def sync_client(settings: Settings) -> syncredis.Redis:
    return syncredis.from_url(settings.redis_url, decode_responses=True)
