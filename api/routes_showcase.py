"""GET /v1/showcase: a user's home page for one device type, from Redis only.

Which stored view answers:
  * kids=true                -> ``kids:{device}[:age{N}]`` (the kids editorial showcase)
  * a signed-in caller       -> the personal view ``user:{id}:{device}`` of the bearer token's user
                                (api/auth.py; a ``user_id`` parameter must name that same user); when
                                it is missing, the editorial ``default:{device}[:age{N}]``
  * a guest (no token)       -> ``guest:{device}[:age{N}]`` (never adult titles)
N is the request age limit rounded down to a rating step (0, 6, 12, 16); 18+ means no limit.
One Lua call returns the first stored candidate with its version, so a fallback costs no extra
round trip. Fast path: the stored JSON is wrapped as it is, never decoded. Only a personal view
with an age limit, or with version-targeted shelves and a client version, is decoded and cut down
(``restrict_view``); if too few shelves survive, the editorial variant for that age is served.

Response: {"view_key", "version", "fallback", "fallback_reason", "restricted", "showcase": {...}}.
"""
from __future__ import annotations

import json
import weakref
from typing import Any

from aiohttp import web

from api.app import REDIS, BadRequest, choice_param, int_param
from api.auth import personal_user
from processors.showcase import ShowcaseInputError
from processors.showcase.config import DEVICE_TYPES
from processors.showcase.rules import effective_age_limit
from processors.showcase.version import VersionKey, parse_version
from sinks.redis_views import user_view_key, variant_age_view_key
from sinks.showcase_views import ShowcaseStore, StoredView, dumps, has_version_targeting, restrict_view

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_stores: "weakref.WeakKeyDictionary[Any, ShowcaseStore]" = weakref.WeakKeyDictionary()


def _store(request: web.Request) -> ShowcaseStore:
    redis = request.app[REDIS]
    store = _stores.get(redis)
    if store is None:
        store = _stores[redis] = ShowcaseStore(redis)
    return store


def bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest("BAD_PARAMETER", f"'{name}' must be true or false, got {raw!r}")


def version_param(request: web.Request) -> VersionKey | None:
    raw = request.query.get("app_version")
    if raw is None or raw == "":
        return None
    try:
        return parse_version(raw)
    except ShowcaseInputError:
        raise BadRequest("BAD_PARAMETER", f"'app_version' must look like 1.2.3, got {raw!r}") from None


def envelope(view_key: str, found: StoredView, body: str, fallback: bool, reason: str | None,
             restricted: bool) -> str:
    return (f'{{"view_key":{json.dumps(view_key)},"version":{found.version},'
            f'"fallback":{"true" if fallback else "false"},"fallback_reason":{json.dumps(reason)},'
            f'"restricted":{"true" if restricted else "false"},"showcase":{body}}}')


def register(routes: web.RouteTableDef) -> None:
    @routes.get("/v1/showcase")
    async def showcase(request: web.Request) -> web.Response:
        device = choice_param(request, "device_type", DEVICE_TYPES)
        user_id = personal_user(request)
        kids = bool_param(request, "kids")
        age_limit = int_param(request, "age_limit", -1, 0, 150)
        app_version = version_param(request)
        step = effective_age_limit(None if age_limit < 0 else age_limit)
        if kids:
            candidates, reason = [variant_age_view_key("kids", device, step)], "kids"
        elif user_id is not None:
            candidates, reason = [user_view_key(user_id, device), variant_age_view_key("default", device, step)], None
        else:
            candidates, reason = [variant_age_view_key("guest", device, step)], "guest"
        store = _store(request)
        found = await store.read_first(candidates)
        if found is None:
            return _not_ready(candidates)
        served = candidates[found.position]
        personal = reason is None and found.position == 0
        body, restricted = found.body, False
        if personal and (step is not None or (app_version is not None and has_version_targeting(body))):
            cut = restrict_view(json.loads(body), step, app_version)
            if cut is None:  # the age limit / client version leaves too little: the editorial variant
                rest = candidates[1:]
                found = await store.read_first(rest)
                if found is None:
                    return _not_ready(rest)
                served, personal, reason, body = rest[found.position], False, "restricted_below_minimum", found.body
            else:
                body, restricted = dumps(cut), True
        if reason is None:
            reason = "personal_view_missing" if not personal else ("personal_build_fell_back" if found.is_fallback else None)
        text = envelope(served, found, body, reason is not None, reason, restricted)
        return web.Response(text=text, content_type="application/json")


def _not_ready(candidates: list[str]) -> web.Response:
    payload = {"error": "SHOWCASE_NOT_READY", "message": "no showcase has been built yet for this request",
               "views": candidates}
    return web.Response(text=dumps(payload), status=503, content_type="application/json",
                        headers={"Retry-After": "2"})
