"""Who is asking: bearer tokens (JWT, verified with PyJWT) and the ops key.

Every request gets a ``Principal`` (``request[PRINCIPAL]``) before its handler runs:
  * no ``Authorization`` header              -> a guest (guest views, public assets);
  * ``Authorization: Bearer <JWT>``          -> the token's ``sub`` as the user, its ``roles`` claim
    (a list, or a space-separated string) as roles. Signature, ``exp``, ``iss`` and ``aud`` are checked
    (``VITRINA_JWT_*``); a bad or expired token is 401 INVALID_TOKEN, never a silent guest;
  * ``X-Ops-Key: <key>``                      -> the ops role (``VITRINA_OPS_KEY``; constant-time compare).
Personal routes take the user from the principal, never from a query parameter: ``personal_user``
refuses a ``user_id`` parameter that is not the caller's own (ops may read anyone's, for support).

In dev, a missing JWT secret or ops key is generated once into the data dir (infra/secrets.py) and
``vitrina token`` mints tokens with it; in production they must be configured (api/hardening.py).
"""
from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import jwt
from aiohttp import web

from api.errors import BadRequest, JsonError
from infra.secrets import dev_secret
from infra.settings import Settings

OPS_ROLE = "ops"
OPS_KEY_HEADER = "X-Ops-Key"
SYMMETRIC = ("HS256", "HS384", "HS512")
ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA")
MAX_TOKEN_CHARS = 8192
MAX_USER_ID = 128
VERIFIED_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class Principal:
    user_id: str | None = None              # None: a guest
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_ops(self) -> bool:
        return OPS_ROLE in self.roles

    @property
    def is_guest(self) -> bool:
        return self.user_id is None


GUEST = Principal()
PRINCIPAL = web.RequestKey("principal", Principal)


class AuthError(JsonError):
    """401 (who are you?) or 403 (not yours), JSON body; a 401 carries a Bearer challenge."""

    def __init__(self, status: int, code: str, message: str) -> None:
        challenge = "invalid_token" if code == "INVALID_TOKEN" else "invalid_request"
        super().__init__(status, code, message,
                         {"WWW-Authenticate": f'Bearer error="{challenge}"'} if status == 401 else None)


def _key_text(value: str) -> str:
    """A key given inline or as ``@/path/to/key.pem``."""
    return Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value


