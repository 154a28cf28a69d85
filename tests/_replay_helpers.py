"""Helpers for the replay, rebuild and crash-safety tests: a private stack, one input, view snapshots.

These tests flush Redis, restart the broker or kill workers, so they run on a stack of their own
(free ports, own data dir) and their own workers (unique app id, own web port), never on the
session's shared ``stack``/``worker``.

Snapshot comparison ignores exactly these fields, which legitimately differ between two runs on the
same input (everything else must be equal):

* ``vitrina:showcase:*`` JSON: ``meta.built_at`` (wall clock of the build), ``version`` and
  ``meta.version`` (per-key write counter: how many times a view was rewritten depends on batching).
* ``vitrina:showcase-meta:*`` hash: ``built_at``, ``decided_at``, ``version``, ``decision`` (the
  reason of the last decision, e.g. first_build / changed / unchanged, depends on how often it was built).
* ``vitrina:catalogue:version`` hash: write counters bumped once per catalogue batch (batching).
* ``vitrina:showcase-dirty`` / ``vitrina:showcase-force``: the builder's work queue (empty once settled).
* ``vitrina:history:*`` JSON: ``updated_at`` at the top level (wall clock of the write).
"""
from __future__ import annotations

from _waiting import wait_for as _wait_for
from processors.pipeline_input import PipelineInput, make_pipeline_input

import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import redis

from infra import settings as settings_module
from infra.settings import Settings
from infra.stack import EmbeddedStack, free_port_env

IGNORED_JSON_FIELDS = {"showcase": ({"meta": ("built_at", "version")}, "version"),
                       "history": ((), "updated_at")}
IGNORED_HASH_FIELDS = {"showcase-meta": {"built_at", "decided_at", "version", "decision"},
                       "catalogue": {"titles", "shelves"}}
IGNORED_FAMILIES = {"showcase-dirty", "showcase-force"}


def private_settings(data_dir: Path, **overrides: Any) -> Settings:
    env = free_port_env(data_dir)
    values: dict[str, Any] = {"data_dir": Path(env["VITRINA_DATA_DIR"]), "s3_endpoint": env["VITRINA_S3_ENDPOINT"],
                              "kafka_bootstrap": env["VITRINA_KAFKA_BOOTSTRAP"], "redis_url": env["VITRINA_REDIS_URL"]}
    values.update(overrides)
    return dataclasses.replace(settings_module.load(), **values)


def start_private_stack(data_dir: Path) -> tuple[EmbeddedStack, Settings]:
    from streams.topics import ensure_topics

    settings = private_settings(data_dir, broker_storage="s3")
    stack = EmbeddedStack(settings, die_with_parent=True)
    stack.up()
    ensure_topics(settings)
    return stack, settings


def private_stack_fixtures(name: str) -> tuple[Any, Any]:
    """Module-scoped ``private`` (Settings of a stack of the module's own) and ``client`` (a str-valued
    Redis client on it) fixtures: ``private, client = private_stack_fixtures("replay-stack")``."""
    import pytest

    @pytest.fixture(scope="module")
    def private(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN202 - a pytest generator fixture
        stack, settings = start_private_stack(tmp_path_factory.mktemp(name))
        try:
            yield settings
        finally:
            stack.down()

    @pytest.fixture(scope="module")
    def client(private: Settings):  # noqa: ANN202
        connection = redis.Redis.from_url(private.redis_url, decode_responses=True)
        yield connection
        connection.close()

    return private, client


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = 180.0, every_s: float = 0.5) -> Any:
    return _wait_for(predicate, what, timeout_s, every_s)


# -- the input -------------------------------------------------------------------------------------

Input = PipelineInput


def make_input(titles: int = 150, requests: int = 400, seed: int = 3) -> Input:
    return make_pipeline_input(titles, requests, seed, users=50, items=60, clusters=4)


def publish(settings: Settings, data: Input, *, catalogue: bool = True, events: bool = True) -> None:
    from streams.producer import EventProducer
    from streams.topics import spec

    producer = EventProducer(settings)
    if catalogue:
        producer.publish_many(spec("catalogue.titles"), data.titles)
        producer.publish_many(spec("catalogue.shelves"), data.shelves)
    if events:
        producer.publish_many(spec("playback"), data.playback)
        producer.publish_many(spec("ranking.impressions"), data.impressions)
        # one record that cannot be decoded: dead-lettered by the first pass, muted by a replay
        producer.publish_raw("playback", b"\x00not avro", b"replay-garbage")
    producer.flush()


