"""The read API under overload and slow clients (issue 18, item 6): a real `vitrina api` process.

* More concurrent requests than Redis connections: each waits a bounded time for a connection and then
  gets 503 with Retry-After, never 500 (the default pool refused at once: MaxConnectionsError -> 500).
* Redis down: 503 with Retry-After at once, and 200 again when it is back.
* Slow clients (a request head sent byte by byte, an idle connection, a body trickled in) are
  disconnected within the configured bound, and the API keeps serving meanwhile.

Every test is bounded well under 60 s by its own deadlines.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Callable, Iterator

import aiohttp
import pytest
import redis as syncredis

from infra.ports import pick_free_ports
from infra.settings import Settings
from sinks.redis_views import POPULAR_KEY
from streams.ops.supervisor import ApiProcess, start_api

POOL = 4  # Redis connections of the API process: far fewer than the clients below
WAIT_S = 0.3  # how long a request waits for one of them
CLIENT_TIMEOUT_S = 2.0  # keep-alive / request-head / body-drain bound for slow clients
SLACK_S = 3.0  # scheduling on a shared 2-core machine


def _tuned(settings: Settings, redis_url: str) -> Settings:
    return replace(settings, redis_url=redis_url, api_redis_pool_size=POOL, api_redis_wait_s=WAIT_S,
                   api_redis_timeout_s=5.0, api_retry_after_s=1, api_keepalive_timeout_s=CLIENT_TIMEOUT_S,
                   api_read_timeout_s=CLIENT_TIMEOUT_S)


@pytest.fixture(scope="module")
def small_pool_api(stack: Settings) -> Iterator[tuple[ApiProcess, syncredis.Redis]]:
    """An API process with a 4-connection pool over the stack's Redis (database 3, views of its own)."""
    settings = _tuned(stack, stack.redis_url.rsplit("/", 1)[0] + "/3")
    client = syncredis.Redis.from_url(settings.redis_url, decode_responses=True)
    client.flushdb()
    client.zadd(POPULAR_KEY, {f"title-{i}": i for i in range(50)})
    api = start_api(settings, port=pick_free_ports(1)[0], name="api-overload")
    try:
        yield api, client
    finally:
        api.stop()
        client.flushdb()
        client.close()


async def _hammer(url: str, clients: int, rounds: int = 1, deadline_s: float = 30.0) -> list[tuple[int, str | None, str]]:
    """``clients`` concurrent connections, each sending ``rounds`` requests: (status, Retry-After, body)."""
    results: list[tuple[int, str | None, str]] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=20)

    async def one(session: aiohttp.ClientSession) -> None:
        for _ in range(rounds):
            async with session.get(url) as response:
                results.append((response.status, response.headers.get("Retry-After"), await response.text()))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.wait_for(asyncio.gather(*(one(session) for _ in range(clients))), deadline_s)
    return results


def _assert_200_or_503(results: list[tuple[int, str | None, str]]) -> Counter:
    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 503}, statuses
    for status, retry_after, body in results:
        if status == 503:
            assert retry_after == "1" and '"error":"OVERLOADED"' in body, (retry_after, body)
    return statuses


def test_more_clients_than_connections_get_200_or_503_with_retry_after_never_500(small_pool_api):
    api, redis_client = small_pool_api
    url = f"{api.base_url}/v1/popular?limit=20"
    # Redis holds every command for 2.5 s: the 4 requests holding a connection wait it out (200), the
    # others cannot get one within WAIT_S (503). The default pool (100, refusing) answered 500 beyond it.
    redis_client.execute_command("CLIENT", "PAUSE", "2500", "ALL")
    statuses = _assert_200_or_503(asyncio.run(_hammer(url, clients=200)))
    assert statuses[503] >= 10 and statuses[200] >= 1, statuses
    # then 150 clients x 10 requests on a 4-connection pool at full speed: still never a 500
    statuses = _assert_200_or_503(asyncio.run(_hammer(url, clients=150, rounds=10)))
    assert statuses[200] > 0, statuses
    # and it keeps serving
    results = asyncio.run(_hammer(url, clients=1, rounds=5))
    assert [status for status, _, _ in results] == [200] * 5 and '"title-49"' in results[0][2]
    assert api.alive()


