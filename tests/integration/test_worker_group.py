"""Scale-out: three full workers in one consumer group share the 6 partitions of the registry topics;
one is killed with SIGKILL mid-stream and the other two take its partitions over.

On a private stack, one generated input (the crash tests' generator and catalogue, ~7.5k playback and
8k impression events, plus a few uploads) is published while three workers (every agent and the co-view
engine, one app id, one view namespace) are up and idle. Once a third of the stream is consumed and
the victim's co-view sessionizer has checkpointed, the victim gets SIGKILL; the survivors take over
after the group's session timeout. Afterwards:

* the views equal those of an uninterrupted single worker run over the same records (snapshot of the
  crash tests, tests/support/replay.py), compared as written (no showcase refresh from the final
  inputs): every family the reference run writes, except showcases (``showcase``, ``showcase-meta``,
  ``showcase-users``: built by a timer from the stats as they are at build time);
* the per-title co-view counts are exactly those of the pure core over the same events;
* every upload is answered (views ``upload:<id>``);
* the committed offsets of every consumer group of the app (the Faust agents' group and each engine
  processor's group, found with AdminClient.list_consumer_groups) reach the end of every partition of
  every topic assigned to its members: consumer lag 0.

Found with this test (under CPU contention: ``taskset -c 0`` reproduces them): partitions the dead
worker had not committed were never read by their new owner, a fetch that jumped over unread records
was taken for a compaction gap and committed past, commits stuck behind a record whose delivery a
rebalance cut short (streams/runtime/faust_seek.py); commits ahead of table changelog writes
(streams/runtime/faust_flush.py); a fresh worker refusing uploads with "changelog has 0 partitions"
(streams/runtime/app.py); the co-view engine's assignment failing on a changelog created a moment before
(streams/runtime/engine/runner.py).
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from support.coview import reference_counts, stored_counts
from support.replay import (differences, exact_modules, make_input, pipeline_done, publish, quiet, snapshot,
                             private_stack_fixtures, start_pipeline_worker, unique, wait_for)
from support.uploads import unique_clip

pytestmark = pytest.mark.slow
WORKERS = 3
REQUESTS = 1000  # ~7.5k playback and 8k impression events: a full worker (ranking trainer included) is slow
# showcases are built by a timer from the stats read at build time: how often and when they were built
# depends on the run, and the crash tests compare them only after a refresh from the final inputs
TIMED_FAMILIES = {"showcase", "showcase-meta", "showcase-users"}


private, client = private_stack_fixtures("group-stack")


def full_worker_env(prefix: str) -> dict[str, str]:
    """Every agent module (as a plain ``vitrina worker``), in view namespace ``prefix``."""
    from streams.ops.replay import agent_modules

    return {"VITRINA_AGENTS": ",".join(agent_modules()), "VITRINA_VIEW_PREFIX": prefix,
            "VITRINA_RANKING_MODEL": "tiny"}


def start_group(settings, app_id: str, prefix: str, root: Path) -> list:
    """Start the workers side by side (one local data dir each: RocksDB stores are per process)."""
    env = full_worker_env(prefix)
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(start_pipeline_worker, settings, app_id, data_dir=root / f"w{n}",
                               name=f"{app_id}-{n}", **env) for n in range(1, WORKERS + 1)]
        workers, errors = [], []
        for future in futures:
            try:
                workers.append(future.result())
            except Exception as exc:  # noqa: BLE001 - stop the others, then fail
                errors.append(exc)
    if errors:
        for worker in workers:
            worker.stop()
        raise errors[0]
    return workers


def registered_groups(app_id: str) -> list[str]:
    from streams.runtime.engine import app_groups as groups_of

    return groups_of(app_id)


def app_groups(settings, app_id: str) -> list[str]:
    """Consumer groups of the app on the broker: the Faust app's and one per engine processor."""
    from streams.kafka.topics import admin_client

    admin = admin_client(settings)  # held until the answer came: a collected client cancels its requests
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=30)
    return sorted(g.group_id for g in listed.valid if g.group_id == app_id or g.group_id.startswith(f"{app_id}."))


