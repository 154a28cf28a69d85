"""GET /v1/showcase of the read API (a real `vitrina api` process over the stack's Redis).

The views are made by the real builder (``ShowcaseBuilder.tick``) from a sample catalogue written to
Redis, on a Redis database of their own (db 1) so this module can start from an empty database
without disturbing the session's worker (which uses db 0).
"""
from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from datetime import datetime, timezone
from typing import Iterator

import pytest
import redis as syncredis

from api.auth import dev_client
from api.client import ApiError
from infra.ports import pick_free_ports
from infra.settings import Settings
from demo.showcase_sample import sample_world
from sinks.catalogue_views import write_shelves, write_titles
from sinks.redis_views import async_client, history_key, showcase_key
from sinks.showcase_views import mark_dirty
from streams.capabilities.showcase.builder import ShowcaseBuilder
from streams.ops.supervisor import start_api

NOW = datetime.now(timezone.utc)


def _history(continue_watching: list[str], watched: list[str], device: str, app_version: str = "3.4.1") -> dict:
    return {"watched": watched, "continue": [{"item_id": i, "position_ms": 600_000, "duration_ms": 5_400_000,
                                              "updated_at": NOW.isoformat(), "device_type": device}
                                             for i in continue_watching],
            "series": {}, "devices": {device: {"app_version": app_version, "updated_at": NOW.isoformat()}},
            "updated_at": NOW.isoformat()}


async def _build(settings: Settings, world, histories: dict[str, dict]) -> None:
    redis = async_client(settings)
    try:
        await redis.flushdb()
        async with redis.pipeline(transaction=False) as pipe:
            write_titles(pipe, world.titles)
            write_shelves(pipe, world.shelf_defs)
            for user, history in histories.items():
                pipe.set(history_key(user), json.dumps(history))
            mark_dirty(pipe, list(histories), 0)
            await pipe.execute()
        builder = ShowcaseBuilder(redis, settle_s=0)
        builder.catalogue.debounce_s = 0
        while True:
            report = await builder.tick(NOW)
            if not report.users and not report.index_rebuilt:
                break
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def api_world(stack: Settings) -> Iterator[dict]:
    settings = replace(stack, redis_url=stack.redis_url.rsplit("/", 1)[0] + "/1")
    world = sample_world(1500, seed=11, now=NOW)
    grown = [t for t in world.titles if not t["kids"] and not t["adult"] and t["episode"] is None
             and t["age_rating"] >= 16 and not t["device_rights"]]
    rng = random.Random(3)
    histories = {
        "api-u1": _history([grown[0]["item_id"]], [t["item_id"] for t in rng.sample(grown, 8)], "TV"),
        "api-u2": _history([], [t["item_id"] for t in rng.sample(grown, 3)], "MOBILE", app_version="3.2.0"),
    }
    asyncio.run(_build(settings, world, histories))
    api = start_api(settings, port=pick_free_ports(1)[0], name="api-test")
    client = syncredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        yield {"client": dev_client(settings, api.base_url), "redis": client, "world": world, "histories": histories,
               "ages": {t["item_id"]: t["age_rating"] for t in world.titles},
               "adult": {t["item_id"] for t in world.titles if t["adult"]}}
    finally:
        client.close()
        api.stop()


