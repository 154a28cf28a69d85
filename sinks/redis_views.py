"""Redis key layout of every materialized view, and the async client factory.

All keys start with ``vitrina:``; builders live here so writers, the read API
and the rebuild tool agree on them.
"""
from __future__ import annotations

import redis.asyncio as aioredis
import redis as syncredis

from infra.settings import Settings

PREFIX = "vitrina:"


def plays_key(item_id: str) -> str:
    return f"{PREFIX}plays:{item_id}"


POPULAR_KEY = f"{PREFIX}popular"


def async_client(settings: Settings) -> aioredis.Redis:
    return aioredis.from_url(settings.redis_url, decode_responses=True)


def sync_client(settings: Settings) -> syncredis.Redis:
    return syncredis.from_url(settings.redis_url, decode_responses=True)
