"""Redis and S3 side of asset references (processors.asset_references decides, this applies).

Keys (sinks.redis_views): ``asset-refs:{asset}`` hash user -> added_at ms, ``collection:{user}`` zset
asset -> added_at ms, ``asset-access:{asset}`` the upload entries (written by the transcoder),
``asset-gone-uploads:{asset}`` deleted uploads whose originals go with the asset, and the tombstone
``asset-deleted:{asset}`` ("reaping:<ms>" while files are deleted, then "reaped:<ms>").

Every reference change is one Lua script that also decides, atomically, whether the asset is now
unreferenced: the tombstone is set only when the access hash and the refs hash are both empty AND this
call removed a reference (or the tombstone is already there: a reap interrupted by a crash goes on when the
command is redelivered). The transcoder writes an access entry only while there is no tombstone
(sinks.upload_views ``_HSET_UNLESS_TOMBSTONE``), so for a dedupe hit racing the last removal:

  * entry first, removal second: the removal sees a non-empty access hash, no tombstone, nothing deleted;
    the asset now belongs to the new upload.
  * removal first (tombstone set), entry second: the entry is refused; the transcoder sees the tombstone,
    drops its DONE table state and transcodes the new upload's own original once the reap has finished
    ("reaped"), then clears the tombstone.
Redis runs each script alone, so there is no third order. ADD_TO_COLLECTION is refused the same way on a
tombstoned asset: a reference is never added to an asset whose files are being deleted.

The reap itself (``reap``): the manifest goes first (the asset stops being complete: a dedupe by manifest
cannot find it), then every object under ``assets/<asset>/`` and the originals of its deleted uploads, then
the views and hashes, and the tombstone becomes "reaped". Each step is idempotent.
"""
from __future__ import annotations

import json
import time
from typing import Any

from processors.media import layout
from sinks.media_store import ORIGINALS, MediaStore, manifest_key, safe_file_name
from sinks.redis_views import (asset_access_key, asset_deleted_key, asset_gone_uploads_key, asset_key,
                               asset_refs_key, collection_key, upload_status_key)
from sinks.upload_views import view_json

REAPING, REAPED = "reaping", "reaped"

# KEYS: refs, collection, tombstone; ARGV: user, asset, now_ms
_ADD = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""

# the common tail: reap when unreferenced and (something was removed or the tombstone is already set)
_REAP_CHECK = """
local tomb = redis.call('EXISTS', KEYS[3]) == 1
if (removed == 1 or tomb) and redis.call('HLEN', KEYS[1]) == 0 and redis.call('HLEN', KEYS[2]) == 0 then
  if not tomb then
    redis.call('SET', KEYS[3], 'reaping:' .. ARGV[3])
  end
  return 1
end
return 0
"""

# KEYS: refs, access, tombstone, collection; ARGV: user, asset, now_ms
_REMOVE = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[2])
""" + _REAP_CHECK

# KEYS: access, refs, tombstone, status, gone; ARGV: upload, status json, now_ms
_DELETE_UPLOAD = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SET', KEYS[4], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[1])
""" + _REAP_CHECK


def now_ms() -> int:
    return int(time.time() * 1000)


async def read_state(redis: Any, asset_id: str, upload_id: str | None = None) -> dict[str, Any]:
    """What a decision needs: asset view, access entries, refs, the upload's status view, tombstone."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(asset_key(asset_id))
        pipe.hgetall(asset_access_key(asset_id))
        pipe.hgetall(asset_refs_key(asset_id))
        pipe.exists(asset_deleted_key(asset_id))
        if upload_id:
            pipe.get(upload_status_key(upload_id))
        answers = await pipe.execute()
    status = answers[4] if upload_id else None
    return {"asset": json.loads(answers[0]) if answers[0] else None, "entries": answers[1] or {},
            "refs": answers[2] or {}, "tombstoned": bool(answers[3]),
            "upload_status": json.loads(status) if status else None}


async def add_reference(redis: Any, asset_id: str, user_id: str, at_ms: int | None = None) -> bool:
    """False when the asset is tombstoned (the reference is not added)."""
    return bool(int(await redis.eval(_ADD, 3, asset_refs_key(asset_id), collection_key(user_id),
                                     asset_deleted_key(asset_id), user_id, asset_id, at_ms or now_ms())))


async def remove_reference(redis: Any, asset_id: str, user_id: str) -> bool:
    """Removes the user's reference; True when the asset is now unreferenced (tombstone set: reap it)."""
    return bool(int(await redis.eval(_REMOVE, 4, asset_refs_key(asset_id), asset_access_key(asset_id),
                                     asset_deleted_key(asset_id), collection_key(user_id),
                                     user_id, asset_id, now_ms())))


async def delete_upload(redis: Any, asset_id: str, upload_id: str, status: dict[str, Any]) -> bool:
    """Removes the upload's access entry, writes its DELETED status view, keeps its original for the reap;
    True when the asset is now unreferenced (tombstone set: reap it)."""
    return bool(int(await redis.eval(_DELETE_UPLOAD, 5, asset_access_key(asset_id), asset_refs_key(asset_id),
                                     asset_deleted_key(asset_id), upload_status_key(upload_id),
                                     asset_gone_uploads_key(asset_id), upload_id, view_json(status), now_ms())))


def delete_objects(store: MediaStore, asset_id: str, gone_uploads: list[str]) -> int:
    """Blocking: the manifest first, then the asset's other objects and the deleted uploads' originals."""
    client, bucket = store.client, store.bucket
    client.remove_object(bucket, manifest_key(asset_id))
    keys = store.list_keys(layout.asset_prefix(asset_id))
    for upload in gone_uploads:
        keys += store.list_keys(f"{ORIGINALS}/{safe_file_name(upload)}/")
    for key in keys:
        client.remove_object(bucket, key)
    return len(keys) + 1


async def finish_reap(redis: Any, asset_id: str) -> None:
    """After the objects are gone: the views and hashes, and the tombstone says "reaped"."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(asset_key(asset_id), asset_access_key(asset_id), asset_refs_key(asset_id),
                    asset_gone_uploads_key(asset_id))
        pipe.set(asset_deleted_key(asset_id), f"{REAPED}:{now_ms()}")
        await pipe.execute()


async def gone_uploads(redis: Any, asset_id: str) -> list[str]:
    return sorted(await redis.smembers(asset_gone_uploads_key(asset_id)))


async def tombstone(redis: Any, asset_id: str) -> str | None:
    return await redis.get(asset_deleted_key(asset_id))


async def clear_reaped_tombstone(redis: Any, asset_id: str) -> bool:
    """Delete the tombstone if the reap has finished (a new upload of the bytes starts the asset again)."""
    script = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, 7) == 'reaping' then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"""
    return bool(int(await redis.eval(script, 1, asset_deleted_key(asset_id))))


async def collection(redis: Any, user_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """The user's collection, newest first: asset id, added_at ms, and what the asset view tells."""
    members = await redis.zrevrange(collection_key(user_id), 0, limit - 1, withscores=True)
    if not members:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for asset_id, _ in members:
            pipe.get(asset_key(asset_id))
        views = await pipe.execute()
    items = []
    for (asset_id, score), raw in zip(members, views):
        view = json.loads(raw) if raw else None
        fields = (view or {}).get("fields") or {}
        items.append({"asset_id": asset_id, "added_at_ms": int(score), "title": fields.get("title"),
                      "duration_s": fields.get("duration_s"), "available": view is not None})
    return items
