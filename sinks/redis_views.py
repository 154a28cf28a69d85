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
| ``vitrina:model:{name}:registry`` | JSON {"model", "revision", "versions": [ModelVersion records]} (copy in S3 ``registry/{name}.json``) |
| ``vitrina:model:{name}:checkpoint-request`` | ISO time an operator asked for a checkpoint (``vitrina model checkpoint``) |
| ``vitrina:asset:{asset_id}`` | JSON {"asset_id", "owner": {"upload_id", "uploader_id"}, "fields": UploadProcessed fields of the asset} |
| ``vitrina:upload:{upload_id}`` | JSON {"status": PROCESSED/REJECTED/DELETED, "upload_id", "asset_id", "deduplicated", "original_upload_id", "reason_code", "message", "updated_at"} |
| ``vitrina:asset-access:{asset_id}`` | hash upload_id -> "<private|public>:<uploader_id>" |
| ``vitrina:asset-refs:{asset_id}`` / ``vitrina:collection:{user}`` | hash user -> added_at ms / zset asset -> added_at ms |
| ``vitrina:asset-deleted:{asset_id}`` | tombstone of a reaped asset ("reaping:<ms>", then "reaped:<ms>") |
| ``vitrina:asset-gone-uploads:{asset_id}`` | set of deleted uploads (originals deleted with the asset) |

Showcase capability (appended):

| key | value |
|---|---|
| ``vitrina:history:{viewer}`` (extra fields) | ``"devices": {device_type: {"app_version", "updated_at"}}``, ``"updated_at"``; ``continue`` entries also carry ``device_type``; ``series`` entries also ``item_id`` |
| ``vitrina:titles`` / ``vitrina:shelves`` | set of catalogue item ids / shelf ids present in Redis |
| ``vitrina:shelf:{shelf_id}`` | JSON ShelfDefinition (datetimes ISO-8601) |
| ``vitrina:catalogue:version`` | hash titles, shelves: counters bumped on every catalogue / shelf write |
| ``vitrina:showcase:{variant}:{device}:age{N}`` | variant view for a request age limit N (0, 6, 12, 16) |
| ``vitrina:showcase-meta:{view_key}`` | hash version, content_hash, built_at, is_fallback, schema, decision, decided_at |
| ``vitrina:showcase-dirty`` | zset user_id -> ms when last marked (rebuilt once quiet for a moment) |
| ``vitrina:showcase-force`` | set of user ids whose next rebuild is forced (ops) |
| ``vitrina:showcase-users`` | set of user ids with a history (daily sweep) |
| ``vitrina:impressions`` / ``vitrina:impressions-hwm`` | hash item -> impressions; hash partition -> offset up to which all are counted (``impressions-hwm:{partition}``: zset of counted offsets above it) |
"""
from __future__ import annotations

import os

import redis as syncredis
import redis.asyncio as aioredis

from infra.settings import Settings

# ``VITRINA_VIEW_PREFIX`` moves every key of this layout into another namespace: ``vitrina replay
# --shadow`` / ``vitrina rebuild --shadow`` build views under ``vitrina-shadow-<id>:`` and then rename
# them over the live ``vitrina:`` keys in one transaction (streams/ops/replay.py). Writers must build keys
# with the functions and constants below, never by hand.
PREFIX = os.environ.get("VITRINA_VIEW_PREFIX", "").strip() or "vitrina:"
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


def asset_key(asset_id: str) -> str:
    return f"{PREFIX}asset:{asset_id}"


def upload_status_key(upload_id: str) -> str:
    return f"{PREFIX}upload:{upload_id}"


def asset_access_key(asset_id: str) -> str:
    """Hash upload_id -> "<private|public>:<uploader_id>" (sinks/upload_views.py: who may play it)."""
    return f"{PREFIX}asset-access:{asset_id}"


def asset_refs_key(asset_id: str) -> str:
    """Hash user_id -> added_at ms: the collections that reference the asset (sinks/asset_references.py)."""
    return f"{PREFIX}asset-refs:{asset_id}"


def collection_key(user_id: str) -> str:
    """Zset asset_id -> added_at ms: a user's collection ("add to my collection")."""
    return f"{PREFIX}collection:{user_id}"


def asset_deleted_key(asset_id: str) -> str:
    """Tombstone of a reaped asset: "reaping:<ms>" while its files are deleted, then "reaped:<ms>"."""
    return f"{PREFIX}asset-deleted:{asset_id}"


def asset_gone_uploads_key(asset_id: str) -> str:
    """Set of the asset's deleted uploads whose originals are deleted with the asset."""
    return f"{PREFIX}asset-gone-uploads:{asset_id}"


def _retry_policy(asynchronous: bool, retries: int) -> dict:
    """Ride out a Redis restart (~30 s of backoff) instead of failing: without it a restart crashed the
    agents mid-batch (Faust restarts them, but the batch in flight was lost for the views). Every view
    write is idempotent (SET/HSET/ZADD, versioned or compare-and-set scripts), so a retried write is safe."""
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.retry import Retry

    retry = AsyncRetry if asynchronous else Retry  # the async client awaits its retry object
    return {"retry": retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
            "retry_on_error": [ConnectionError, TimeoutError, BusyLoadingError]}


def async_client(settings: Settings) -> aioredis.Redis:
    return aioredis.from_url(settings.redis_url, decode_responses=True, **_retry_policy(True, settings.redis_retries))


def sync_client(settings: Settings) -> syncredis.Redis:
    return syncredis.from_url(settings.redis_url, decode_responses=True, **_retry_policy(False, settings.redis_retries))


# -- showcase capability ----------------------------------------------------------------------

def shelf_key(shelf_id: str) -> str:
    return f"{PREFIX}shelf:{shelf_id}"


TITLES_SET = f"{PREFIX}titles"
SHELVES_SET = f"{PREFIX}shelves"
CATALOGUE_VERSION_KEY = f"{PREFIX}catalogue:version"
SHOWCASE_DIRTY_KEY = f"{PREFIX}showcase-dirty"
SHOWCASE_FORCE_KEY = f"{PREFIX}showcase-force"
SHOWCASE_USERS_KEY = f"{PREFIX}showcase-users"
IMPRESSIONS_KEY = f"{PREFIX}impressions"
IMPRESSIONS_HWM_KEY = f"{PREFIX}impressions-hwm"


def variant_age_view_key(variant: str, device_type: str, age_limit: int | None) -> str:
    """A variant for a request age limit (None = no limit, the plain variant key)."""
    base = variant_view_key(variant, device_type)
    return base if age_limit is None else f"{base}:age{age_limit}"


def showcase_meta_key(view_key: str) -> str:
    return f"{PREFIX}showcase-meta:{view_key}"


# -- ranking model registry (appended) ----------------------------------------------------------

def model_registry_key(name: str) -> str:
    return f"{PREFIX}model:{name}:registry"


def model_checkpoint_request_key(name: str) -> str:
    return f"{PREFIX}model:{name}:checkpoint-request"


# Co-view capability (appended):
# ``vitrina:coview-counts`` hash item -> "<stored count>|<landmark ms>" (decayed view count of a title, for
# the similarity of neighbours owned by another worker's partitions).
COVIEW_COUNTS_KEY = f"{PREFIX}coview-counts"
