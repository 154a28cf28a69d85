"""Play and impression counting exactly once per (partition, offset): under redelivery AND out-of-order
delivery (processors/counters.py; the impression counter's Redis script in sinks/showcase_views.py).

The out-of-order case is the one a rebalance produces: the new owner of a partition reads again from
the last commit while the old owner still finishes the batch it had in flight, so a later stretch of
the partition is applied before an earlier one (found by tests/integration/test_worker_group.py: 1247 of 1248 plays).
"""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import time
from datetime import datetime, timezone

import pytest
import redis as syncredis

from infra.ports import pick_free_ports
from processors.counters import PLAY_BOUNDS, OffsetBounds, apply_playback, is_applied, mark_applied, parse_marks

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


def event(kind: str = "START") -> dict:
    return {"event_type": kind, "event_time": T0}


def count_plays(deliveries: list[tuple[int, int]], bounds: OffsetBounds = PLAY_BOUNDS) -> dict:
    state = None
    for partition, offset in deliveries:
        state, _ = apply_playback(state, event(), partition, offset, bounds)
    return state


def rebalance_order(offsets: list[int], rng: random.Random, ahead: int | None = None) -> list[int]:
    """Every offset at least once, as around a rebalance: up to a commit in order, then a zombie's batch
    from further on (at most ``ahead`` positions past the commit), then the new owner from the commit
    (duplicates included), then a redelivery of a random stretch."""
    n = len(offsets)
    ahead = ahead or n
    commit = rng.randrange(n)
    zombie_start = rng.randint(commit, min(n - 1, commit + ahead // 2))
    zombie = offsets[zombie_start:zombie_start + rng.randint(1, max(1, ahead // 2))]
    again = offsets[rng.randrange(n):][:rng.randint(0, n)]
    return offsets[:commit] + zombie + offsets[commit:] + again


# -- pure ------------------------------------------------------------------------------------------

def test_an_earlier_stretch_after_a_later_one_is_counted_not_dropped():
    # offsets of one title in source partition 2 (sparse: other titles' events are in between)
    offsets = [3, 8, 9, 15, 40, 41, 77]
    late_first = [(2, o) for o in offsets[4:]] + [(2, o) for o in offsets]  # 40.. first, then all again
    state = count_plays(late_first)
    assert state["plays"] == len(offsets) and state["events"] == len(offsets)


def test_redelivery_in_order_and_shuffled_duplicates_count_once():
    rng = random.Random(7)
    for _ in range(200):
        offsets = sorted(rng.sample(range(5000), rng.randint(2, 120)))
        deliveries = [(p, o) for p in (0, 1) for o in rebalance_order(offsets, rng)]
        if rng.random() < 0.3:
            rng.shuffle(deliveries)
        state = count_plays(deliveries)
        assert state["plays"] == 2 * len(offsets), (offsets, deliveries)


def test_marks_stay_bounded_and_the_old_format_reads_as_a_floor():
    bounds = OffsetBounds(window=1000, max_seen=16)
    state = count_plays([(0, o) for o in range(0, 50_000, 7)], bounds)
    floor, seen = parse_marks(state["applied"]["0"])
    assert len(seen) <= 16 and floor >= 50_000 - 1000 - 7
    assert is_applied(17, 17) and is_applied(17, 3) and not is_applied(17, 18)
    legacy = {"plays": 5, "events": 5, "updated_ms": 0, "applied": {"0": 17}}
    assert apply_playback(legacy, event(), 0, 12)[1] is False
    assert apply_playback(legacy, event(), 0, 18)[0]["plays"] == 6


def test_beyond_the_bounds_a_late_record_is_taken_as_applied():
    """The documented limit: later than ``window`` offsets or ``max_seen`` records behind."""
    bounds = OffsetBounds(window=100, max_seen=4)
    state = count_plays([(0, o) for o in (10, 20, 30, 40, 50)], bounds)  # 5 > max_seen: 10 folds into the floor
    assert parse_marks(state["applied"]["0"]) == (10, [20, 30, 40, 50])
    assert apply_playback(state, event(), 0, 5)[1] is False
    assert apply_playback(state, event(), 0, 15)[1] is True  # above the floor: still told apart


def test_contiguous_marks_fold_consecutive_offsets_into_the_floor():
    marks = None
    for offset in (0, 1, 5, 3, 2, 4, 6):
        marks = mark_applied(marks, offset, contiguous=True)
    assert parse_marks(marks) == (6, [])
    marks = mark_applied(marks, 9, contiguous=True)
    assert parse_marks(marks) == (6, [9])
    assert is_applied(marks, 9) and not is_applied(marks, 8)


# -- the impression counter on a real redis-server -------------------------------------------------

@pytest.fixture
def redis_url(tmp_path):
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    (port,) = pick_free_ports(1)
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                syncredis.Redis(port=port, socket_timeout=1).ping()
                break
            except syncredis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_impression_counter_is_exact_under_redelivery_and_reordering(redis_url):
    from sinks.redis_views import IMPRESSIONS_HWM_KEY, IMPRESSIONS_KEY
    from sinks.showcase_views import ImpressionCounter, impressions_seen_key

    rng = random.Random(11)
    bounds = OffsetBounds(window=400, max_seen=50)
    partitions = {p: [(o, f"item-{rng.randrange(9)}") for o in range(rng.randint(300, 900))] for p in range(3)}
    expected: dict[str, int] = {}
    for records in partitions.values():
        for _, item in records:
            expected[item] = expected.get(item, 0) + 1

    async def run() -> tuple[dict, dict]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        counter = ImpressionCounter(client, bounds)
        pure: dict[int, dict | None] = {p: None for p in partitions}
        for partition, records in partitions.items():
            order = [records[o] for o in rebalance_order(list(range(len(records))), rng, ahead=80)]
            while order:  # in batches, as the agent calls it
                size = rng.randint(1, 60)
                batch, order = order[:size], order[size:]
                new = await counter.add(partition, batch)
                fresh = 0
                for offset, _ in batch:
                    if not is_applied(pure[partition], offset):
                        fresh += 1
                    pure[partition] = mark_applied(pure[partition], offset, bounds, contiguous=True)
                assert new == fresh
        counts = {k: int(v) for k, v in (await client.hgetall(IMPRESSIONS_KEY)).items()}
        stored = {}
        for partition in partitions:
            floor = await client.hget(IMPRESSIONS_HWM_KEY, str(partition))
            seen = [int(o) for o in await client.zrange(impressions_seen_key(partition), 0, -1)]
            stored[partition] = (int(floor), seen)
            assert stored[partition] == parse_marks(pure[partition]), "the script follows the pure rules"
        await client.aclose()
        return counts, stored

    counts, stored = asyncio.run(run())
    assert counts == expected
    assert all(floor == len(partitions[p]) - 1 and not seen for p, (floor, seen) in stored.items())


def test_impression_marks_pass_a_hole_that_never_fills(redis_url):
    """An offset the counter never sees (a dead-lettered record): the counted offsets above it are kept
    until ``max_seen``, then folded into the floor; nothing is lost or counted twice."""
    from sinks.redis_views import IMPRESSIONS_HWM_KEY, IMPRESSIONS_KEY
    from sinks.showcase_views import ImpressionCounter, impressions_seen_key

    async def run() -> tuple[int, int, int, int]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        counter = ImpressionCounter(client, OffsetBounds(window=1000, max_seen=20))
        records = [(o, "x") for o in range(100) if o != 30]
        new = sum([await counter.add(0, records[i:i + 7]) for i in range(0, len(records), 7)])
        new += await counter.add(0, records[:50])  # redelivered
        floor = int(await client.hget(IMPRESSIONS_HWM_KEY, "0"))
        seen = await client.zcard(impressions_seen_key(0))
        counted = int(await client.hget(IMPRESSIONS_KEY, "x"))
        await client.aclose()
        return new, counted, floor, seen

    assert asyncio.run(run()) == (99, 99, 99, 0)
