"""Co-view under faults: per fault, the per-title co-view counts (``vitrina:coview-counts``, bit for bit)
and the similar lists (``vitrina:similar:*``, all but the ``version`` write counter) equal those of an
uninterrupted run over the same input, and the counts equal the pure core's over the same events
(nothing lost, nothing applied twice). Nothing is rebuilt before the comparison.

Each run reads the same generated input (several sessions per viewer, viewers interleaved across the
playback partitions) from topics of its own, published in chunks while its workers run; the fault
lands at ~40 % of the stream:

* ``worker``: the only worker gets SIGKILL and a new one starts (state from the changelogs);
* ``broker``: the Kafka broker gets SIGKILL and is restarted (the stream waits while it is down); the
  worker must ride it out (its lag probe runs every half second here, through the outage: librdkafka's
  group admin requests used to abort the process then, see ``streams/group_offsets.committed_by_consumer``);
* ``broker-and-worker``: the broker gets SIGKILL, then the worker too while the broker is down; the broker
  comes back and a new worker starts (a worker that dies in an outage loses nothing);
* ``group``: one of two workers of one consumer group gets SIGKILL; the other takes its partitions.
"""
from __future__ import annotations

import time

import pytest
import redis

from support.coview import (PacedPublisher, coview_env, coview_snapshot, reference_state, run_namespace,
                             snapshot_differences, wait_for_counts)
from support.replay import make_input, quiet, start_private_stack, start_pipeline_worker, wait_for

pytestmark = pytest.mark.slow
FAULT_AT = 0.4  # share of the playback events published when the fault lands


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack, settings = start_private_stack(tmp_path_factory.mktemp("coview-faults"))
    try:
        yield stack, settings
    finally:
        stack.down()


@pytest.fixture(scope="module")
def data():
    return make_input(requests=500, seed=11)


@pytest.fixture(scope="module")
def expected(data) -> dict[str, str]:
    return reference_state(data.playback)


@pytest.fixture(scope="module")
def baseline(stack, data, expected, tmp_path_factory) -> dict:
    """The uninterrupted run's views."""
    _, settings = stack
    run, prefix = run_namespace(settings, "coview-base")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    worker = start_pipeline_worker(run, run.app_id, data_dir=tmp_path_factory.mktemp("base"), **coview_env(prefix))
    try:
        PacedPublisher(run, data.titles, data.playback).start().finish()
        wait_for_counts(client, prefix, expected, 120)
        quiet(worker)
        return coview_snapshot(client, prefix)
    finally:
        worker.stop()
        client.close()


def engine_checkpointed(worker) -> bool:
    return (worker.counter("vitrina_engine_checkpoints_total", processor="coview-sessions") > 0
            and worker.counter("vitrina_coview_updates_total") > 0)


def all_alive(workers, fault: str) -> None:
    """No worker of the run died by itself (a fault must be ridden out, not end the process)."""
    for worker in workers:
        assert worker.alive(), f"{fault}: a worker died by itself:\n{worker.log_tail(60)}"


@pytest.mark.parametrize("fault", ["worker", "broker", "broker-and-worker", "group"])
def test_coview_views_after_a_fault_equal_an_uninterrupted_run(stack, data, expected, baseline, fault, tmp_path):
    embedded, settings = stack
    run, prefix = run_namespace(settings, f"coview-{fault}")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    env = coview_env(prefix, VITRINA_LAG_EVERY_S="0.5")
    workers = [start_pipeline_worker(run, run.app_id, data_dir=tmp_path / "w1", name=f"{run.app_id}-1", **env)]
    if fault == "group":
        workers.append(start_pipeline_worker(run, run.app_id, data_dir=tmp_path / "w2", name=f"{run.app_id}-2",
                                             **env))
    publisher = PacedPublisher(run, data.titles, data.playback, chunk=100, pause_s=0.15)
    try:
        publisher.start()
        wait_for(lambda: publisher.sent >= FAULT_AT * len(data.playback) and engine_checkpointed(workers[0]),
                 "the stream under way", 120, every_s=0.05)
        if fault.startswith("broker"):
            publisher.hold()
            embedded.kill_component("broker")
            faulted = time.monotonic()
            time.sleep(2)
            if fault == "broker-and-worker":
                workers.pop(0).kill()
            assert embedded.restart_component("broker").healthy
            if fault == "broker-and-worker":
                workers.append(start_pipeline_worker(run, run.app_id, data_dir=tmp_path / "w3",
                                                     name=f"{run.app_id}-3", **env))
            publisher.go()
        else:
            workers[0].kill()
            faulted = time.monotonic()
            workers.pop(0)
            if fault == "worker":
                workers.append(start_pipeline_worker(run, run.app_id, data_dir=tmp_path / "w3",
                                                     name=f"{run.app_id}-3", **env))
        publisher.finish()
        wait_for_counts(client, prefix, expected, 150, check=lambda: all_alive(workers, fault))
        converged = time.monotonic() - faulted
        for worker in workers:
            quiet(worker)
        got = coview_snapshot(client, prefix)
        all_alive(workers, fault)
    finally:
        publisher.go()
        for worker in workers:
            worker.stop()
        client.close()
    diff = snapshot_differences(baseline, got)
    assert not diff, f"{fault}: {len(diff)} differences from the uninterrupted run:\n" + "\n".join(diff)
    print(f"{fault}: counts exact {converged:.1f}s after the fault; {len(got['similar'])} lists equal")