def _read_until_closed(sock: socket.socket, deadline: float, trickle: bytes = b"") -> float | None:
    """Send ``trickle`` one byte every 0.2 s (none: stay idle) until the server closes the connection;
    the time it took, or None if it was still open at ``deadline``. Responses received are ignored."""
    start = time.monotonic()
    sent = 0
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        if trickle:
            try:
                sock.sendall(trickle[sent % len(trickle):sent % len(trickle) + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def _connect(api: ApiProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", api.port), timeout=5)


def test_a_slowloris_client_is_disconnected_within_the_bound_and_others_are_served(small_pool_api):
    api, _ = small_pool_api
    head = b"GET /v1/popular HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    slow = [_connect(api) for _ in range(30)]  # 30 connections sending their request head byte by byte...
    for sock in slow:
        sock.sendall(head)
    closed: list[float | None] = [None] * len(slow)

    def trickle(i: int) -> None:
        closed[i] = _read_until_closed(slow[i], time.monotonic() + 20, trickle=b"X-Slow-Header: " + b"a" * 1000)

    threads = [threading.Thread(target=trickle, args=(i,), daemon=True) for i in range(len(slow))]
    for thread in threads:
        thread.start()
    # ...meanwhile the API answers everyone else at once
    results = asyncio.run(_hammer(f"{api.base_url}/healthz", clients=10, rounds=3, deadline_s=10))
    assert [status for status, _, _ in results] == [200] * 30
    for thread in threads:
        thread.join(25)
    for sock in slow:
        sock.close()
    assert all(t is not None and t <= CLIENT_TIMEOUT_S + SLACK_S for t in closed), closed
    assert asyncio.run(_hammer(f"{api.base_url}/healthz", clients=1))[0][0] == 200


def test_an_idle_connection_and_a_trickled_body_are_closed_within_the_bound(small_pool_api):
    api, _ = small_pool_api
    with _connect(api) as idle:  # connects and never sends a byte
        took = _read_until_closed(idle, time.monotonic() + 20)
    assert took is not None and took <= CLIENT_TIMEOUT_S + SLACK_S, took
    with _connect(api) as sock:  # a request that announces a body and sends it one byte at a time
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # answered at once; the body is not read...
        took = _read_until_closed(sock, time.monotonic() + 20, trickle=b"b")  # ...but drained for a bounded time
    assert took is not None and took <= CLIENT_TIMEOUT_S + SLACK_S, took


@pytest.fixture
def private_redis(tmp_path) -> Iterator[tuple[str, Callable[..., None]]]:
    """A redis-server of this test's own (so it can be stopped without touching the session's views): its
    URL and a function that stops it (``stop()``) or starts it again (``stop(False)``)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    (port,) = pick_free_ports(1)
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]
    processes: list[subprocess.Popen] = []

    def start() -> None:
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                syncredis.Redis(port=port, socket_timeout=1).ping()
                return
            except syncredis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(down: bool = True) -> None:
        if down:
            process = processes[-1]
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        else:
            start()

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", stop
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_redis_down_is_a_503_with_retry_after_at_once_and_the_api_recovers(stack, private_redis):
    url, stop = private_redis
    api = start_api(_tuned(stack, url), port=pick_free_ports(1)[0], name="api-redis-down")
    try:
        assert asyncio.run(_hammer(f"{api.base_url}/healthz", clients=5))[0][0] == 200
        stop()  # Redis gone (kill -9)
        began = time.monotonic()
        results = asyncio.run(_hammer(f"{api.base_url}/v1/popular", clients=50, deadline_s=15))
        took = time.monotonic() - began
        assert {status for status, _, _ in results} == {503}, Counter(s for s, _, _ in results)
        codes = Counter(body.split('"error":"')[1].split('"')[0] for _, _, body in results)
        assert all(retry == "1" for _, retry, _ in results) and codes["REDIS_UNAVAILABLE"] >= 1, codes
        assert set(codes) <= {"REDIS_UNAVAILABLE", "OVERLOADED"}, codes  # waiting for a connection that fails
        assert took < 5, took  # not the 30 s of reconnect backoff the workers use
        stop(False)  # Redis back: served again without a restart of the API
        deadline = time.monotonic() + 10
        while asyncio.run(_hammer(f"{api.base_url}/v1/popular", clients=1))[0][0] != 200:
            assert time.monotonic() < deadline, "the API did not recover after Redis came back"
            time.sleep(0.2)
        assert api.alive()
    finally:
        api.stop()
