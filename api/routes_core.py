"""Health and popularity: the foundation's views."""
from __future__ import annotations

from aiohttp import web

from api.app import REDIS, int_param, json_response
from sinks.redis_views import POPULAR_KEY


def register(routes: web.RouteTableDef) -> None:
    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        await request.app[REDIS].ping()
        return json_response({"status": "ok"})

    @routes.get("/v1/popular")
    async def popular(request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 20, 1, 500)
        rows = await request.app[REDIS].zrevrange(POPULAR_KEY, 0, limit - 1, withscores=True)
        return json_response({"items": [{"item_id": item, "plays": int(score)} for item, score in rows]})
