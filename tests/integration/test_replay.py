"""Replay and rebuild against a real private stack (Tansu + SeaweedFS + Redis) and real workers.

The first pass runs the pipeline (catalogue, history, plays, showcase agents) on one input and
snapshots every view; the tests then flush Redis and rebuild, replay into a shadow namespace and swap,
and replay a bounded range. Fields ignored when comparing: see tests/support/replay.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from infra.settings import to_env
from sinks.redis_views import PREFIX
from support.replay import (differences, exact_modules, make_input, pipeline_done, publish, quiet, snapshot,
                             private_stack_fixtures, start_pipeline_worker, unique, wait_for)

COVIEW_REFERENCE = "coview-reference:"

pytestmark = pytest.mark.slow


private, client = private_stack_fixtures("replay-stack")


@pytest.fixture(scope="module")
def first_pass(private, client):
    """The pipeline on one input: the exactly comparable modules into ``vitrina:``, the co-view module
    (a worker of its own) into COVIEW_REFERENCE. Returns (input, views, co-view views)."""
    data = make_input()
    publish(private, data)
    worker = start_pipeline_worker(private, unique("first-pass"))
    coview = start_pipeline_worker(private, unique("first-pass-coview"), VITRINA_AGENTS="coview",
                                   VITRINA_VIEW_PREFIX=COVIEW_REFERENCE)
    try:
        wait_for(lambda: pipeline_done(client, data), "the first pass to count every play and write every history")
        wait_for(lambda: client.exists(f"{COVIEW_REFERENCE}coview-counts"), "co-view counts")
        quiet(worker)
        quiet(coview)
        assert worker.counter("vitrina_dead_letters_total", source="playback") >= 1  # the garbage record
    finally:
        worker.stop()
        coview.stop()
    # showcases are built by a timer from other views (stats read at build time): rebuild them once from
    # the final inputs, exactly as a replay does at its end (streams/ops/replay.py DERIVED_VIEWS)
    from streams.ops.replay import refresh_derived_views
    assert refresh_derived_views(private, PREFIX)["refreshed"] == len({v for v in data.viewers if not v.startswith("device:")})
    views = snapshot(client)
    assert any(k.startswith("showcase:user:") for k in views) and any(k.startswith("showcase:default:") for k in views)
    return data, views, snapshot(client, COVIEW_REFERENCE)


def vitrina(settings, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, **to_env(settings), "VITRINA_LOG_LEVEL": "warning"}
    code = "import sys; from streams.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def test_dry_run_prints_the_plan_and_changes_nothing(private, client, first_pass):
    data, views, _ = first_pass
    done = vitrina(private, "replay", "--agent", "plays", "--topic", "playback", "--from-offset", "5",
                   "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    playback = [r for r in plan["ranges"] if r["topic"] == "playback"]
    assert len(playback) == 6
    assert sum(r["log_end"] for r in playback) == len(data.playback) + 1  # + the garbage record
    assert all(r["start"] == min(5, r["log_end"]) and r["end"] == r["log_end"] for r in playback)
    assert plan["total"] == sum(r["log_end"] - r["start"] for r in playback)
    assert plan["agents"] == ["play-counter", "playback-by-item"] and plan["tables"] == ["play-counter (engine state)", "playback-by-item (engine state)"]
    assert any("rebuilt from the range only" in w for w in plan["warnings"])
    assert snapshot(client) == views


def test_a_rebuild_replays_the_catalogue_first_in_a_shadow_namespace(private, client, first_pass):
    """Lookups before the events that join them (streams/ops/replay.py LOOKUP_MODULES), and always a shadow
    namespace (fresh derived marks, swapped in with the views)."""
    data, views, _ = first_pass
    done = vitrina(private, "rebuild", "--agent", ",".join(exact_modules()), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    assert plan["phases"] == [["catalogue"], sorted(exact_modules())], plan["phases"]
    assert plan["shadow"] and plan["view_prefix"].startswith("vitrina-shadow-")
    assert snapshot(client) == views


def test_bad_arguments_give_machine_readable_errors(private):
    unknown = vitrina(private, "replay", "--agent", "nope", "--dry-run")
    assert unknown.returncode == 2 and json.loads(unknown.stderr.strip().splitlines()[-1])["error"] == "UNKNOWN_AGENT"
    foreign = vitrina(private, "replay", "--agent", "plays", "--topic", "catalogue.titles", "--dry-run")
    assert foreign.returncode == 2
    assert json.loads(foreign.stderr.strip().splitlines()[-1])["error"] == "TOPIC_NOT_CONSUMED"


def decayed_counts(raw: dict[str, str]) -> dict[str, float]:
    """coview-counts entries 'stored|landmark_ms' as values at one common time (the landmark of a stored
    count depends on when it was rescaled, i.e. on batching; the value it stands for does not)."""
    from processors.coview.cooccurrence import decayed
    from streams.agents.coview import COVIEW_CONFIG

    parsed = {item: (float(v.split("|")[0]), int(v.split("|")[1])) for item, v in raw.items()}
    now = max((landmark for _, landmark in parsed.values()), default=0)
    return {item: decayed(n, landmark, now, COVIEW_CONFIG.half_life_ms) for item, (n, landmark) in parsed.items()}


def test_rebuild_after_redis_loss_gives_the_same_views(private, client, first_pass):
    data, views, coview_views = first_pass
    client.flushall()
    done = vitrina(private, "rebuild", "--agent", ",".join(exact_modules()))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipped module ranking" in done.stderr
    rebuilt = snapshot(client)
    assert not list(client.scan_iter(match="vitrina-shadow-*")), "no shadow keys are left behind"
    diff = differences(views, rebuilt, limit=1000)
    assert not diff, (sorted({line.split()[1].split(":")[0] for line in diff}), len(diff), diff[:5])


def test_coview_state_is_rebuilt_and_lists_match_but_for_flush_timing(private, client, first_pass):
    """The co-view agent replayed into a shadow namespace (not swapped) against its first-pass namespace.

    The decayed count of every title must be equal. Similar lists: the same titles have one, with the
    same support; ``version`` differs (how many contribution messages were applied: batching); and a
    list is scored with its neighbours' counts as they were when it was flushed, so a few lists may
    differ with timing (reported to the co-view owner: lists are not re-scored when only a neighbour's
    count changes). At least 80 % must be identical."""
    from streams.ops.replay import plan, run

    data, views, reference = first_pass
    replay_plan = plan(private, ["coview"], None, shadow=True)
    run(private, replay_plan, swap=False)
    try:
        rebuilt = snapshot(client, replay_plan.view_prefix)
    finally:
        for key in client.scan_iter(match=f"{replay_plan.view_prefix}*"):
            client.delete(key)
    first_counts, rebuilt_counts = decayed_counts(reference["coview-counts"]), decayed_counts(rebuilt["coview-counts"])
    assert first_counts and first_counts.keys() == rebuilt_counts.keys()
    # the decay weight of a contribution is taken at the worker's event-time watermark when it is applied,
    # which depends on how the topics interleave: counts agree closely, not to the last digit
    worst = max(abs(first_counts[i] - rebuilt_counts[i]) / max(1.0, first_counts[i]) for i in first_counts)
    assert worst <= 0.01, f"co-view counts differ by up to {worst:.2%}"
    similar = sorted(k for k in reference if k.startswith("similar:"))
    assert similar and similar == sorted(k for k in rebuilt if k.startswith("similar:"))
    strip = lambda view: {k: v for k, v in view.items() if k != "version"}  # noqa: E731
    same = [k for k in similar if strip(reference[k]) == strip(rebuilt[k])]
    assert len(same) >= 0.8 * len(similar), f"only {len(same)}/{len(similar)} co-view lists equal"
    assert all(reference[k]["support"] == rebuilt[k]["support"] for k in similar)


def test_shadow_replay_swaps_the_replayed_views_and_removes_stale_ones(private, client, first_pass):
    data, views, _ = first_pass
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
    from streams.kafka.codec import default_codec
    from streams.kafka.tail import tail
    from streams.ops.replay import RangeSpec, plan, run

    data, views, _ = first_pass
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
    from streams.ops.replay import swap_namespace

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
