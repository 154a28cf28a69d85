"""Who may read what through the read API (issue 13), route by route, as two users, a guest and ops.

The API runs in-process (aiohttp's TestServer) over the stack's real Redis (database 4, views of its
own written with the same sink code the workers use). Also here: signed-URL strictness, production
refusals, limits, rate limiting, hidden internals, and the OpenAPI description matching the routes.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import asyncio
import base64
import json
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import jwt
import pytest
import redis as syncredis
from aiohttp.test_utils import TestClient, TestServer

from api.auth import TokenConfig
from api.hardening import InsecureSettingsError, check_production
from infra.settings import DEV_URL_SIGNING_KEY, Settings
from processors.media.signing import MAX_TTL_S, VerifyResult, sign_url, verify
from sinks.redis_views import history_key, upload_status_key, user_view_key, variant_age_view_key
from sinks.showcase_views import ShowcaseStore, ViewWrite
from sinks.upload_views import asset_view, processed_status, write_upload_views

ALICE, BOB = "alice-sec", "bob-sec"
PRIVATE_ASSET, PUBLIC_ASSET, SHARED_ASSET = "a" * 32 + "-100", "b" * 32 + "-200", "c" * 32 + "-300"


@pytest.fixture(scope="module")
def secured(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The stack's Redis database 4 with two users' showcases, uploads (private, public, shared)."""
    settings = replace(stack, redis_url=stack.redis_url.rsplit("/", 1)[0] + "/4",
                       data_dir=tmp_path_factory.mktemp("api-security"))
    client = syncredis.Redis.from_url(settings.redis_url, decode_responses=True)
    client.flushdb()
    asyncio.run(_write_world(settings))
    yield settings
    client.flushdb()
    client.close()


def _showcase(owner: str) -> dict[str, Any]:
    return {"user_id": owner, "shelves": [{"shelf_id": f"for-{owner}", "items": [f"{owner}-pick"]}]}


def _processed(upload_id: str, uploader: str, asset_id: str, private: bool) -> dict[str, Any]:
    return {"upload_id": upload_id, "uploader_id": uploader, "asset_id": asset_id, "deduplicated": False,
            "original_upload_id": None, "private": private}


async def _write_world(settings: Settings) -> None:
    import redis.asyncio as aioredis

    redis = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        writes = [ViewWrite(view_key, json.dumps(_showcase(owner)), 1, owner, "2026-12-01T00:00:00+00:00", False,
                            "first_build", 0, None, 1, 1, None if owner == "guest" else owner, "TV")
                  for view_key, owner in ((user_view_key(ALICE, "TV"), ALICE), (user_view_key(BOB, "TV"), BOB),
                                          (variant_age_view_key("guest", "TV", None), "guest"))]
        assert await ShowcaseStore(redis).write(writes) == [True, True, True]
        fields = {"asset_id": "x", "duration_s": 1.0, "source_width": 320, "source_height": 240,
                  "renditions": [{"name": "240p", "object_key": "assets/x/240p.mp4"}], "thumbnails": [],
                  "hls_master_key": None}
        for asset_id, uploads in ((PRIVATE_ASSET, [("up-alice-1", ALICE, True)]),
                                  (PUBLIC_ASSET, [("up-bob-1", BOB, False)]),
                                  # the same content uploaded privately by alice and publicly by bob
                                  (SHARED_ASSET, [("up-alice-2", ALICE, True), ("up-bob-2", BOB, False)])):
            owner = uploads[0]
            asset = asset_view(asset_id, {"upload_id": owner[0], "uploader_id": owner[1]}, {**fields, "asset_id": asset_id})
            await write_upload_views(redis, asset, [processed_status(_processed(u, who, asset_id, private))
                                                    for u, who, private in uploads])
        await redis.set(history_key(ALICE), json.dumps({"watched": ["alice-secret-title"]}))
    finally:
        await redis.aclose()


def _run(settings: Settings, scenario: Callable[[TestClient, TokenConfig], Awaitable[None]]) -> None:
    async def main() -> None:
        from api.app import create_app
        async with TestClient(TestServer(create_app(settings))) as client:
            await scenario(client, TokenConfig.from_settings(settings))
    asyncio.run(main())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _status(client: TestClient, path: str, headers: dict[str, str] | None = None, **params: str) -> tuple[int, Any]:
    response = await client.get(path, params=params, headers=headers or {})
    body = await response.text()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, body


# -- users --------------------------------------------------------------------------------------------