# -- workers ---------------------------------------------------------------------------------------

# Modules whose views are compared exactly: every module of a full rebuild but the co-view one, whose
# similar lists are scored against neighbour counts read at flush time (so they depend on timing; the
# co-view state itself is compared on its own). Showcases read the similar lists, so co-view runs in a
# namespace of its own in these tests.
TIMING_DEPENDENT = {"coview"}


def exact_modules() -> list[str]:
    from streams.replay import rebuild_modules
    return [m for m in rebuild_modules() if m not in TIMING_DEPENDENT]


def worker_env(app_id: str, **extra: str) -> dict[str, str]:
    return {"VITRINA_APP_ID": app_id, "VITRINA_AGENTS": ",".join(exact_modules()), **extra}


def start_pipeline_worker(settings: Settings, app_id: str, data_dir: Path | None = None, name: str | None = None,
                          **extra: str):
    from infra.ports import pick_free_ports
    from streams.supervisor import start_worker

    env = worker_env(app_id, **extra)
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        env["VITRINA_DATA_DIR"] = str(data_dir)
    return start_worker(settings, web_port=pick_free_ports(1)[0], name=name or app_id, extra_env=env)


def pipeline_done(client: redis.Redis, data: Input, prefix: str = "vitrina:") -> bool:
    """Every play counted, every viewer's history written, nothing queued for a showcase build."""
    starts = data.starts
    pipe = client.pipeline(transaction=False)
    for item in starts:
        pipe.hget(f"{prefix}plays:{item}", "plays")
    counted = pipe.execute()
    if any(c is None or int(c) != starts[item] for c, item in zip(counted, starts)):
        return False
    pipe = client.pipeline(transaction=False)
    for viewer in data.viewers:
        pipe.exists(f"{prefix}history:{viewer}")
    if not all(pipe.execute()):
        return False
    return client.zcard(f"{prefix}showcase-dirty") == 0 and client.exists(f"{prefix}titles") == 1


def quiet(worker, seconds: float = 6.0, timeout_s: float = 120.0) -> None:
    """Wait until the worker's view writes have not moved for ``seconds``."""
    last, since = worker.counter("vitrina_view_writes_total"), time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = worker.counter("vitrina_view_writes_total")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
    raise AssertionError("view writes did not settle")


# -- snapshots -------------------------------------------------------------------------------------

def _strip(document: Any, nested: Any, top: str) -> Any:
    if not isinstance(document, dict):
        return document
    document = {k: v for k, v in document.items() if k != top}
    for field, names in dict(nested).items():
        if isinstance(document.get(field), dict):
            document[field] = {k: v for k, v in document[field].items() if k not in names}
    return document


def snapshot(client: redis.Redis, prefix: str = "vitrina:") -> dict[str, Any]:
    """Every view key under ``prefix`` (without it) -> comparable value (JSON parsed, ignored fields removed)."""
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=prefix + "*", count=1000):
        suffix = key[len(prefix):]
        fam = suffix.split(":", 1)[0]
        if fam in IGNORED_FAMILIES:
            continue
        kind = client.type(key)
        if kind == "string":
            raw = client.get(key)
            try:
                value: Any = json.loads(raw)
            except (TypeError, ValueError):
                value = raw
            if fam in IGNORED_JSON_FIELDS:
                nested, top = IGNORED_JSON_FIELDS[fam]
                value = _strip(value, nested, top)
        elif kind == "hash":
            value = {k: v for k, v in client.hgetall(key).items() if k not in IGNORED_HASH_FIELDS.get(fam, ())}
        elif kind == "zset":
            value = sorted(client.zrange(key, 0, -1, withscores=True))
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        else:
            continue
        out[suffix] = value
    return out


def differences(expected: dict[str, Any], actual: dict[str, Any], limit: int = 10) -> list[str]:
    out = [f"missing {k}" for k in sorted(set(expected) - set(actual))][:limit]
    out += [f"extra {k}" for k in sorted(set(actual) - set(expected))][:limit]
    out += [f"differs {k}: {json.dumps(expected[k], default=str)[:300]} != {json.dumps(actual[k], default=str)[:300]}"
            for k in sorted(set(expected) & set(actual)) if expected[k] != actual[k]][:limit]
    return out


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
