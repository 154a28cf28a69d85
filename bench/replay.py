"""Replay speed: a full rebuild of the views next to first-pass processing of the same input.

On a private embedded stack: publish one input (catalogue, shelves, playback, ranking impressions),
then
  1. first pass: a normal worker with the view agents (catalogue, history, plays, showcase and the
     co-view agent when it exists) consumes everything under a fresh group; events/s = records of the
     input topics / seconds from "worker ready" until the group's committed offsets reach the ends;
  2. replay: ``streams.ops.replay`` rebuilds the same views from offset 0 into a shadow namespace (fresh
     group, fresh changelogs, outputs muted) and swaps it in; events/s measured the same way.
Both runs read the same records with the same agents, so replay_to_first_pass_ratio compares the two
paths (a replay skips output events and dead letters).

    /work/venv/bin/python -m bench.replay [--requests 3000]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import uuid
from pathlib import Path

from bench._common import add_broker_argument, broker_name, run_per_broker, write_result
from infra import settings as settings_module
from infra.settings import Settings

VIEW_MODULES = ("catalogue", "coview", "history", "plays", "showcase")


def private_settings(data_dir: Path) -> Settings:
    from infra.stack import free_port_env

    env = free_port_env(data_dir)
    return dataclasses.replace(settings_module.load(), data_dir=Path(env["VITRINA_DATA_DIR"]),
                               s3_endpoint=env["VITRINA_S3_ENDPOINT"], kafka_bootstrap=env["VITRINA_KAFKA_BOOTSTRAP"],
                               redis_url=env["VITRINA_REDIS_URL"], broker_storage="s3")


def publish_input(settings: Settings, requests: int, seed: int = 5) -> dict[str, int]:
    from demo.pipeline_input import make_pipeline_input
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import spec

    data = make_pipeline_input(300, requests, seed, users=400, items=120, clusters=6)
    producer = EventProducer(settings)
    producer.publish_many(spec("catalogue.titles"), data.titles)
    producer.publish_many(spec("catalogue.shelves"), data.shelves)
    producer.publish_many(spec("playback"), data.playback)
    producer.publish_many(spec("ranking.impressions"), data.impressions)
    producer.flush()
    return {"titles": len(data.titles), "shelves": len(data.shelves), "playback": len(data.playback),
            "impressions": len(data.impressions)}


def first_pass(settings: Settings, replay_plan, modules: list[str]) -> tuple[float, float | None, float]:
    """Seconds from worker ready until a normal worker's group committed every record of the plan's ranges,
    the share of its processors' decodes answered by the shared decode cache, and the CPU seconds the
    worker spent meanwhile (a figure other processes on the machine disturb far less than the wall time)."""
    from infra.ports import pick_free_ports
    from streams.kafka.topics import admin_client
    from streams.ops.replay import PROGRESS_POLL_S, committed_progress
    from streams.ops.supervisor import start_worker

    admin = admin_client(settings)
    worker = start_worker(settings, web_port=pick_free_ports(1)[0], name=replay_plan.app_id,
                          extra_env={"VITRINA_APP_ID": replay_plan.app_id, "VITRINA_AGENTS": ",".join(modules)})
    try:
        ready = time.monotonic()
        cpu_at_ready = worker.cpu_seconds()
        while True:
            done, finished = committed_progress(settings, replay_plan, admin)
            if finished:
                seconds = time.monotonic() - ready
                cpu = worker.cpu_seconds() - cpu_at_ready
                lookups = {labels["result"]: value for labels, value in worker.samples("vitrina_decode_cache_lookups")}
                total = sum(lookups.values())
                return seconds, (round(lookups.get("hit", 0.0) / total, 3) if total else None), cpu
            if not worker.alive():
                raise RuntimeError(worker.log_tail())
            if time.monotonic() - ready > float(os.environ.get("BENCH_REPLAY_FIRST_PASS_TIMEOUT_S", "900")):
                raise TimeoutError(f"first pass not done: {done}\n{worker.log_tail(80)}")
            time.sleep(PROGRESS_POLL_S)  # the same looks as the rebuild's
    finally:
        worker.stop()


def main() -> int:
    from infra.stack import EmbeddedStack
    from streams.ops.replay import agent_modules, plan, run
    from streams.kafka.topics import ensure_topics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="ranking requests of the synthetic stream")
    add_broker_argument(parser)
    args = parser.parse_args()
    if run_per_broker("replay", args.broker, ["first_pass_events_per_s", "replay_events_per_s",
                                              "rebuild_events_per_s"]):
        return 0
    modules = [m for m in VIEW_MODULES if m in agent_modules()]
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        settings = private_settings(Path(tmp))
        os.environ.update({"VITRINA_DATA_DIR": str(settings.data_dir), "VITRINA_S3_ENDPOINT": settings.s3_endpoint,
                           "VITRINA_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "VITRINA_REDIS_URL": settings.redis_url})
        stack = EmbeddedStack(settings, die_with_parent=True)
        stack.up()
        try:
            ensure_topics(settings)
            counts = publish_input(settings, args.requests)
            load_before = os.getloadavg()
            first_plan = plan(settings, modules, None, replay_id=f"first-{uuid.uuid4().hex[:6]}")
            first_s, hit_ratio, first_cpu_s = first_pass(settings, first_plan, modules)
            replay_plan = plan(settings, modules, None, shadow=True, agents=first_plan.agents)
            result = run(settings, replay_plan, progress=lambda line: print("\r" + line, end="", flush=True))
            print()
        finally:
            stack.down()
    records = first_plan.total
    figures = {
        "broker": broker_name(settings),
        "agents": list(first_plan.agents.agents), "modules": modules,
        "coview_included": "coview" in modules,
        "input": counts, "records": records, "replayed_records": replay_plan.total,
        "first_pass_seconds": round(first_s, 2), "first_pass_events_per_s": round(records / first_s, 1),
        "first_pass_worker_cpu_seconds": round(first_cpu_s, 2),
        # events per CPU second of the worker: its throughput if it had a core of its own
        "first_pass_events_per_cpu_s": round(records / first_cpu_s, 1) if first_cpu_s else None,
        "first_pass_decode_cache_hit_ratio": hit_ratio, "decode_cache_entries": settings.engine_decode_cache,
        "replay_seconds": round(result.processing_seconds, 2), "replay_events_per_s": round(result.events_per_s, 1),
        # `vitrina rebuild` is this replay (every view module, into a shadow namespace, swapped in)
        "rebuild_events_per_s": round(result.events_per_s, 1),
        "rebuild_worker_cpu_seconds": (None if result.processing_cpu_seconds is None
                                       else round(result.processing_cpu_seconds, 2)),
        # the rebuild's figure per CPU second of its workers (both phases), beside the first pass's
        "rebuild_events_per_cpu_s": (round(records / result.processing_cpu_seconds, 1)
                                     if result.processing_cpu_seconds else None),
        "replay_to_first_pass_ratio": round(result.events_per_s / (records / first_s), 3),
        "replay_total_seconds_incl_start_settle_swap": round(result.seconds, 2),
        "swapped_keys": result.swapped, "deleted_stale_keys": result.deleted,
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "note": "events/s = input records / seconds from worker ready until the group committed the last record; "
                "2-core machine shared with other test runs, figures are noisy",
    }
    for key in ("records", "first_pass_events_per_s", "first_pass_events_per_cpu_s", "first_pass_decode_cache_hit_ratio",
                "rebuild_events_per_s", "rebuild_events_per_cpu_s", "replay_to_first_pass_ratio", "agents"):
        print(f"{key}: {figures[key]}")
    write_result("replay", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
