"""What keeps the read API safe to expose: production refusals, limits, and no internals in answers.

* ``check_production(settings)``: with ``VITRINA_ENV=production`` the API refuses to start on the dev
  URL-signing key, without a JWT key or ops key, or with the default S3 credentials, naming the setting.
* ``limit_requests``: a request line or query string over ``MAX_QUERY_CHARS``, or a parameter value over
  ``MAX_PARAM_CHARS``, is 414/400; bodies over ``MAX_BODY_BYTES`` are refused by aiohttp (413).
* ``RateLimiter`` / ``rate_limit``: a token bucket per client (the token's subject, else the peer
  address); an empty bucket answers 429 with ``Retry-After``. Buckets live in the API process; behind a
  load balancer each process limits its share (documented in the README).
* ``hide_internals``: an unexpected exception is logged with a request id and answered 500 with
  ``{"error": "INTERNAL", "request_id": ...}``: never a traceback or an exception's text.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import math
import time
import uuid
from collections import OrderedDict
from typing import Awaitable, Callable

from aiohttp import web

from api.auth import caller
from infra.logs import get_logger
from infra.settings import DEV_URL_SIGNING_KEY, Settings

log = get_logger("vitrina.api")
MAX_QUERY_CHARS = 4096
MAX_PARAM_CHARS = 512
MAX_BODY_BYTES = 64 * 1024
DEFAULT_S3_CREDENTIALS = {("vitrina", "vitrina-secret"), ("minioadmin", "minioadmin")}
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE", 414: "URI_TOO_LONG"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InsecureSettingsError(RuntimeError):
    """Production settings that would expose data; ``variables`` names what to set."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.variables = [name for name, _ in problems]
        super().__init__("refusing to start with VITRINA_ENV=production: "
                         + "; ".join(f"{name}: {why}" for name, why in problems))


def check_production(settings: Settings) -> None:
    """Raise InsecureSettingsError in production on a dev secret, a missing key or default credentials."""
    if settings.env != "production":
        if settings.url_signing_key == DEV_URL_SIGNING_KEY:
            log.warning("dev_url_signing_key", message="signed playback URLs use the published dev key; "
                        "set VITRINA_URL_SIGNING_KEY (VITRINA_ENV=production refuses to start without it)")
        return
    problems: list[tuple[str, str]] = []
    if settings.url_signing_key == DEV_URL_SIGNING_KEY or len(settings.url_signing_key) < 16:
        problems.append(("VITRINA_URL_SIGNING_KEY", "the dev key (or a key under 16 characters) lets anyone "
                                                    "sign playback URLs"))
    if not settings.jwt_key:
        problems.append(("VITRINA_JWT_KEY", "no key to verify bearer tokens"))
    if not settings.ops_key or len(settings.ops_key) < 16:
        problems.append(("VITRINA_OPS_KEY", "ops routes need a key of 16 characters or more"))
    if (settings.s3_access_key, settings.s3_secret_key) in DEFAULT_S3_CREDENTIALS:
        problems.append(("VITRINA_S3_ACCESS_KEY/VITRINA_S3_SECRET_KEY", "default S3 credentials"))
    if not urlsplit(settings.redis_url).password:
        problems.append(("VITRINA_REDIS_URL", "Redis without a password: any process that reaches it reads "
                                              "and rewrites every view (redis://:PASSWORD@host:port/db)"))
    if problems:
        raise InsecureSettingsError(problems)


@web.middleware
async def hide_internals(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        # aiohttp's own answers (no route: 404, wrong method: 405, body too large: 413) as JSON too
        keep = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate", "retry-after")}
        return web.json_response({"error": _HTTP_CODES.get(exc.status, "HTTP_ERROR"), "message": exc.reason},
                                 status=exc.status, headers=keep)
    except Exception as exc:  # noqa: BLE001 - the one place an unexpected error becomes an answer
        request_id = uuid.uuid4().hex[:16]
        log.error("api_internal_error", request_id=request_id, path=request.path, error=repr(exc), exc_info=True)
        return web.json_response({"error": "INTERNAL", "message": "unexpected error; quote the request id",
                                  "request_id": request_id}, status=500)


def _too_long(code: str, message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def limit_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    if len(request.raw_path) > MAX_QUERY_CHARS:
        return _too_long("URI_TOO_LONG", f"the request target is over {MAX_QUERY_CHARS} characters", 414)
    for name, value in request.query.items():
        if len(name) > MAX_PARAM_CHARS or len(value) > MAX_PARAM_CHARS:
            return _too_long("PARAMETER_TOO_LONG", f"query parameters are limited to {MAX_PARAM_CHARS} characters")
    return await handler(request)


class RateLimiter:
    """Token buckets per client key: ``burst`` requests at once, refilled at ``per_s``; at most
    ``max_clients`` buckets kept (least recently seen dropped first: a flood of addresses costs memory
    once, not forever)."""

    def __init__(self, per_s: float, burst: int, max_clients: int = 100_000) -> None:
        self.per_s, self.burst, self.max_clients = per_s, max(1, burst), max_clients
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float | None = None) -> float:
        """0 when the request may go; else the seconds until one token is back."""
        now = time.monotonic() if now is None else now
        tokens, at = self.buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.per_s
        self.buckets[client] = (tokens, now)
        if len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return wait


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None:
        return await handler(request)
    who = caller(request)
    client = f"user:{who.user_id}" if who.user_id else f"addr:{request.remote or 'unknown'}"
    wait = limiter.take(client)
    if wait > 0:
        return web.json_response({"error": "RATE_LIMITED", "message": "too many requests from this client"},
                                 status=429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return await handler(request)
