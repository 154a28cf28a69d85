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

Response: {"request_id", "surface", "view_key", "version", "fallback", "fallback_reason", "restricted",
"ab", "showcase": {...}}. ``request_id`` is new for every response; with the shelves' ``row`` and each
item's index in ``items`` (its position) it is what the client's impressions carry
(processors/showcase/impressions.py has the contract).

``GET /v1/cache-pool?device_type=&count=&exclude=a,b``: titles to replenish the device's cache pool
(GRF: the client asks when its pool falls below 0.75 x its capacity, processors/ranking/cache_pool.py),
taken from the same view ``/v1/showcase`` would serve (model-ranked shelves first), without the titles
the device already holds.

A/B parameters (KION 001): ``ab_<name>=<value>`` query parameters or an ``X-Vitrina-AB: name=value; ...``
header (processors/showcase/experiments.py); unknown names or bad values are 400. For a signed-in user
whose parameters differ from the recorded ones, the record is replaced and a forced rebuild of that
user queued (``ab.rebuild_queued``): the builder assembles the next view with them. Guests get
editorial views, built without parameters (``ab.applies``: false).
"""
from __future__ import annotations

import json
import uuid
import weakref
from typing import Any

from aiohttp import web

from api.app import REDIS, BadRequest, choice_param, int_param
from api.auth import personal_user
from processors.ranking.cache_pool import replenish_titles
from processors.showcase import ShowcaseInputError
from processors.showcase.config import DEVICE_TYPES
from processors.showcase.experiments import AB_HEADER, AB_TTL_S, ab_params_key, dumps_params, loads_params, parse_ab
from processors.showcase.rules import effective_age_limit
from processors.showcase.version import VersionKey, parse_version
from sinks.redis_views import user_view_key, variant_age_view_key
from sinks.showcase_views import (ShowcaseStore, StoredView, dumps, has_version_targeting, request_rebuild,
                                  restrict_view)

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


def new_request_id() -> str:
    return uuid.uuid4().hex


def envelope(view_key: str, found: StoredView, body: str, fallback: bool, reason: str | None,
             restricted: bool, request_id: str | None = None, ab: str = "null") -> str:
    return (f'{{"request_id":{json.dumps(request_id or new_request_id())},"surface":"HOME",'
            f'"view_key":{json.dumps(view_key)},"version":{found.version},'
            f'"fallback":{"true" if fallback else "false"},"fallback_reason":{json.dumps(reason)},'
            f'"restricted":{"true" if restricted else "false"},"ab":{ab},"showcase":{body}}}')


async def record_ab(request: web.Request, user_id: str | None, params: dict[str, str]) -> str:
    """The response's ``ab`` object; records changed parameters of a signed-in user (forced rebuild)."""
    if not params:
        return "null"
    queued = False
    if user_id is not None:
        redis = request.app[REDIS]
        key = ab_params_key(user_id)
        if loads_params(await redis.get(key)) != params:
            await redis.set(key, dumps_params(params), ex=AB_TTL_S)
            await request_rebuild(redis, [user_id], force=True)
            queued = True
    return (f'{{"params":{dumps_params(params)},"applies":{"true" if user_id is not None else "false"},'
            f'"rebuild_queued":{"true" if queued else "false"}}}')


def register(routes: web.RouteTableDef) -> None:
    @routes.get("/v1/showcase")
    async def showcase(request: web.Request) -> web.Response:
        device = choice_param(request, "device_type", DEVICE_TYPES)
        user_id = personal_user(request)
        kids = bool_param(request, "kids")
        age_limit = int_param(request, "age_limit", -1, 0, 150)
        app_version = version_param(request)
        try:
            ab_params = parse_ab(request.query, request.headers.get(AB_HEADER))
        except ShowcaseInputError as err:
            raise BadRequest("BAD_PARAMETER", str(err)) from None
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
        ab = await record_ab(request, user_id if not kids else None, ab_params)
        text = envelope(served, found, body, reason is not None, reason, restricted, ab=ab)
        return web.Response(text=text, content_type="application/json")


    @routes.get("/v1/cache-pool")
    async def cache_pool(request: web.Request) -> web.Response:
        device = choice_param(request, "device_type", DEVICE_TYPES)
        user_id = personal_user(request)
        count = int_param(request, "count", 10, 1, 100)
        raw_exclude = request.query.get("exclude", "")
        if len(raw_exclude) > 20_000:
            raise BadRequest("BAD_PARAMETER", "'exclude' is longer than 20000 characters")
        exclude = [i for i in raw_exclude.split(",") if i]
        candidates = ([user_view_key(user_id, device), variant_age_view_key("default", device, None)]
                      if user_id is not None else [variant_age_view_key("guest", device, None)])
        found = await _store(request).read_first(candidates)
        if found is None:
            return _not_ready(candidates)
        items = replenish_titles(json.loads(found.body), count, exclude)
        body = {"request_id": new_request_id(), "surface": "HOME", "view_key": candidates[found.position],
                "items": items}
        return web.Response(text=dumps(body), content_type="application/json")


def _not_ready(candidates: list[str]) -> web.Response:
    payload = {"error": "SHOWCASE_NOT_READY", "message": "no showcase has been built yet for this request",
               "views": candidates}
    return web.Response(text=dumps(payload), status=503, content_type="application/json",
                        headers={"Retry-After": "2"})
