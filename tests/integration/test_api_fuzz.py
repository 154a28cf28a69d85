"""Property-based fuzzing of every route of the read API against its OpenAPI description (issue 13).

schemathesis generates requests for each operation of ``/openapi.json`` (valid and invalid parameters,
as a guest, with a user's token, with the ops key) and sends them to a real ``vitrina api`` process over
the stack's Redis (database 5, a small world of views). Every answer must be: not a 5xx, a documented
status code, of the documented content type, with a body matching its schema. The number of examples
per operation is bounded (``FUZZ_EXAMPLES``), so the run stays within a minute or two here.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Iterator

import hypothesis
import pytest
import redis as syncredis
import schemathesis
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from api.auth import TokenConfig
from api.routes_openapi import document
from infra.ports import pick_free_ports
from infra.settings import Settings
from sinks.redis_views import POPULAR_KEY, similar_key
from streams.ops.supervisor import ApiProcess, start_api

FUZZ_EXAMPLES = 40


@schemathesis.check
def no_server_error(ctx, response, case) -> None:
    """Any 5xx is a failure, except the documented "try again later": 503 with Retry-After and a JSON error
    code (a view not built yet, Redis overloaded). schemathesis' own check counts that 503 too."""
    if response.status_code < 500:
        return None
    if response.status_code == 503 and "retry-after" in {k.lower() for k in response.headers} \
            and response.json().get("error"):
        return None
    raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")


CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_api(stack: Settings) -> Iterator[tuple[ApiProcess, TokenConfig]]:
    settings = replace(stack, redis_url=stack.redis_url.rsplit("/", 1)[0] + "/5")
    client = syncredis.Redis.from_url(settings.redis_url, decode_responses=True)
    client.flushdb()
    client.zadd(POPULAR_KEY, {f"title-{i}": i for i in range(20)})
    client.set(similar_key("title-1"), json.dumps({"item_id": "title-1", "version": 1, "source": "COVIEW",
                                                   "support": 3.0, "items": [{"item_id": "title-2", "score": 0.5}]}))
    api = start_api(settings, port=pick_free_ports(1)[0], name="api-fuzz")
    try:
        yield api, TokenConfig.from_settings(settings)
    finally:
        api.stop()
        client.flushdb()
        client.close()


@pytest.fixture(params=[op.ok().label for op in schemathesis.openapi.from_dict(document()).get_all_operations()])
def operation_label(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_route_answers_within_its_contract(operation_label: str, fuzz_api) -> None:
    """Generated requests for one operation, each sent as a guest, as a signed-in user and with the ops
    key. (schemathesis' pytest plugin does not collect under this pytest; its Python API is used.)"""
    api, tokens = fuzz_api
    schema = schemathesis.openapi.from_dict(document([api.base_url]))
    operation = schema.find_operation_by_label(operation_label)
    identities = ({}, {"Authorization": f"Bearer {tokens.mint('fuzz-user')}"}, {"X-Ops-Key": tokens.ops_key})

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def fuzz(case) -> None:
        for headers in identities:
            case.call_and_validate(base_url=api.base_url, headers={**(case.headers or {}), **headers}, checks=CHECKS)

    fuzz()
