"""Helpers for the replay, rebuild and crash-safety tests: a private stack, one input, view snapshots.

These tests flush Redis, restart the broker or kill workers, so they run on a stack of their own
(free ports, own data dir) and their own workers (unique app id, own web port), never on the
session's shared ``stack``/``worker``.

Snapshots and their comparison live in bench/_views.py (shared with the fault suite, bench/faults.py);
the fields it leaves out, and why, are listed there.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import redis
from support.waiting import wait_for as _wait_for

from infra import settings as settings_module
from infra.settings import Settings
from infra.stack import EmbeddedStack, free_port_env
from demo.pipeline_input import PipelineInput, make_pipeline_input

if str(Path(__file__).resolve().parents[2]) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._views import differences, snapshot  # noqa: F401 - re-exported for the tests


def private_settings(data_dir: Path, **overrides: Any) -> Settings:
    env = free_port_env(data_dir)
    values: dict[str, Any] = {"data_dir": Path(env["VITRINA_DATA_DIR"]), "s3_endpoint": env["VITRINA_S3_ENDPOINT"],
                              "kafka_bootstrap": env["VITRINA_KAFKA_BOOTSTRAP"], "redis_url": env["VITRINA_REDIS_URL"]}
    values.update(overrides)
    return dataclasses.replace(settings_module.load(), **values)


def start_private_stack(data_dir: Path) -> tuple[EmbeddedStack, Settings]:
    from streams.kafka.topics import ensure_topics

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
    def private(tmp_path_factory: pytest.TempPathFactory):
        stack, settings = start_private_stack(tmp_path_factory.mktemp(name))
        try:
            yield settings
        finally:
            stack.down()

    @pytest.fixture(scope="module")
    def client(private: Settings):
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
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import spec

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
    from streams.ops.replay import rebuild_modules
    return [m for m in rebuild_modules() if m not in TIMING_DEPENDENT]


def worker_env(app_id: str, **extra: str) -> dict[str, str]:
    return {"VITRINA_APP_ID": app_id, "VITRINA_AGENTS": ",".join(exact_modules()), **extra}


def start_pipeline_worker(settings: Settings, app_id: str, data_dir: Path | None = None, name: str | None = None,
                          **extra: str):
    from infra.ports import pick_free_ports
    from streams.ops.supervisor import start_worker

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


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