def test_showcase_user_comes_from_the_token_never_from_the_query(secured: Settings) -> None:
    async def scenario(client: TestClient, tokens: TokenConfig) -> None:
        alice, bob = bearer(tokens.mint(ALICE)), bearer(tokens.mint(BOB))
        status, body = await _status(client, "/v1/showcase", device_type="TV")
        assert status == 200 and body["view_key"] == "guest:TV"                      # a guest: the guest view
        status, body = await _status(client, "/v1/showcase", device_type="TV", user_id=BOB)
        assert status == 401 and body["error"] == "UNAUTHENTICATED"                 # the id alone is not enough
        status, body = await _status(client, "/v1/showcase", alice, device_type="TV")
        assert status == 200 and body["showcase"]["user_id"] == ALICE               # the token's own view
        status, body = await _status(client, "/v1/showcase", alice, device_type="TV", user_id=ALICE)
        assert status == 200 and body["showcase"]["user_id"] == ALICE
        status, body = await _status(client, "/v1/showcase", alice, device_type="TV", user_id=BOB)
        assert status == 403 and body["error"] == "FORBIDDEN"                       # not bob's
        status, body = await _status(client, "/v1/showcase", bob, device_type="TV")
        assert status == 200 and body["showcase"]["user_id"] == BOB
        ops = {"X-Ops-Key": tokens.ops_key}
        status, body = await _status(client, "/v1/showcase", ops, device_type="TV", user_id=BOB)
        assert status == 200 and body["showcase"]["user_id"] == BOB                 # ops: support reads anyone's
        status, body = await _status(client, "/v1/autoplay-next", item_id="x", user_id=ALICE)
        assert status == 401                                                        # another's history: no
    _run(secured, scenario)


def test_bad_tokens_are_refused_not_downgraded_to_guests(secured: Settings) -> None:
    async def scenario(client: TestClient, tokens: TokenConfig) -> None:
        now = time.time()
        claims = {"sub": ALICE, "iss": tokens.issuer, "aud": tokens.audience, "iat": int(now), "exp": int(now) + 600}
        forged = {
            "expired": tokens.mint(ALICE, ttl_s=60, now=now - 3600),
            "wrong key": jwt.encode(claims, "not-the-key-" * 4, algorithm="HS256"),
            "wrong issuer": jwt.encode({**claims, "iss": "evil"}, tokens.signing_key, algorithm="HS256"),
            "wrong audience": jwt.encode({**claims, "aud": "other-api"}, tokens.signing_key, algorithm="HS256"),
            "no expiry": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, tokens.signing_key, algorithm="HS256"),
            "alg none": jwt.encode(claims, None, algorithm="none"),
            "garbage": "x.y.z",
        }
        for why, token in forged.items():
            status, body = await _status(client, "/v1/showcase", bearer(token), device_type="TV")
            assert (status, body["error"]) == (401, "INVALID_TOKEN"), why
        status, body = await _status(client, "/v1/showcase", {"Authorization": "Token abc"}, device_type="TV")
        assert status == 401
    _run(secured, scenario)


