"""Uploads and playback: signed URLs are issued here and checked by the media endpoint.

GET /v1/uploads/{upload_id}   status of an upload (PROCESSED / REJECTED with the reason, dedupe link);
                              only for its uploader's token (or ops)
GET /v1/assets/{asset_id}     renditions, thumbnails and playlist with signed playback URLs
                              (?ttl_s=60..86400, default VITRINA_URL_TTL_S or 3600); a private upload's
                              asset only for its uploader (or ops), see sinks/upload_views.may_play
GET /v1/collection            the caller's collection (references to stored assets, newest first; ?user_id=
                              only the caller's own or ops). Read-only: adding / removing is an event
                              (assets.commands, `vitrina collection add|remove`).
GET /media/{object key}       the serving side: streams the object from S3 only for an unexpired URL
                              signed for exactly that key (403 MISSING_SIGNATURE / BAD_SIGNATURE /
                              EXPIRED otherwise); honours a single "Range: bytes=a-b" for players.
In production the CDN edge runs the same check (sinks.media_store.PlaybackSigner.verify).
"""
from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from api.app import REDIS, SETTINGS, int_param, json_response, not_found
from api.auth import AuthError, caller, personal_user
from processors.media.signing import VerifyResult
from sinks.asset_references import collection as collection_of
from sinks.media_store import MediaStore, MissingObject, PlaybackSigner
from sinks.redis_views import asset_access_key, asset_key, upload_status_key
from sinks.upload_views import may_play

_ASSET_ID = re.compile(r"^[0-9a-f]{32}-\d+$")
# at most 18 digits a side: a 5,000-digit number must be a 416, not an int() overflow (500)
_RANGE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")
_stores: dict[int, MediaStore] = {}


def _store(request: web.Request) -> MediaStore:
    settings = request.app[SETTINGS]
    key = id(request.app)
    if key not in _stores:
        _stores[key] = MediaStore(settings)
    return _stores[key]


def _signer(request: web.Request) -> PlaybackSigner:
    return PlaybackSigner.from_settings(request.app[SETTINGS])


def _forbidden(result: VerifyResult) -> web.Response:
    messages = {
        VerifyResult.MISSING_SIGNATURE: "playback needs a signed URL (exp, kid, sig); an object key alone is not enough",
        VerifyResult.BAD_SIGNATURE: "the signature does not match this object",
        VerifyResult.EXPIRED: "the signed URL has expired",
        VerifyResult.EXPIRY_TOO_FAR: "the signed URL expires further away than the maximum lifetime (7 days)",
    }
    return json_response({"error": result.value, "message": messages.get(result, result.value)}, status=403)


def signed_asset(asset: dict[str, Any], signer: PlaybackSigner, ttl_s: int) -> dict[str, Any]:
    fields = asset["fields"]
    renditions = [{**r, "url": signer.url(r["object_key"], ttl_s)} for r in fields["renditions"]]
    thumbnails = [{**t, "url": signer.url(t["object_key"], ttl_s)} for t in fields["thumbnails"]]
    master = fields.get("hls_master_key")
    return {"asset_id": asset["asset_id"], "original_upload_id": asset["owner"]["upload_id"],
            "duration_s": fields["duration_s"], "source_width": fields["source_width"],
            "source_height": fields["source_height"], "renditions": renditions, "thumbnails": thumbnails,
            "hls_master_url": signer.url(master, ttl_s) if master else None, "expires_in_s": ttl_s}


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive), None for the whole object, "bad" when unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return "bad"
    if match.group(1):
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    else:  # suffix range: the last N bytes
        start, end = max(0, size - int(match.group(2))), size - 1
    return "bad" if start > end or start >= size else (start, end)


def register(routes: web.RouteTableDef) -> None:
    @routes.get("/v1/uploads/{upload_id}")
    async def upload_status(request: web.Request) -> web.Response:
        upload_id = request.match_info["upload_id"]
        who = caller(request)
        if who.is_guest and not who.is_ops:
            raise AuthError(401, "UNAUTHENTICATED", "an upload's status needs its uploader's bearer token")
        raw = await request.app[REDIS].get(upload_status_key(upload_id))
        status = json.loads(raw) if raw is not None else None
        if status is None or not (who.is_ops or status.get("uploader_id") == who.user_id):
            # another user's upload answers as an unknown one: upload ids are not to be probed
            return not_found("UNKNOWN_UPLOAD", f"no answer for upload {upload_id!r} yet (or unknown)")
        return json_response(status)

    @routes.get("/v1/collection")
    async def collection(request: web.Request) -> web.Response:
        user_id = personal_user(request)
        if user_id is None:
            raise AuthError(401, "UNAUTHENTICATED", "a collection needs its owner's bearer token")
        limit = int_param(request, "limit", 100, 1, 500)
        items = await collection_of(request.app[REDIS], user_id, limit)
        return json_response({"user_id": user_id, "items": items})

    @routes.get("/v1/assets/{asset_id}")
    async def asset(request: web.Request) -> web.Response:
        asset_id = request.match_info["asset_id"]
        if not _ASSET_ID.match(asset_id):
            return json_response({"error": "BAD_ASSET_ID", "message": "an asset id is '<32 hex md5>-<size>'"},
                                 status=400)
        ttl_s = int_param(request, "ttl_s", _signer(request).ttl_s, 60, 86400)
        redis = request.app[REDIS]
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(asset_key(asset_id))
            pipe.hgetall(asset_access_key(asset_id))
            raw, entries = await pipe.execute()
        if raw is None:
            return not_found("UNKNOWN_ASSET", f"no processed asset {asset_id!r}")
        asset = json.loads(raw)
        who = caller(request)
        if not (who.is_ops or may_play(entries, asset, who.user_id)):
            if who.is_guest:
                raise AuthError(401, "UNAUTHENTICATED", "this video is private: sign in as its uploader")
            return not_found("UNKNOWN_ASSET", f"no processed asset {asset_id!r}")  # private to someone else
        return json_response(signed_asset(asset, _signer(request), ttl_s))

    @routes.get("/media/{key:.+}")
    async def media(request: web.Request) -> web.StreamResponse:
        signer = _signer(request)
        verdict = signer.verify(request.raw_path)
        if verdict is not VerifyResult.OK:
            return _forbidden(verdict)
        key = signer.object_key(request.raw_path)
        store = _store(request)
        info = await asyncio.to_thread(store.stat, key) if key else None
        if info is None:
            return not_found("UNKNOWN_OBJECT", "no such media object")
        wanted = _byte_range(request.headers.get("Range"), info.size)
        if wanted == "bad":
            return web.json_response(
                {"error": "RANGE_NOT_SATISFIABLE", "message": "give one range 'bytes=a-b' inside the object"},
                status=416, headers={"Content-Range": f"bytes */{info.size}"})
        start, end = wanted if isinstance(wanted, tuple) else (0, info.size - 1)
        length = end - start + 1
        response = web.StreamResponse(status=206 if isinstance(wanted, tuple) else 200, headers={
            "Content-Type": info.content_type, "Content-Length": str(length), "Accept-Ranges": "bytes",
            "Cache-Control": "private, max-age=60", "ETag": f'"{info.etag}"'})
        if isinstance(wanted, tuple):
            response.headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        await response.prepare(request)
        chunks = store.read(key, start, length)
        try:
            while True:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    break
                await response.write(chunk)
        except MissingObject:
            pass
        finally:
            chunks.close()
        await response.write_eof()
        return response