@dataclass(frozen=True)
class TokenConfig:
    """How tokens are checked (and, for ``vitrina token``, minted)."""

    algorithm: str
    verify_key: str
    issuer: str
    audience: str
    leeway_s: int
    ops_key: str
    signing_key: str | None = None   # HS*: the shared secret; RS/ES: the private key, only where minting
    # verified tokens -> (principal, exp): a client sends the same token with every request, and checking
    # its signature again costs more than serving the view; entries end at the token's expiry
    _verified: dict[str, tuple[Principal, float]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, private_key: str | None = None) -> "TokenConfig":
        algorithm = settings.jwt_algorithm
        if algorithm not in SYMMETRIC + ASYMMETRIC:
            raise ValueError(f"VITRINA_JWT_ALGORITHM={algorithm!r} is not supported; use one of "
                             f"{', '.join(SYMMETRIC + ASYMMETRIC)}")
        if settings.jwt_key:
            key = _key_text(settings.jwt_key)
        elif algorithm in SYMMETRIC:
            key = dev_secret(settings, "jwt-hmac.key", "VITRINA_JWT_KEY")
        else:
            raise ValueError(f"VITRINA_JWT_KEY must hold the public key (PEM or @path) for {algorithm}")
        ops_key = settings.ops_key or dev_secret(settings, "ops.key", "VITRINA_OPS_KEY")
        signing = key if algorithm in SYMMETRIC else (_key_text(private_key) if private_key else None)
        return cls(algorithm, key, settings.jwt_issuer, settings.jwt_audience, settings.jwt_leeway_s, ops_key,
                   signing)

    def mint(self, user_id: str | None, roles: Iterable[str] = (), ttl_s: int = 3600,
             now: float | None = None) -> str:
        """A signed token (dev tool and tests; production tokens come from the identity provider)."""
        if self.signing_key is None:
            raise ValueError(f"minting {self.algorithm} tokens needs the private key (--private-key)")
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "aud": self.audience, "iat": issued, "exp": issued + ttl_s}
        if user_id is not None:
            claims["sub"] = user_id
        if roles:
            claims["roles"] = sorted(set(roles))
        return jwt.encode(claims, self.signing_key, algorithm=self.algorithm)

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; AuthError(401) for anything else. A token verified before is
        answered from a bounded cache until its ``exp`` (plus the leeway, as PyJWT would accept it)."""
        hit = self._verified.get(token)
        if hit is not None:
            if time.time() < hit[1] + self.leeway_s:
                return hit[0]
            del self._verified[token]
        principal, expires = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(401, "INVALID_TOKEN", f"the bearer token is longer than {MAX_TOKEN_CHARS} characters")
        try:
            claims = jwt.decode(token, self.verify_key, algorithms=[self.algorithm], audience=self.audience,
                                issuer=self.issuer, leeway=self.leeway_s,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "INVALID_TOKEN", "the bearer token has expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(401, "INVALID_TOKEN", f"the bearer token was refused: {exc}") from None
        subject, roles = claims.get("sub"), claims.get("roles", ())
        if subject is not None and (not isinstance(subject, str) or not valid_user_id(subject)):
            raise AuthError(401, "INVALID_TOKEN", f"'sub' must be 1-{MAX_USER_ID} printable characters")
        if isinstance(roles, str):
            roles = roles.split()
        if not isinstance(roles, (list, tuple)) or not all(isinstance(r, str) for r in roles):
            raise AuthError(401, "INVALID_TOKEN", "'roles' must be a list of strings")
        return Principal(subject, frozenset(roles)), float(claims["exp"])

    def ops_key_matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self.ops_key.encode("utf-8"))


def valid_user_id(raw: str) -> bool:
    return bool(raw) and len(raw) <= MAX_USER_ID and raw.isprintable() and not any(c.isspace() for c in raw)


TOKENS = web.AppKey("tokens", TokenConfig)


def principal_of(request: web.Request) -> Principal:
    config = request.app[TOKENS]
    header = request.headers.get("Authorization")
    ops = request.headers.get(OPS_KEY_HEADER)
    principal = GUEST
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "basic" and token.strip():  # a browser on the ops page: any user, the ops key
            ops = _basic_password(token.strip())
        elif scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "INVALID_TOKEN", "use 'Authorization: Bearer <token>'")
        else:
            principal = config.verify(token.strip())
    if ops is not None:
        if not config.ops_key_matches(ops):
            raise AuthError(401, "BAD_OPS_KEY", f"the {OPS_KEY_HEADER} header does not match the ops key")
        principal = Principal(principal.user_id, principal.roles | {OPS_ROLE})
    return principal


def _basic_password(credentials: str) -> str:
    import base64
    import binascii
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError(401, "BAD_OPS_KEY", "malformed Basic credentials") from None
    return decoded.partition(":")[2]


@web.middleware
async def authenticate(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    request[PRINCIPAL] = principal_of(request)
    return await handler(request)


def caller(request: web.Request) -> Principal:
    return request.get(PRINCIPAL, GUEST)


def require_ops(request: web.Request) -> Principal:
    who = caller(request)
    if not who.is_ops:
        if who.is_guest:
            error = AuthError(401, "UNAUTHENTICATED", f"ops routes need the {OPS_KEY_HEADER} header, a token with "
                                                      "the ops role, or (a browser) Basic auth with the ops key")
            error.headers["WWW-Authenticate"] = 'Basic realm="vitrina ops", charset="UTF-8"'
            raise error
        raise AuthError(403, "FORBIDDEN", "this route needs the ops role")
    return who


def personal_user(request: web.Request) -> str | None:
    """The user whose personal views this request may read: the token's subject. A ``user_id`` query
    parameter is accepted only when it names the caller (or the caller is ops); None for a guest."""
    who = caller(request)
    asked = request.query.get("user_id")
    if asked is None:
        return who.user_id
    if not valid_user_id(asked):
        raise BadRequest("BAD_PARAMETER", f"'user_id' must be 1-{MAX_USER_ID} printable characters without spaces")
    if who.is_ops or asked == who.user_id:
        return asked
    if who.is_guest:
        raise AuthError(401, "UNAUTHENTICATED", "a personal view needs a bearer token; 'user_id' alone is not "
                                                "enough (omit it for the guest view)")
    raise AuthError(403, "FORBIDDEN", "'user_id' names another user; a token reads its own views only")


def dev_client(settings: Settings, base_url: str, **kwargs: Any) -> Any:
    """A ``VitrinaClient`` that signs in as whichever user it asks for, with this stack's token key
    (the demo's simulated devices, tests). Real clients get their token from the identity provider."""
    from api.client import VitrinaClient

    config = TokenConfig.from_settings(settings)
    return VitrinaClient(base_url, token_for=lambda user_id: config.mint(user_id) if valid_user_id(user_id) else None,
                         **kwargs)
