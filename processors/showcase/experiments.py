"""A/B parameters of a showcase request (KION 001: they arrive as query parameters or headers).

A request may carry ``ab_<name>=<value>`` query parameters and/or one header
``X-Vitrina-AB: <name>=<value>; <name>=<value>`` (the query wins on a name given twice), where
``<name>`` is one of ``config.AB_PARAMS`` (e.g. ``for_you.mmr_lambda``, ``for_you.model_share``,
``series_return``). ``parse_ab`` validates them against ``ShowcasePolicy.with_overrides``: an unknown
name or a bad value is an error (400), never silently dropped.

Showcases are assembled ahead of requests, so the parameters reach the assembly through the user's
experiment record (``ab_params_key``, JSON, written by the read API when a signed-in user's
parameters change, with a forced rebuild of that user); the builder passes them to ``assemble``.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from .config import AB_PARAMS, DEFAULT_POLICY
from .errors import ShowcaseInputError

AB_QUERY_PREFIX = "ab_"
AB_HEADER = "X-Vitrina-AB"
MAX_VALUE_CHARS = 32
AB_TTL_S = 30 * 86400


def ab_params_key(user_id: str) -> str:
    return f"vitrina:showcase:ab:{user_id}"


def parse_ab(query: Mapping[str, str], header: str | None) -> dict[str, str]:
    """The request's A/B parameters (validated), sorted by name; {} when there are none."""
    found: dict[str, str] = {}
    if header:
        for part in header.split(";"):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise ShowcaseInputError("invalid_param", f"{AB_HEADER} entries look like name=value, got {part!r}",
                                         field=AB_HEADER)
            found[name.strip()] = value.strip()
    for key, value in query.items():
        if key.startswith(AB_QUERY_PREFIX):
            found[key[len(AB_QUERY_PREFIX):]] = value
    for name, value in found.items():
        if name not in AB_PARAMS:
            raise ShowcaseInputError("unknown_param", f"unknown A/B parameter {name!r}; known: {', '.join(AB_PARAMS)}",
                                     field=name)
        if len(value) > MAX_VALUE_CHARS:
            raise ShowcaseInputError("invalid_param", f"A/B parameter {name!r} is too long", field=name)
    DEFAULT_POLICY.with_overrides(found)  # raises on a bad value
    return dict(sorted(found.items()))


def dumps_params(params: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(params.items())), separators=(",", ":"))


def loads_params(raw: Any) -> dict[str, str]:
    """A stored experiment record; {} when absent or unreadable (a bad record never breaks a build)."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if k in AB_PARAMS}