def group_members(settings, groups: list[str]) -> dict[str, tuple[str, int, set[str]]]:
    """group -> (state, members, registry topics assigned to its members)."""
    from streams.kafka.topics import admin_client, all_specs, full_name

    registry = {full_name(settings, s.name): s.name for s in all_specs()}
    admin = admin_client(settings)
    out = {}
    for group, future in admin.describe_consumer_groups(groups, request_timeout=10).items():
        description = future.result(timeout=30)
        topics = {registry[tp.topic] for member in description.members
                  for tp in member.assignment.topic_partitions if tp.topic in registry}
        out[group] = (description.state.name, len(description.members), topics)
    return out


def stable_with(settings, groups: list[str], members: int) -> bool:
    return all(state == "STABLE" and count == members for state, count, _ in group_members(settings, groups).values())


def lag_by_group(settings, groups: list[str]) -> dict[str, dict[tuple[str, int], int]]:
    """group -> (topic, partition) -> end - committed, over every partition of every topic assigned to
    the group's members (a partition never committed counts from 0)."""
    from streams.ops.lag import group_lag

    out = {}
    for group, (_, _, topics) in group_members(settings, groups).items():
        out[group] = {(row.topic, row.partition): row.lag for row in group_lag(settings, group, sorted(topics))}
    return out


def behind(lags: dict[str, dict[tuple[str, int], int]]) -> dict[str, dict[tuple[str, int], int]]:
    return {group: {tp: lag for tp, lag in rows.items() if lag} for group, rows in lags.items()
            if any(rows.values())}


def summary(lags: dict[str, dict[tuple[str, int], int]]) -> dict[str, dict[str, int]]:
    """group -> topic -> lag summed over partitions (topics with lag only)."""
    out: dict[str, dict[str, int]] = {}
    for group, rows in lags.items():
        for (topic, _), lag in rows.items():
            if lag:
                out.setdefault(group, {}).setdefault(topic, 0)
                out[group][topic] += lag
    return out


def consumed(worker, topic: str, agent: str | None = None) -> float:
    labels = {"topic": topic, **({"agent": agent} if agent else {})}
    try:
        return worker.counter("vitrina_events_in_total", **labels)
    except OSError:
        return 0.0


def publish_uploads(settings, media: Path) -> dict[str, str]:
    """Two new clips, a second upload of the first one's bytes and one without an original in S3;
    upload id -> expected status."""
    from streams.kafka.producer import EventProducer
    from streams.capabilities.uploads.client import new_upload_id, publish_request, upload_file, upload_request

    producer = EventProducer(settings)
    first, second = unique_clip(media, 160, 90, 1.0), unique_clip(media, 192, 108, 1.0)
    expected = {}
    for path in (first, second, first):
        expected[upload_file(settings, producer, path, uploader_id="group")["upload_id"]] = "PROCESSED"
    missing = upload_request(new_upload_id(), "originals/nowhere/none.mp4", "none.mp4", 1000, uploader_id="group")
    publish_request(producer, missing)
    expected[missing["upload_id"]] = "REJECTED"
    producer.flush()
    return expected


def upload_statuses(client: redis.Redis, prefix: str, ids) -> dict[str, str]:
    import json

    found = {}
    for upload_id in ids:
        raw = client.get(f"{prefix}upload:{upload_id}")
        if raw:
            found[upload_id] = json.loads(raw)["status"]
    return found


def progress(client: redis.Redis, data, prefix: str) -> dict:
    """What ``pipeline_done`` still waits for (in a failure message)."""
    starts = data.starts
    counted = {item: int(client.hget(f"{prefix}plays:{item}", "plays") or 0) for item in starts}
    wrong = {item: (counted[item], n) for item, n in starts.items() if counted[item] != n}
    return {"plays_counted": sum(counted.values()), "plays_expected": sum(starts.values()),
            "titles_with_wrong_counts": len(wrong), "examples": dict(list(wrong.items())[:5]),
            "viewers_without_history": sum(1 for v in data.viewers if not client.exists(f"{prefix}history:{v}")),
            "showcase_dirty": client.zcard(f"{prefix}showcase-dirty"), "titles_set": client.exists(f"{prefix}titles")}


