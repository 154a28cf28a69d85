"""The read API's OpenAPI 3 description, served at GET /openapi.json.

Written by hand next to the routes (aiohttp has no schema generation): tests/integration/test_api_security.py
checks that every route the application serves is described here and nothing else, and a
schemathesis run (tests/integration/test_api_fuzz.py) sends generated requests to every operation and checks the
answers against it: no 5xx, only documented status codes, bodies matching their schemas.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from processors.showcase.config import AB_PARAMS, DEVICE_TYPES
from processors.showcase.experiments import AB_HEADER, AB_QUERY_PREFIX

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Bad parameter", 401: "No or bad credentials", 403: "Not yours", 404: "Not found",
            413: "Request body too large", 414: "Request target too long", 429: "Rate limited (see Retry-After)",
            500: "Unexpected error (no detail; a request id for the log)",
            503: "Not ready, overloaded or Redis unavailable (see Retry-After)"}
    return {str(status): _json(ERROR, text[status]) for status in statuses}


COMMON = (400, 414, 429, 503)
PERSONAL = COMMON + (401, 403)


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string", "minLength": 1},
            "description": description}


OBJECT = {"type": "object"}
DEVICE = {"type": "string", "enum": list(DEVICE_TYPES)}
BOOL = {"type": "string", "enum": ["true", "false", "1", "0"]}
USER_ID = _query("user_id", {"type": "string", "minLength": 1, "maxLength": 128},
                 "Optional; must name the bearer token's own user (ops may name anyone)")
SECURED = [{}, {"bearer": []}]   # anonymous allowed (guest views); a token for personal views
OPS = [{"opsKey": []}, {"bearer": []}, {"opsBasic": []}]

SIMILAR_VIEW = {"type": "object", "required": ["item_id", "items"], "properties": {
    "item_id": {"type": "string"}, "version": {"type": "integer"}, "source": {"type": "string"},
    "support": {"type": "number"},
    "items": {"type": "array", "items": {"type": "object", "required": ["item_id", "score"], "properties": {
        "item_id": {"type": "string"}, "score": {"type": "number"}}}}}}


def document(servers: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    paths: dict[str, Any] = {
        "/healthz": {"get": {"operationId": "health", "summary": "Liveness: Redis answers", "security": [{}],
                             "responses": {"200": _json({"type": "object", "required": ["status"]}, "Healthy"),
                                           **_errors(*COMMON)}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [{}],
                                  "responses": {"200": _json(OBJECT, "OpenAPI 3 document"), **_errors(*COMMON)}}},
        "/v1/popular": {"get": {
            "operationId": "popular", "summary": "Most played titles", "security": [{}],
            "parameters": [_query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "How many")],
            "responses": {"200": _json({"type": "object", "required": ["items"], "properties": {"items": {
                "type": "array", "items": {"type": "object", "required": ["item_id", "plays"]}}}}, "Titles"),
                **_errors(*COMMON)}}},
        "/v1/showcase": {"get": {
            "operationId": "showcase", "summary": "The caller's home page (guest without a token)",
            "security": SECURED,
            "parameters": [_query("device_type", DEVICE, "Device type", required=True), USER_ID,
                           _query("kids", BOOL, "The kids showcase"),
                           _query("age_limit", {"type": "integer", "minimum": 0, "maximum": 150}, "Viewer's age limit"),
                           _query("app_version", {"type": "string", "pattern": r"^\d+(\.\d+){0,2}$"},
                                  "Client version (version-targeted shelves)"),
                           *[_query(AB_QUERY_PREFIX + name, {"type": "string", "maxLength": 32},
                                    f"A/B parameter {name} (recorded for a signed-in user; the next build uses it)")
                             for name in AB_PARAMS],
                           {"name": AB_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
                            "description": "A/B parameters as 'name=value; name=value' (query ab_<name> wins)"}],
            "responses": {"200": _json({"type": "object",
                                        "required": ["request_id", "surface", "view_key", "version", "fallback",
                                                     "showcase"],
                                        "properties": {"request_id": {"type": "string"},
                                                       "surface": {"type": "string", "enum": ["HOME"]},
                                                       "ab": {"type": "object", "nullable": True},
                                                       "view_key": {"type": "string"}, "version": {"type": "integer"},
                                                       "fallback": {"type": "boolean"},
                                                       "fallback_reason": {"type": "string", "nullable": True},
                                                       "restricted": {"type": "boolean"}, "showcase": OBJECT}},
                                       "A stored showcase view"), **_errors(*PERSONAL)}}},
        "/v1/cache-pool": {"get": {
            "operationId": "cachePool", "summary": "Titles to replenish the device's cache pool (GRF)",
            "security": SECURED,
            "parameters": [_query("device_type", DEVICE, "Device type", required=True), USER_ID,
                           _query("count", {"type": "integer", "minimum": 1, "maximum": 100}, "How many"),
                           _query("exclude", {"type": "string", "maxLength": 20000},
                                  "Comma-separated titles the device already caches")],
            "responses": {"200": _json({"type": "object", "required": ["request_id", "view_key", "items"],
                                        "properties": {"request_id": {"type": "string"},
                                                       "surface": {"type": "string"},
                                                       "view_key": {"type": "string"},
                                                       "items": {"type": "array", "items": {
                                                           "type": "object", "required": ["item_id"]}}}},
                                       "Titles, model-ranked shelves first"), **_errors(*PERSONAL)}}},
        "/v1/similar/{item_id}": {"get": {
            "operationId": "similar", "summary": "Titles watched with this one", "security": [{}],
            "parameters": [_path("item_id", "Title id"),
                           _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "How many")],
            "responses": {"200": _json(SIMILAR_VIEW, "Similar list"), **_errors(*COMMON, 404)}}},
        "/v1/autoplay-next": {"get": {
            "operationId": "autoplayNext", "summary": "What plays next after a title", "security": SECURED,
            "parameters": [_query("item_id", {"type": "string", "minLength": 1, "maxLength": 200}, "Title id",
                                  required=True), USER_ID,
                           _query("device_id", {"type": "string", "maxLength": 128}, "A guest's device"),
                           _query("device_type", DEVICE, "Device type"),
                           _query("age_limit", {"type": "integer", "enum": [0, 6, 12, 16, 18]}, "Age limit"),
                           _query("kids", BOOL, "Kids profile"),
                           _query("streak", {"type": "integer", "minimum": 0, "maximum": 1000}, "Autoplays so far")],
            "responses": {"200": _json({"type": "object",
                                        "required": ["request_id", "surface", "position", "item_id", "next", "reason"],
                                        "properties": {"request_id": {"type": "string"},
                                                       "surface": {"type": "string", "enum": ["AUTOPLAY"]},
                                                       "position": {"type": "integer"}}}, "Next title"),
                          **_errors(*PERSONAL, 404)}}},
        "/v1/models/{name}/current": {"get": {
            "operationId": "currentModel", "summary": "The Production model manifest devices download",
            "security": [{}], "parameters": [_path("name", "Model name")],
            "responses": {"200": _json(OBJECT, "Manifest"), **_errors(*COMMON, 404)}}},
        "/v1/models/{name}/versions": {"get": {
            "operationId": "modelVersions", "summary": "The registry's versions of a model", "security": [{}],
            "parameters": [_path("name", "Model name")],
            "responses": {"200": _json({"type": "object", "required": ["model", "versions"]}, "Versions"),
                          **_errors(*COMMON, 404)}}},
        "/v1/uploads/{upload_id}": {"get": {
            "operationId": "uploadStatus", "summary": "Status of one of the caller's uploads",
            "security": [{"bearer": []}, {"opsKey": []}], "parameters": [_path("upload_id", "Upload id")],
            "responses": {"200": _json({"type": "object", "required": ["status", "upload_id", "uploader_id"],
                                        "properties": {
                                            "status": {"type": "string", "enum": [
                                                "PENDING", "INSPECTING", "ENCODING", "PROCESSED", "REJECTED",
                                                "DELETED"]},
                                            "state": {"type": ["string", "null"], "enum": [
                                                "PENDING", "INSPECTING", "ENCODING", "READY", "REJECTED", "DELETED",
                                                None]},
                                            "percent": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
                                            "stage": {"type": ["string", "null"]}}},
                                       "In flight (state, percent, stage) or final: processed or rejected"),
                          **_errors(*PERSONAL, 404)}}},
        "/v1/collection": {"get": {
            "operationId": "collection", "summary": "The caller's collection: references to stored assets",
            "security": [{"bearer": []}, {"opsKey": []}],
            "parameters": [USER_ID, _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "How many")],
            "responses": {"200": _json({"type": "object", "required": ["user_id", "items"], "properties": {
                "user_id": {"type": "string"},
                "items": {"type": "array", "items": {
                    "type": "object", "required": ["asset_id", "added_at_ms", "available"], "properties": {
                        "asset_id": {"type": "string"}, "added_at_ms": {"type": "integer"},
                        "title": {"type": "string", "nullable": True},
                        "duration_s": {"type": "number", "nullable": True},
                        "available": {"type": "boolean"}}}}}},
                                       "Newest first"), **_errors(*PERSONAL)}}},
        "/v1/assets/{asset_id}": {"get": {
            "operationId": "asset", "summary": "Renditions with signed playback URLs (private: uploader only)",
            "security": SECURED,
            "parameters": [_path("asset_id", "'<32 hex md5>-<size>'"),
                           _query("ttl_s", {"type": "integer", "minimum": 60, "maximum": 86400}, "URL lifetime")],
            "responses": {"200": _json({"type": "object", "required": ["asset_id", "renditions", "thumbnails"]},
                                       "Signed asset"), **_errors(*PERSONAL, 404)}}},
        "/media/{key}": {"get": {
            "operationId": "media", "summary": "A media object, for a signed URL only", "security": [{}],
            "parameters": [_path("key", "Object key"),
                           _query("exp", {"type": "string"}, "Expiry (epoch seconds)"),
                           _query("kid", {"type": "string"}, "Signing key id"),
                           _query("sig", {"type": "string"}, "Signature"),
                           {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
                            "description": "One byte range: bytes=a-b"}],
            "responses": {"200": {"description": "The object", "content": {"*/*": {}}},
                          "206": {"description": "A byte range", "content": {"*/*": {}}},
                          "416": _json(ERROR, "Unsatisfiable range"),
                          "403": _json(ERROR, "Missing, bad, expired or too long-lived signature"),
                          **_errors(*COMMON, 404)}}},
        "/ops/status": {"get": {
            "operationId": "opsStatusPage", "summary": "Ops status page (HTML)", "security": OPS,
            "responses": {"200": {"description": "Page", "content": {"text/html": {}}}, **_errors(*PERSONAL)}}},
        "/ops/status.json": {"get": {
            "operationId": "opsStatus", "summary": "Health, lag, dead letters, workers, models", "security": OPS,
            "parameters": [_query("dead_letters", {"type": "integer", "minimum": 1, "maximum": 100}, "Per topic"),
                           _query("group", {"type": "string", "maxLength": 249}, "Consumer group")],
            "responses": {"200": _json({"type": "object", "required": ["health"]}, "Status"), **_errors(*PERSONAL)}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "vitrina read API", "version": "1",
                 "description": "Views materialized from the event streams. Personal routes read the user from "
                                "a bearer JWT; ops routes need the ops key."},
        "servers": [{"url": url} for url in servers or []],
        "paths": paths,
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"}}}},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "opsKey": {"type": "apiKey", "in": "header", "name": "X-Ops-Key"},
                "opsBasic": {"type": "http", "scheme": "basic", "description": "Any user name, the ops key"}},
        },
    }


def register(routes: web.RouteTableDef) -> None:
    @routes.get("/openapi.json")
    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document())
