"""Co-view is deterministic: two uninterrupted runs over the same input, published at different paces
(so batches, arrival interleaving across viewer partitions and flush times all differ), end with
identical per-title co-view counts (``vitrina:coview-counts`` as written, bit for bit) and identical
similar lists (``vitrina:similar:*``, all but the ``version`` write counter), and the counts are those
of the pure core over the same events. Autoplay is computed from these lists at read time (api/), so it
follows. The order that makes this so is documented in streams/agents/coview.py.
"""
from __future__ import annotations

import time

import pytest
import redis

from support.coview import (PacedPublisher, coview_env, coview_snapshot, reference_state, run_namespace,
                             snapshot_differences, wait_for_counts)
from support.replay import make_input, quiet, start_private_stack, start_pipeline_worker, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    stack, settings = start_private_stack(tmp_path_factory.mktemp("coview-determinism"))
    try:
        yield settings
    finally:
        stack.down()


def uninterrupted_run(settings, data, expected: dict[str, str], tag: str, chunk: int, pause_s: float,
                      data_dir, **env: str) -> dict:
    run, prefix = run_namespace(settings, tag)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    worker = start_pipeline_worker(run, run.app_id, data_dir=data_dir, **coview_env(prefix, **env))
    try:
        publisher = PacedPublisher(run, data.titles, data.playback, chunk, pause_s).start()
        publisher.finish()
        wait_for_counts(client, prefix, expected, 120)
        quiet(worker)
        return coview_snapshot(client, prefix)
    finally:
        worker.stop()
        client.close()


def test_two_runs_on_the_same_input_give_identical_counts_and_similar_lists(private, tmp_path):
    data = make_input(requests=400, seed=5)
    expected = reference_state(data.playback)
    started = time.monotonic()
    # run 1: fast, big batches; run 2: paced, tiny batches and frequent flushes
    first = uninterrupted_run(private, data, expected, "coview-det-a", 1000, 0.0, tmp_path / "a")
    second = uninterrupted_run(private, data, expected, "coview-det-b", 60, 0.1, tmp_path / "b",
                               VITRINA_ENGINE_MAX_RECORDS="37", VITRINA_COVIEW_FLUSH_S="0.05")
    assert first["counts"] == expected
    diff = snapshot_differences(first, second)
    assert not diff, f"{len(diff)} differences between two runs:\n" + "\n".join(diff)
    assert len(first["similar"]) >= len(expected) // 2, "lists were written"
    print(f"{len(expected)} titles, {len(first['similar'])} similar lists identical; {time.monotonic() - started:.0f}s")