def field_differences(expected: dict, actual: dict, limit: int = 12) -> dict:
    """key -> {field: (expected, actual)} for hash views that differ (what ``differences`` cuts short)."""
    out = {}
    for key in sorted(set(expected) & set(actual)):
        want, got = expected[key], actual[key]
        if want != got and isinstance(want, dict) and isinstance(got, dict):
            out[key] = {f: (want.get(f), got.get(f)) for f in sorted(set(want) | set(got))
                        if want.get(f) != got.get(f)}
            if len(out) >= limit:
                break
    return out


def comparable(views: dict, families: set[str]) -> dict:
    return {k: v for k, v in views.items() if k.split(":", 1)[0] in families}


def test_three_workers_one_killed_mid_stream_give_the_views_of_an_uninterrupted_run(private, client, tmp_path):
    from streams.kafka.topics import ensure_topics

    started = time.monotonic()
    settings = private
    data = make_input(titles=150, requests=REQUESTS, seed=11)
    expected_coview = reference_counts(data.playback)
    app_id, prefix = unique("group"), f"group-{uuid.uuid4().hex[:4]}:"

    workers = start_group(settings, app_id, prefix, tmp_path)
    survivors: list = []
    try:
        # every group of the app (streams/runtime/engine PROCESSORS): the modules that load TensorFlow (ranking,
        # showcase) start their processors seconds after the others
        expected_groups = sorted(registered_groups(app_id))
        groups = wait_for(lambda: app_groups(settings, app_id) if app_groups(settings, app_id) == expected_groups
                          else None, "every consumer group of the app", 120)
        wait_for(lambda: stable_with(settings, groups, WORKERS), f"{WORKERS} members in every group {groups}", 90)
        print(f"groups {groups} stable with {WORKERS} members after {time.monotonic() - started:.0f}s")

        uploads = publish_uploads(settings, tmp_path / "media")
        publish(settings, data)
        total = len(data.playback)

        # mid-stream: a third of the playback records consumed by the sessionizers, and a victim whose
        # sessionizer has processed some and checkpointed (its state must come back on another worker)
        def mid_stream():
            done = sum(consumed(w, "playback", "coview-sessions") for w in workers)
            candidates = [w for w in workers if consumed(w, "playback", "coview-sessions") > 0
                          and w.counter("vitrina_engine_checkpoints_total", processor="coview-sessions") > 0]
            return max(candidates, key=lambda w: consumed(w, "playback", "coview-sessions")) \
                if done >= total / 3 and candidates else None

        victim = wait_for(mid_stream, "a third of the stream consumed", 150, every_s=0.1)
        victim.kill()
        killed_at = time.monotonic()
        survivors = [w for w in workers if w is not victim]
        assert not pipeline_done(client, data, prefix), "killed mid-stream: not everything was processed yet"

        try:
            wait_for(lambda: stable_with(settings, groups, WORKERS - 1), "the survivors to own every partition", 90)
            print(f"rebalanced onto {WORKERS - 1} workers {time.monotonic() - killed_at:.0f}s after the kill")
            report = {"at": time.monotonic()}

            def done() -> bool:
                if time.monotonic() - report["at"] > 15:  # say where it stands (pytest -s)
                    report["at"] = time.monotonic()
                    print(f"{time.monotonic() - killed_at:.0f}s after the kill: {progress(client, data, prefix)}; "
                          f"lag {summary(lag_by_group(settings, groups))}")
                return pipeline_done(client, data, prefix)

            try:
                wait_for(done, "every play, history and showcase", 180)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {progress(client, data, prefix)}") from None
            wait_for(lambda: len(stored_counts(client, prefix)) >= len(expected_coview), "every co-view title", 120)
            wait_for(lambda: len(upload_statuses(client, prefix, uploads)) == len(uploads), "every upload answered", 120)
            try:  # every view is there: what remains is each group's commit of its last records
                lags = wait_for(lambda: (lambda l: l if not behind(l) else None)(lag_by_group(settings, groups)),
                                "consumer lag 0 in every group", 180, every_s=1.0)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: still behind {summary(lag_by_group(settings, groups))}") from None
            for worker in survivors:
                quiet(worker, seconds=4.0)
                assert worker.counter("vitrina_dead_letters_total", reason="PROCESSING_FAILED") == 0
            assert not behind(lag_by_group(settings, groups)), "nothing new after the views settled"
        except AssertionError:
            for worker in survivors:
                print(worker.log_tail(40))
            raise
        restored = sum(w.counter("vitrina_engine_restored_records_total", processor="coview-sessions")
                       for w in survivors)
    finally:
        for worker in workers:
            worker.stop()
    group_views = snapshot(client, prefix)
    coview = stored_counts(client, prefix)
    statuses = upload_statuses(client, prefix, uploads)
    print(f"group run done {time.monotonic() - started:.0f}s after the start")

    # the uninterrupted reference: one worker with the view agents of the crash tests (uploads aside: they
    # are checked above, and their media store is shared) on the same records in topics of its own (the
    # internal topics of the group run hold its repartitioned records)
    ref_id, ref_prefix = unique("group-ref"), f"group-ref-{uuid.uuid4().hex[:4]}:"
    ref_settings = dataclasses.replace(settings, topic_prefix=f"{ref_id}.")
    ensure_topics(ref_settings)
    publish(ref_settings, data)
    reference = start_pipeline_worker(ref_settings, ref_id, data_dir=tmp_path / "ref", VITRINA_VIEW_PREFIX=ref_prefix,
                                      VITRINA_AGENTS=",".join(m for m in exact_modules() if m != "uploads"))
    try:
        wait_for(lambda: pipeline_done(client, data, ref_prefix), "the reference run", 240)
        quiet(reference, seconds=4.0)
    finally:
        reference.stop()
    expected = snapshot(client, ref_prefix)
    print(f"reference run done {time.monotonic() - started:.0f}s after the start")

    # every consumer group of the app, each with its topics, uploads included
    # the Faust app's group (low-volume agents, uploads) and one group per engine processor
    assert groups == expected_groups and len(groups) == 9
    assert {"catalogue.titles", "uploads.requested", "uploads.by-content",
            "ranking.samples"} <= {t for (t, _) in lags[app_id]}
    assert {t for (t, _) in lags[f"{app_id}.coview-sessions"]} >= {"playback"}
    assert {t for (t, _) in lags[f"{app_id}.coview-titles"]} == {"coview.contributions"}
    assert {t for (t, _) in lags[f"{app_id}.play-counter"]} == {"playback.by-item"}
    assert {t for (t, _) in lags[f"{app_id}.ranking-label-join"]} == {"ranking.impressions", "playback"}
    assert {t for (t, _) in lags[f"{app_id}.ranking-gate-samples"]} == {"playback"}
    assert all(len({p for (t, p) in rows if t == "playback"}) in (0, 6) for rows in lags.values())

    families = {k.split(":", 1)[0] for k in expected} - TIMED_FAMILIES
    assert {"plays", "history", "popular", "impressions", "title"} <= families, families
    diff = differences(comparable(expected, families), comparable(group_views, families))
    assert not diff, (diff, field_differences(expected, group_views))
    assert sum(int(v["plays"]) for k, v in group_views.items() if k.startswith("plays:")) == sum(data.starts.values())

    assert coview.keys() == expected_coview.keys()
    wrong = {t: (coview[t], expected_coview[t]) for t in expected_coview
             if coview[t] != pytest.approx(expected_coview[t], rel=1e-9)}
    assert not wrong, f"{len(wrong)} titles differ, e.g. {list(wrong.items())[:5]}"
    assert restored > 0, "a survivor restored the victim's sessionizer state from the changelog"

    assert statuses == uploads
