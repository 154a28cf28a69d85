"""Replay and rebuild against a real private stack (Tansu + SeaweedFS + Redis) and real workers.

The first pass runs the pipeline (catalogue, history, plays, showcase agents) on one input and
snapshots every view; the tests then flush Redis and rebuild, replay into a shadow namespace and swap,
and replay a bounded range. Fields ignored when comparing: see tests/_replay_helpers.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis

from infra.settings import to_env
from sinks.redis_views import PREFIX
from _replay_helpers import (differences, make_input, pipeline_done, publish, quiet, snapshot,
                                   start_pipeline_worker, start_private_stack, unique, wait_for)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    stack, settings = start_private_stack(tmp_path_factory.mktemp("replay-stack"))
    try:
        yield settings
    finally:
        stack.down()


@pytest.fixture(scope="module")
def client(private):
    connection = redis.Redis.from_url(private.redis_url, decode_responses=True)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def first_pass(private, client):
    data = make_input()
    publish(private, data)
    worker = start_pipeline_worker(private, unique("first-pass"))
    try:
        wait_for(lambda: pipeline_done(client, data), "the first pass to count every play and write every history")
        quiet(worker)
        assert worker.counter("vitrina_dead_letters_total", source="playback") >= 1  # the garbage record
    finally:
        worker.stop()
    # showcases are built by a timer from other views (stats read at build time): rebuild them once from
    # the final inputs, exactly as a replay does at its end (streams/replay.py DERIVED_VIEWS)
    from streams.replay import refresh_derived_views
    assert refresh_derived_views(private, PREFIX)["refreshed"] == len({v for v in data.viewers if not v.startswith("device:")})
    views = snapshot(client)
    assert any(k.startswith("showcase:user:") for k in views) and any(k.startswith("showcase:default:") for k in views)
    return data, views


def vitrina(settings, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, **to_env(settings), "VITRINA_LOG_LEVEL": "warning"}
    code = "import sys; from streams.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def test_dry_run_prints_the_plan_and_changes_nothing(private, client, first_pass):
    data, views = first_pass
    done = vitrina(private, "replay", "--agent", "plays", "--topic", "playback", "--from-offset", "5",
                   "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    playback = [r for r in plan["ranges"] if r["topic"] == "playback"]
    assert len(playback) == 6
    assert sum(r["log_end"] for r in playback) == len(data.playback) + 1  # + the garbage record
    assert all(r["start"] == min(5, r["log_end"]) and r["end"] == r["log_end"] for r in playback)
    assert plan["total"] == sum(r["log_end"] - r["start"] for r in playback)
    assert plan["agents"] == ["play-counter", "playback-by-item"] and plan["tables"] == ["plays"]
    assert any("rebuilt from the range only" in w for w in plan["warnings"])
    assert snapshot(client) == views


def test_bad_arguments_give_machine_readable_errors(private):
    unknown = vitrina(private, "replay", "--agent", "nope", "--dry-run")
    assert unknown.returncode == 2 and json.loads(unknown.stderr.strip().splitlines()[-1])["error"] == "UNKNOWN_AGENT"
    foreign = vitrina(private, "replay", "--agent", "plays", "--topic", "catalogue.titles", "--dry-run")
    assert foreign.returncode == 2
    assert json.loads(foreign.stderr.strip().splitlines()[-1])["error"] == "TOPIC_NOT_CONSUMED"


def test_rebuild_after_redis_loss_gives_the_same_views(private, client, first_pass):
    data, views = first_pass
    client.flushall()
    done = vitrina(private, "rebuild")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipped module ranking" in done.stderr
    rebuilt = snapshot(client)
    diff = differences(views, rebuilt, limit=1000)
    assert not diff, (sorted({line.split()[1].split(":")[0] for line in diff}), len(diff), diff[:5])
    assert not list(client.scan_iter(match="vitrina-shadow-*")), "no shadow keys are left behind"


def test_shadow_replay_swaps_the_replayed_views_and_removes_stale_ones(private, client, first_pass):
    data, views = first_pass
    item = next(iter(data.starts))
    client.hset(f"{PREFIX}plays:{item}", mapping={"plays": 999999})          # a wrong live value
    client.hset(f"{PREFIX}plays:ghost-title", mapping={"plays": 7})          # a view the topics do not produce
    client.zadd(f"{PREFIX}popular", {"ghost-title": 7})
    title_key = next(k for k in views if k.startswith("title:"))
    client.set(f"{PREFIX}{title_key}", json.dumps({"edited": True}))         # not a family of the replayed agent
    done = vitrina(private, "replay", "--agent", "plays", "--topic", "playback", "--shadow")
    assert done.returncode == 0, done.stderr[-3000:]
    after = snapshot(client)
    assert after[f"plays:{item}"] == views[f"plays:{item}"]
    assert "plays:ghost-title" not in after and after["popular"] == views["popular"]
    assert after[title_key] == {"edited": True}, "families the replay did not produce are left alone"
    assert not list(client.scan_iter(match="vitrina-shadow-*"))
    client.set(f"{PREFIX}{title_key}", json.dumps(views[title_key]))


def test_a_bounded_range_into_a_shadow_counts_exactly_that_range(private, client, first_pass):
    from streams.codec import default_codec
    from streams.consumer import tail
    from streams.replay import RangeSpec, plan, run

    data, views = first_pass
    records = [r for r in tail(private, default_codec(), "playback", idle_timeout_s=2.0) if r.value]
    start, stop = 10, 200
    expected: dict[str, int] = {}
    for record in records:
        if start <= record.offset < stop and record.value["event_type"] == "START":
            expected[record.value["item_id"]] = expected.get(record.value["item_id"], 0) + 1
    replay_plan = plan(private, ["plays"], ["playback"], RangeSpec(from_offset=start, to_offset=stop), shadow=True)
    assert replay_plan.total == sum(min(stop, r.log_end) - min(start, r.log_end) for r in replay_plan.ranges)
    result = run(private, replay_plan, swap=False)
    shadow = replay_plan.view_prefix
    try:
        counted = {key[len(f"{shadow}plays:"):]: int(client.hget(key, "plays"))
                   for key in client.scan_iter(match=f"{shadow}plays:*")}
        assert {k: v for k, v in counted.items() if v} == expected
        assert result.processed == replay_plan.total
        live = snapshot(client)
        assert {k: v for k, v in live.items() if k.startswith("plays:")} == \
            {k: v for k, v in views.items() if k.startswith("plays:")}, "without a swap the live views are untouched"
    finally:
        for key in client.scan_iter(match=f"{shadow}*"):
            client.delete(key)


def test_swap_is_one_transaction_over_renames_and_deletes(client):
    from streams.replay import swap_namespace

    live, shadow = f"t-{unique('live')}:", f"t-{unique('shadow')}:"
    client.set(f"{live}a:1", "old")
    client.set(f"{live}a:2", "stale")
    client.set(f"{live}b:1", "other family")
    client.set(f"{shadow}a:1", "new")
    client.set(f"{shadow}a:3", "added")
    monitor_lines: list[str] = []
    with client.monitor() as monitor:
        renamed, deleted = swap_namespace(client, shadow, live)
        for command in monitor.listen():
            monitor_lines.append(command["command"])
            if command["command"].upper().startswith("EXEC"):
                break
    assert (renamed, deleted) == (2, 1)
    assert client.get(f"{live}a:1") == "new" and client.get(f"{live}a:3") == "added"
    assert client.get(f"{live}a:2") is None and client.get(f"{live}b:1") == "other family"
    writes = [c for c in monitor_lines if c.split()[0].upper() in ("RENAME", "DEL", "MULTI", "EXEC")]
    assert writes[0].upper().startswith("MULTI") and writes[-1].upper().startswith("EXEC") and len(writes) == 5
    client.delete(f"{live}a:1", f"{live}a:3", f"{live}b:1")