def test_asymmetric_tokens_by_configuration(secured: Settings, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = tmp_path / "jwt-public.pem"
    public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    settings = replace(secured, jwt_algorithm="ES256", jwt_key=f"@{public}")
    minted = TokenConfig.from_settings(settings, private_key=pem).mint(ALICE)

    async def scenario(client: TestClient, tokens: TokenConfig) -> None:
        status, body = await _status(client, "/v1/showcase", bearer(minted), device_type="TV")
        assert status == 200 and body["showcase"]["user_id"] == ALICE
        status, _ = await _status(client, "/v1/showcase", bearer(TokenConfig.from_settings(secured).mint(ALICE)),
                                  device_type="TV")
        assert status == 401                                                        # an HS256 token: refused
    _run(settings, scenario)


def test_vitrina_token_mints_what_the_api_accepts(secured: Settings) -> None:
    env = {"VITRINA_DATA_DIR": str(secured.data_dir), "PATH": "/usr/bin:/bin"}
    token = subprocess.run([sys.executable, "-m", "streams.cli", "token", ALICE], env=env, capture_output=True,
                           text=True, check=True, cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    assert TokenConfig.from_settings(secured).verify(token).user_id == ALICE
    refused = subprocess.run([sys.executable, "-m", "streams.cli", "token", "bad id"], env=env, capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parents[2])
    assert refused.returncode == 2 and "user id" in refused.stderr


# -- uploads and private videos ------------------------------------------------------------------------

def test_upload_status_only_for_its_uploader(secured: Settings) -> None:
    async def scenario(client: TestClient, tokens: TokenConfig) -> None:
        path = "/v1/uploads/up-alice-1"
        assert (await _status(client, path))[0] == 401
        assert (await _status(client, path, bearer(tokens.mint(BOB))))[0] == 404   # not probed either
        status, body = await _status(client, path, bearer(tokens.mint(ALICE)))
        assert status == 200 and body["uploader_id"] == ALICE and body["private"] is True
        assert (await _status(client, path, {"X-Ops-Key": tokens.ops_key}))[0] == 200
    _run(secured, scenario)


def test_private_videos_are_signed_only_for_their_owner(secured: Settings) -> None:
    async def scenario(client: TestClient, tokens: TokenConfig) -> None:
        alice, bob = bearer(tokens.mint(ALICE)), bearer(tokens.mint(BOB))
        private = f"/v1/assets/{PRIVATE_ASSET}"
        assert (await _status(client, private))[0] == 401
        assert (await _status(client, private, bob))[0] == 404
        status, body = await _status(client, private, alice)
        assert status == 200 and body["renditions"][0]["url"].count("sig=") == 1
        assert (await _status(client, private, {"X-Ops-Key": tokens.ops_key}))[0] == 200
        for public in (PUBLIC_ASSET, SHARED_ASSET):  # shared: bob's upload of the same content is public
            for who in ({}, alice, bob):
                assert (await _status(client, f"/v1/assets/{public}", who))[0] == 200, (public, who)
    _run(secured, scenario)


# -- ops ----------------------------------------------------------------------------------------------------

def test_ops_routes_need_the_ops_key(secured: Settings) -> None:
    async def scenario(client: TestClient, tokens: TokenConfig) -> None:
        status, _ = await _status(client, "/ops/status")
        assert status == 401
        response = await client.get("/ops/status")
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert (await _status(client, "/ops/status", bearer(tokens.mint(ALICE))))[0] == 403
        assert (await _status(client, "/ops/status", {"X-Ops-Key": "guess"}))[0] == 401
        assert (await _status(client, "/ops/status", {"X-Ops-Key": tokens.ops_key}))[0] == 200
        assert (await _status(client, "/ops/status", bearer(tokens.mint(None, ["ops"]))))[0] == 200
        basic = base64.b64encode(f"ops:{tokens.ops_key}".encode()).decode()
        assert (await _status(client, "/ops/status", {"Authorization": f"Basic {basic}"}))[0] == 200
    _run(secured, scenario)


# -- safe by default -------------------------------------------------------------------------------------

def test_production_refuses_dev_secrets_naming_each_setting(secured: Settings) -> None:
    # the session stack runs on generated S3 credentials: put the published defaults back
    production = replace(secured, env="production", s3_access_key="vitrina", s3_secret_key="vitrina-secret")
    with pytest.raises(InsecureSettingsError) as refused:
        check_production(production)
    assert set(refused.value.variables) == {"VITRINA_URL_SIGNING_KEY", "VITRINA_JWT_KEY", "VITRINA_OPS_KEY",
                                            "VITRINA_S3_ACCESS_KEY/VITRINA_S3_SECRET_KEY"}
    with pytest.raises(Exception, match="VITRINA_JWT_KEY"):  # no generated secret in production either
        TokenConfig.from_settings(production)
    good = replace(production, url_signing_key="k" * 32, jwt_key="j" * 32, ops_key="o" * 32,
                   s3_access_key="prod-access", s3_secret_key="prod-secret-key")
    check_production(good)
    open_redis = replace(good, redis_url=good.redis_url.replace(f":{urlsplit(good.redis_url).password}@", ""))
    assert not urlsplit(open_redis.redis_url).password
    with pytest.raises(InsecureSettingsError) as no_password:
        check_production(open_redis)
    assert set(no_password.value.variables) == {"VITRINA_REDIS_URL"}
    assert urlsplit(good.redis_url).password not in str(no_password.value)
    assert DEV_URL_SIGNING_KEY not in str(refused.value)
    env = {"VITRINA_ENV": "production", "VITRINA_DATA_DIR": str(secured.data_dir), "PATH": "/usr/bin:/bin",
           "VITRINA_REDIS_URL": secured.redis_url}
    run = subprocess.run([sys.executable, "-m", "streams.cli", "api"], env=env, capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 2 and "VITRINA_URL_SIGNING_KEY" in run.stderr and "VITRINA_JWT_KEY" in run.stderr


def test_limits_rate_and_hidden_internals(secured: Settings) -> None:
    limited = replace(secured, api_rate_per_s="2", api_rate_burst=3)

    async def scenario(client: TestClient, tokens: TokenConfig) -> None:
        alice = bearer(tokens.mint(ALICE))
        answers = [(await _status(client, "/v1/showcase", alice, device_type="TV"))[0] for _ in range(5)]
        assert answers[:3] == [200, 200, 200] and 429 in answers[3:]
        response = await client.get("/v1/showcase", params={"device_type": "TV"}, headers=alice)
        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
        assert (await _status(client, "/v1/showcase", bearer(tokens.mint(BOB)), device_type="TV"))[0] == 200
    _run(limited, scenario)

    async def limits(client: TestClient, tokens: TokenConfig) -> None:
        assert (await _status(client, "/v1/popular", limit="1" * 600))[0] == 400
        assert (await client.get("/v1/popular?" + "x=1&" * 1200)).status == 414
        assert (await client.post("/v1/popular", data=b"x" * 200_000)).status in (405, 413)
        # a stored status no code can read: 500 with a request id, no exception text
        raw = syncredis.Redis.from_url(secured.redis_url)
        raw.set(upload_status_key("up-broken"), b"{not json")
        response = await client.get("/v1/uploads/up-broken", headers={"X-Ops-Key": tokens.ops_key})
        body = await response.text()
        assert response.status == 500 and json.loads(body)["error"] == "INTERNAL" and "request_id" in body
        assert "Traceback" not in body and "JSONDecodeError" not in body and "Expecting" not in body
    _run(secured, limits)


# -- signed URLs -------------------------------------------------------------------------------------------

def test_signed_urls_have_one_spelling_and_a_bounded_life() -> None:
    secret, now = "s" * 32, 1_800_000_000
    good = sign_url("k1", "/assets/a/240p.mp4", now + 600, secret)
    path, query = good.split("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    assert verify(good, secret, now) is VerifyResult.OK
    exp = params["exp"]
    for spelling in (f"+{exp}", f"{exp[:3]}_{exp[3:]}", f" {exp}", f"{exp} ", f"0{exp}", f"{exp}.0"):
        forged = f"{path}?exp={spelling.replace(' ', '%20').replace('+', '%2B')}&kid=k1&sig={params['sig']}"
        assert verify(forged, secret, now) is VerifyResult.BAD_SIGNATURE, spelling
    assert verify(f"{good}&sig=AAAA", secret, now) is VerifyResult.BAD_SIGNATURE            # two signatures
    assert verify(f"{path}?sig=AAAA&{query}", secret, now) is VerifyResult.BAD_SIGNATURE     # ...in any order
    assert verify(f"{good}&exp={exp}", secret, now) is VerifyResult.BAD_SIGNATURE
    far = sign_url("k1", "/assets/a/240p.mp4", now + MAX_TTL_S + 3600, secret)               # signed with the key
    assert verify(far, secret, now) is VerifyResult.EXPIRY_TOO_FAR
    year_2100 = sign_url("k1", "/assets/a/240p.mp4", datetime(2100, 1, 1, tzinfo=timezone.utc), secret)
    assert verify(year_2100, secret, now) is VerifyResult.EXPIRY_TOO_FAR
    assert verify(good, secret, now + 601) is VerifyResult.EXPIRED


def test_a_huge_range_header_is_a_416_not_a_500() -> None:
    from api.routes_media import _byte_range
    assert _byte_range("bytes=" + "9" * 5000 + "-", 1000) == "bad"
    assert _byte_range("bytes=0-" + "9" * 5000, 1000) == "bad"
    assert _byte_range("bytes=10-19", 1000) == (10, 19)


# -- the contract -------------------------------------------------------------------------------------------

def test_openapi_describes_exactly_the_served_routes(secured: Settings) -> None:
    from api.app import create_app

    app = create_app(secured)
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}

    async def scenario(client: TestClient, tokens: TokenConfig) -> None:
        status, document = await _status(client, "/openapi.json")
        assert status == 200 and document["openapi"].startswith("3.")
        described = {(method, path) for path, item in document["paths"].items() for method in item}
        assert described == served
    _run(secured, scenario)


def test_a_cached_verification_ends_with_the_token(secured: Settings) -> None:
    from dataclasses import replace as dc_replace

    from api.auth import AuthError

    tokens = dc_replace(TokenConfig.from_settings(secured), leeway_s=0)
    short = tokens.mint(ALICE, ttl_s=1)
    assert tokens.verify(short).user_id == ALICE
    assert tokens.verify(short).user_id == ALICE          # answered from the cache
    time.sleep(1.2)
    with pytest.raises(AuthError):
        tokens.verify(short)                               # expired: the cache does not outlive the token
