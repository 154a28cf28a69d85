"""aiohttp application of the read API. Each area adds its routes in ``api/routes_<area>.py``.

Handlers read Redis only (never Kafka, never the Faust workers), answer JSON,
and give a 4xx with a machine-readable ``error`` code on bad parameters.

Under load nothing answers 500: a request waits a bounded time (``api_redis_wait_s``) for one of the
process's ``api_redis_pool_size`` Redis connections (a ``BlockingConnectionPool``), and when none frees
up, or Redis is down or too slow (``api_redis_timeout_s``), it gets 503 with ``Retry-After`` and a JSON
``error`` (OVERLOADED or REDIS_UNAVAILABLE). Slow clients are disconnected (``serve``).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import BadRequest  # noqa: F401 - the routes' import point
from infra.logs import get_logger
from infra.settings import Settings, load
from streams.runtime.plugins import import_all

REDIS = web.AppKey("redis", Any)
SETTINGS = web.AppKey("settings", Settings)
log = get_logger("vitrina.api")


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


def redis_client(settings: Settings) -> aioredis.Redis:
    """The API's Redis client: at most ``api_redis_pool_size`` connections; a command waits up to
    ``api_redis_wait_s`` for a free one (then ``ConnectionError("No connection available.")``), and
    connecting or answering may take ``api_redis_timeout_s``. One quick retry only: a request is
    better answered 503 at once than after the workers' 30 s of reconnect backoff."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, decode_responses=True,
        max_connections=settings.api_redis_pool_size, timeout=settings.api_redis_wait_s,
        socket_timeout=settings.api_redis_timeout_s, socket_connect_timeout=settings.api_redis_timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError])
    return aioredis.Redis.from_pool(pool)


def unavailable(code: str, message: str, retry_after_s: int) -> web.Response:
    return web.Response(text=_json({"error": code, "message": message}), status=503, content_type="application/json",
                        headers={"Retry-After": str(retry_after_s)})


# monotonic times: "warned" (the last 503 logged), "failed" (Redis itself last failed a request)
_UNAVAILABLE_STATE = web.AppKey("unavailable_state", dict)


@web.middleware
async def redis_unavailable(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Redis out of reach (pool exhausted for ``api_redis_wait_s``, down, too slow): 503 + Retry-After."""
    try:
        return await handler(request)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        settings, state = request.app[SETTINGS], request.app[_UNAVAILABLE_STATE]
        now = time.monotonic()
        pool_wait = isinstance(exc.__cause__, (asyncio.TimeoutError, TimeoutError)) and "No connection available" in str(exc)
        if not pool_wait:
            state["failed"] = now
        if pool_wait and now - state["failed"] > 5.0:  # busy, not failing (a pool of failing connects looks busy)
            code, message = "OVERLOADED", (f"all {settings.api_redis_pool_size} Redis connections stayed busy for "
                                           f"{settings.api_redis_wait_s:g} s; retry later")
        else:
            code, message = "REDIS_UNAVAILABLE", f"the views' Redis is unavailable ({type(exc).__name__}); retry later"
        if now - state["warned"] >= 1.0:  # at most one line a second under overload
            state["warned"] = now
            log.warning("api_unavailable", code=code, path=request.path, error=f"{type(exc).__name__}: {exc}")
        return unavailable(code, message, settings.api_retry_after_s)


def create_app(settings: Settings | None = None) -> web.Application:
    """The API: refuses insecure production settings first (api/hardening.py), then every request goes
    through, in order: internal errors hidden, size limits, authentication (api/auth.py), the per-client
    rate limit, and the 503 answer when Redis is out of reach."""
    from api.auth import TOKENS, TokenConfig, authenticate
    from api.hardening import MAX_BODY_BYTES, RATE_LIMITER, RateLimiter, check_production, hide_internals
    from api.hardening import limit_requests, rate_limit

    settings = settings or load()
    check_production(settings)
    app = web.Application(middlewares=[hide_internals, limit_requests, authenticate, rate_limit, redis_unavailable],
                          client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[TOKENS] = TokenConfig.from_settings(settings)
    if settings.api_rate_limit_per_s > 0:
        app[RATE_LIMITER] = RateLimiter(settings.api_rate_limit_per_s, settings.api_rate_burst)
    app[REDIS] = redis_client(settings)
    app[_UNAVAILABLE_STATE] = {"warned": -60.0, "failed": -60.0}
    app.on_cleanup.append(_close_redis)
    routes = web.RouteTableDef()
    for module in import_all("api", prefix="routes_"):  # every api/routes_*.py adds its routes
        module.register(routes)
    app.add_routes(routes)
    return app


def serve(settings: Settings | None = None) -> None:
    """Serve until SIGTERM/SIGINT. Slow clients are disconnected: aiohttp's keep-alive timer
    (``api_keepalive_timeout_s``) starts when a connection opens and after each response and is not
    extended by partial data, so a client that sends its request head byte by byte (slowloris) is closed
    as surely as an idle one; a request body no handler read is drained for ``api_read_timeout_s`` at most."""
    settings = settings or load()
    log.info("api_listening", host=settings.api_host, port=settings.api_port,
             redis_pool=settings.api_redis_pool_size, redis_wait_s=settings.api_redis_wait_s,
             keepalive_timeout_s=settings.api_keepalive_timeout_s)
    # VITRINA_API_REUSE_PORT=1: several API processes share the port (SO_REUSEPORT), one per core
    web.run_app(create_app(settings), host=settings.api_host, port=settings.api_port, access_log=None,
                print=None, reuse_port=settings.api_reuse_port,
                keepalive_timeout=settings.api_keepalive_timeout_s, lingering_time=settings.api_read_timeout_s,
                backlog=1024)  # a burst of connections queues in the kernel instead of being retried after 1 s