def _error(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("params, code", [
    ({"device_type": "FRIDGE"}, "BAD_PARAMETER"),
    ({"device_type": None}, "MISSING_PARAMETER"),
    ({"device_type": "TV", "age_limit": "twelve"}, "BAD_PARAMETER"),
    ({"device_type": "TV", "age_limit": "-1"}, "BAD_PARAMETER"),
    ({"device_type": "TV", "age_limit": "1000"}, "BAD_PARAMETER"),
    ({"device_type": "TV", "kids": "maybe"}, "BAD_PARAMETER"),
    ({"device_type": "TV", "app_version": "latest"}, "BAD_PARAMETER"),
    ({"device_type": "TV", "user_id": ""}, "BAD_PARAMETER"),
    ({"device_type": "TV", "user_id": "has space"}, "BAD_PARAMETER"),
])
def test_bad_parameters_get_a_400_with_a_code(api_world, params, code):
    error = _error(lambda: api_world["client"].get("/v1/showcase", **params))
    assert (error.status, error.code) == (400, code)
    assert error.message


def test_personal_view_round_trip_through_the_python_client(api_world):
    response = api_world["client"].showcase("api-u1", "TV")
    stored = json.loads(api_world["redis"].get(showcase_key("user:api-u1:TV")))
    assert response["view_key"] == "user:api-u1:TV"
    assert response["fallback"] is False and response["fallback_reason"] is None
    assert response["version"] == stored["meta"]["version"] == 1
    assert response["showcase"] == stored
    shelves = {s["kind"]: s for s in response["showcase"]["shelves"]}
    assert shelves["CONTINUE_WATCHING"]["items"] == [api_world["histories"]["api-u1"]["continue"][0]["item_id"]]
    watched = set(api_world["histories"]["api-u1"]["watched"])
    assert not watched & {i for s in response["showcase"]["shelves"] for i in s["items"]}


def test_missing_personal_view_falls_back_to_the_editorial_showcase(api_world):
    response = api_world["client"].showcase("api-nobody", "TV")
    assert response["view_key"] == "default:TV"
    assert response["fallback"] is True and response["fallback_reason"] == "personal_view_missing"
    assert response["showcase"]["meta"]["is_fallback"] is True
    assert len(response["showcase"]["shelves"]) >= 4
    # the user has a view on MOBILE only: on TV they get the editorial one too
    assert api_world["client"].showcase("api-u2", "TV")["view_key"] == "default:TV"


def test_guest_gets_the_guest_variant_without_adult_titles(api_world):
    guest = api_world["client"].showcase(None, "WEB")
    assert guest["view_key"] == "guest:WEB" and guest["fallback_reason"] == "guest"
    shown = {i for s in guest["showcase"]["shelves"] for i in s["items"]}
    assert shown and not shown & api_world["adult"]
    adult_view = api_world["client"].showcase("api-nobody", "WEB")["showcase"]
    assert {i for s in adult_view["shelves"] for i in s["items"]} & api_world["adult"], \
        "the adult catalogue should reach the logged-in editorial showcase, else this test proves nothing"


def test_age_limit_cuts_the_personal_view_or_serves_the_variant_for_that_age(api_world):
    ages = api_world["ages"]
    full = api_world["client"].showcase("api-u1", "TV")
    assert max(ages.get(i, 0) for s in full["showcase"]["shelves"] for i in s["items"]) > 12
    limited = api_world["client"].showcase("api-u1", "TV", age_limit=14)
    items = [i for s in limited["showcase"]["shelves"] for i in s["items"]]
    assert items and max(ages.get(i, 0) for i in items) <= 12
    if limited["fallback"]:
        assert limited["view_key"] == "default:TV:age12"
    else:
        assert limited["restricted"] is True and limited["view_key"] == "user:api-u1:TV"
    strict = api_world["client"].showcase("api-u1", "TV", age_limit=0)
    assert max(ages.get(i, 0) for s in strict["showcase"]["shelves"] for i in s["items"]) == 0


def test_kids_flag_serves_the_kids_showcase(api_world):
    response = api_world["client"].showcase("api-u1", "TABLET", kids="true", age_limit=6)
    assert response["view_key"] == "kids:TABLET:age6" and response["fallback_reason"] == "kids"
    kids_titles = {t["item_id"] for t in api_world["world"].titles if t["kids"]}
    items = {i for s in response["showcase"]["shelves"] for i in s["items"]}
    assert items and items <= kids_titles
    assert max(api_world["ages"][i] for i in items) <= 6


def test_client_version_outside_a_shelf_target_removes_that_shelf(api_world):
    mobile = api_world["client"].showcase("api-u2", "MOBILE")
    targeted = [s for s in mobile["showcase"]["shelves"] if s.get("min_app_version") or s.get("max_app_version")]
    assert targeted, "the sample template has version-targeted shelves on MOBILE for app 3.2.0"
    old_client = api_world["client"].showcase("api-u2", "MOBILE", app_version="2.0.0")
    kept = {s["shelf_id"] for s in old_client["showcase"]["shelves"]}
    for shelf in targeted:
        if shelf.get("min_app_version"):
            assert shelf["shelf_id"] not in kept


def test_no_view_at_all_is_a_503_with_a_code(api_world, stack):
    api_world["redis"].delete(showcase_key("guest:STB"))
    error = _error(lambda: api_world["client"].showcase(None, "STB"))
    assert (error.status, error.code) == (503, "SHOWCASE_NOT_READY")
