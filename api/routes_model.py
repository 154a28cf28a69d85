"""Model views: the Production manifest devices download, and the registry's versions."""
from __future__ import annotations

import json

from aiohttp import web

from api.app import REDIS, BadRequest, json_response, not_found, raw_json_response
from sinks.redis_views import model_current_key, model_registry_key
from processors.ranking.registry import model_name_ok


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not model_name_ok(name):
        raise BadRequest("BAD_MODEL_NAME", "model names are 1-64 of a-z 0-9 _ . - (e.g. 'ranking')")
    return name


def register(routes: web.RouteTableDef) -> None:
    @routes.get("/v1/models/{name}/current")
    async def current_model(request: web.Request) -> web.Response:
        name = _name(request)
        body = await request.app[REDIS].get(model_current_key(name))
        if body is None:
            return not_found("MODEL_NOT_FOUND", f"no Production version of model {name!r}")
        return raw_json_response(body)

    @routes.get("/v1/models/{name}/versions")
    async def model_versions(request: web.Request) -> web.Response:
        name = _name(request)
        body = await request.app[REDIS].get(model_registry_key(name))
        if body is None:
            return not_found("MODEL_NOT_FOUND", f"no registered versions of model {name!r}")
        registry = json.loads(body)
        versions = [
            {"version": v["version"], "state": v["state"], "created_at": v["created_at"], "sha256": v["sha256"],
             "metrics": v.get("metrics", {}), "evaluations": len(v.get("evaluations", [])),
             "last_transition": (v.get("transitions") or [None])[-1]}
            for v in sorted(registry.get("versions", []), key=lambda v: v["created_at"], reverse=True)
        ]
        return json_response({"model": name, "revision": registry.get("revision", 0), "versions": versions})
