"""aiohttp application of the read API. Each area adds its routes in ``api/routes_<area>.py``.

Handlers read Redis only (never Kafka, never the Faust workers), answer JSON,
and give a 4xx with a machine-readable ``error`` code on bad parameters.
"""
from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from infra.logs import get_logger
from infra.settings import Settings, load
from sinks.redis_views import async_client
from streams.plugins import import_all

REDIS = web.AppKey("redis", Any)
SETTINGS = web.AppKey("settings", Settings)
log = get_logger("vitrina.api")


class BadRequest(web.HTTPBadRequest):
    """400 with a JSON body: {"error": code, "message": ...}."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(text=_json({"error": code, "message": message}), content_type="application/json")


def _json(payload: Any) -> str:
    import json
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(text=_json(payload), status=status, content_type="application/json")


def raw_json_response(body: str, status: int = 200) -> web.Response:
    """A view stored as JSON text in Redis goes out as it is (no decode/encode per request)."""
    return web.Response(text=body, status=status, content_type="application/json")


def not_found(code: str, message: str) -> web.Response:
    return json_response({"error": code, "message": message}, status=404)


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("BAD_PARAMETER", f"'{name}' must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest("BAD_PARAMETER", f"'{name}' must be between {low} and {high}, got {value}")
    return value


def choice_param(request: web.Request, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
    raw = request.query.get(name, default)
    if raw is None:
        raise BadRequest("MISSING_PARAMETER", f"'{name}' is required; one of {', '.join(choices)}")
    value = raw.upper()
    if value not in choices:
        raise BadRequest("BAD_PARAMETER", f"'{name}' must be one of {', '.join(choices)}, got {raw!r}")
    return value


async def _close_redis(app: web.Application) -> None:
    await app[REDIS].aclose()


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or load()
    app = web.Application()
    app[SETTINGS] = settings
    app[REDIS] = async_client(settings)
    app.on_cleanup.append(_close_redis)
    routes = web.RouteTableDef()
    for module in import_all("api", prefix="routes_"):  # every api/routes_*.py adds its routes
        module.register(routes)
    app.add_routes(routes)
    return app


def serve(settings: Settings | None = None) -> None:
    settings = settings or load()
    log.info("api_listening", host=settings.api_host, port=settings.api_port)
    # VITRINA_API_REUSE_PORT=1: several API processes share the port (SO_REUSEPORT), one per core
    web.run_app(create_app(settings), host=settings.api_host, port=settings.api_port, access_log=None,
                print=None, reuse_port=os.environ.get("VITRINA_API_REUSE_PORT") == "1")
