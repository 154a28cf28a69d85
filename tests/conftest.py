"""Shared fixtures: one fresh embedded stack (SeaweedFS S3 + Tansu + Redis) per test session.

The stack runs in a temporary data dir on free loopback ports; the VITRINA_* variables are
set for the whole session so that ``infra.settings.load()`` in code under test (and in
subprocesses such as the ``vitrina`` CLI) sees it. Services are always started, never
skipped. Set VITRINA_TEST_EXTERNAL_STACK=1 to run the suite against already running
services described by the current VITRINA_* variables (e.g. docker-compose.kafka.yml).

Leftover processes are prevented three ways: the fixture's teardown, an atexit hook plus
SIGTERM/SIGHUP handlers (turned into KeyboardInterrupt so pytest tears down), and the
kernel's parent-death signal on every child (covers a SIGKILLed pytest).
"""
from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Iterator

import pytest
import redis

from infra import settings as settings_module
from infra.settings import Settings
from infra.stack import EmbeddedStack, free_port_env

EXTERNAL_STACK_ENV = "VITRINA_TEST_EXTERNAL_STACK"

_live_stacks: list[EmbeddedStack] = []


def _stop_live_stacks() -> None:
    while _live_stacks:
        stack = _live_stacks.pop()
        try:
            stack.down()
        except Exception as error:  # noqa: BLE001 - best effort at interpreter exit
            print(f"vitrina conftest: could not stop the stack in {stack.data_dir}: {error}")


atexit.register(_stop_live_stacks)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


for _signum in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_signum) in (signal.SIG_DFL, None):
        signal.signal(_signum, _interrupt)


_TANSU_SELECTED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The Tansu re-run (support/tansu_run.py) goes last: its child pytest runs in the background from
    the first unit test on (CPU-bound and short, while the child mostly waits), and the test at the
    end checks the result."""
    from support import tansu_run

    tansu = [item for item in items if item.nodeid.startswith(tansu_run.TEST_ID)]
    config.stash[_TANSU_SELECTED] = bool(tansu)
    if tansu:
        items[:] = [item for item in items if item not in tansu] + tansu


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.config.stash.get(_TANSU_SELECTED, False) and item.nodeid.startswith("tests/unit/"):
        from support import tansu_run

        tansu_run.start()


@pytest.fixture(scope="module", autouse=True)
def _release_kafka_clients() -> Iterator[None]:
    """Collect a module's Kafka clients when it ends. A client kept by a reference cycle outlives its
    module; once a private stack of that module is down it logs connection refusals into every later
    test's output (and buried the one failure that mattered in a CI log)."""
    yield
    import gc
    gc.collect()


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack | None]:
    """The running EmbeddedStack (for restart_component/kill_component); None with an external stack."""
    if os.environ.get(EXTERNAL_STACK_ENV) == "1":
        yield None
        return
    patch = pytest.MonkeyPatch()
    for name, value in free_port_env(tmp_path_factory.mktemp("vitrina-stack")).items():
        patch.setenv(name, value)
    stack = EmbeddedStack(settings_module.load(), die_with_parent=True)
    _live_stacks.append(stack)
    try:
        stack.up()
        yield stack
    finally:
        try:
            stack.down()
        finally:
            if stack in _live_stacks:
                _live_stacks.remove(stack)
            patch.undo()


@pytest.fixture(scope="session")
def stack(embedded_stack: EmbeddedStack | None) -> Settings:
    """Settings of the running stack (the same values ``infra.settings.load()`` returns)."""
    return settings_module.load()


@pytest.fixture(scope="session")
def settings(stack: Settings) -> Settings:
    return stack


@pytest.fixture
def redis_client(stack: Settings) -> Iterator[redis.Redis]:
    """A client on the stack's Redis database, flushed before the test (values are bytes)."""
    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def topics(stack: Settings) -> Settings:
    """The stack with every registry topic created."""
    from streams.kafka.topics import ensure_topics

    ensure_topics(stack)
    return stack


@pytest.fixture(scope="session")
def worker(topics: Settings, tmp_path_factory: pytest.TempPathFactory):
    """One running ``vitrina worker`` (all agents) shared by the session; stopped at the end."""
    from infra.ports import pick_free_ports
    from streams.ops.supervisor import start_worker

    process = start_worker(topics, web_port=pick_free_ports(1)[0])
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def views(stack: Settings) -> Iterator[redis.Redis]:
    """A client on the views' Redis (str values), NOT flushed: the session's worker shares it."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()
