"""Co-view pipeline throughput, freshness and memory on a fresh embedded stack.

Two inputs, each on its own topics (topic prefix) and its own worker limited to the co-view
processors (VITRINA_AGENTS=coview), started and idle BEFORE the input is published (the engine
starts consuming as soon as its partitions are assigned, so a backlog would be half gone before the
first measurement):

* ``generated``: the built-in generator's player stream (demo/eventgen.py: sessions of 1-6
  titles, START / HEARTBEAT every 60 s / PAUSE / SEEK / STOP / COMPLETE) - what a live service sends;
* ``movielens``: MovieLens ratings as START + COMPLETE pairs (every second event completes a view,
  sessions of hundreds of views with a 20-view window): the co-view-heaviest input, ~20 title updates
  per event.

Per input: events_per_s = N / (time from the first to the last playback record counted by the
sessionizer's ``vitrina_events_in_total``, /metrics polled every 0.2 s); end_to_end_events_per_s also
waits until the per-title stage has consumed every batch the sessionizer produced; raw consume =
an aiokafka consumer reading the same N records of the same topic (no decode) in the same run.
Freshness on the idle worker (generated input): probes (a new viewer watches two new titles) timed
from publish to the first ``similar:{first}`` containing the second, polled every 5 ms.
Memory (movielens input): worker RSS growth over the run scaled to 1M events, and the JSON size of
the per-title co-view state scaled to 10k titles.

Quality figures (hr10, ndcg10, baselines, dataset) are copied from bench/results/coview_quality.json,
written by bench/coview_quality.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench._common import RESULTS, add_broker_argument, broker_name, run_per_broker, write_result

MOVIELENS = Path("/work/shared/data/datasets/movielens-ml-latest-small")


def _fresh_env() -> Path:
    from infra.stack import free_port_env
    data_dir = Path(tempfile.mkdtemp(prefix="vitrina-bench-coview-"))
    os.environ.update(free_port_env(data_dir))
    return data_dir


def movielens_events(limit: int) -> list[dict]:
    from demo.stage_coview import movielens_playback
    return movielens_playback(limit)


def state_bytes_per_10k_titles(events: list[dict]) -> tuple[float, int]:
    from processors.coview.memory import CoviewIndex, SessionStore
    from processors.coview.sessionize import ViewCompleted
    sessions, index = SessionStore(), CoviewIndex()
    for event in events:
        for out in sessions.feed(event):
            if type(out) is ViewCompleted:
                index.add_view(out)
    size = sum(len(json.dumps(state, separators=(",", ":"))) for state in index.titles.values())
    return size / max(1, len(index.titles)) * 10_000, len(index.titles)


async def raw_consume(settings, topic: str, expected: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                group_id=None, fetch_max_bytes=64 * 1024 * 1024,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or range(6))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen, started = 0, None
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            if started is None and batch:
                started = time.perf_counter()
            seen += sum(len(records) for records in batch.values())
        return expected / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def counter(worker, name: str, **labels: str) -> float | None:
    """A worker counter, or None when /metrics did not answer (the event loop was busy)."""
    try:
        return worker.counter(name, **labels)
    except OSError:
        return None


def worker_pid(worker) -> int:
    """The Python process of the worker (the Popen child)."""
    return worker.process.pid


def probe_events(user: str, first: str, second: str) -> list[dict]:
    now = datetime.now(timezone.utc)
    base = {"session_id": f"probe-{user}", "user_id": user, "device_id": f"d-{user}", "device_type": "TV",
            "os": "tizen", "app_version": "4.0.0", "duration_ms": 8000, "network_kbps": None,
            "buffered_ratio": None, "stall_ms": 0, "bitrate_kbps": None}
    events = []
    for n, item in enumerate((first, second)):
        at = now + timedelta(seconds=10 * n)
        events.append({**base, "item_id": item, "event_id": str(uuid.uuid4()), "event_type": "START",
                       "position_ms": 0, "event_time": at})
        events.append({**base, "item_id": item, "event_id": str(uuid.uuid4()), "event_type": "COMPLETE",
                       "position_ms": 4000, "event_time": at + timedelta(seconds=4)})
    return events


def freshness(settings, producer, probes: int) -> list[float]:
    from sinks.redis_views import sync_client
    from streams.kafka.topics import spec
    redis = sync_client(settings)
    delays = []
    for i in range(probes):
        tag = uuid.uuid4().hex[:8]
        first, second = f"probe-{tag}-a", f"probe-{tag}-b"
        started = time.perf_counter()
        producer.publish_many(spec("playback"), probe_events(f"probe-{tag}", first, second))
        producer.flush()
        deadline = started + 30
        while time.perf_counter() < deadline:
            raw = redis.get(f"bench-generated:similar:{first}")
            if raw and second in raw:
                delays.append(time.perf_counter() - started)
                break
            time.sleep(0.005)
        time.sleep(0.1)
    return delays


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def generated_events(limit: int, seed: int = 7) -> list[dict]:
    from demo.catalogue import synthetic_titles
    from demo.eventgen import StreamConfig, generate
    titles = synthetic_titles(2000, seed)
    events: list[dict] = []
    for topic, event in generate(titles, StreamConfig(viewers=max(100, limit // 40)), seed):
        if topic == "playback":
            events.append(event)
            if len(events) >= limit:
                break
    return events


def measure(settings, label: str, events: list[dict]) -> dict:
    """Publish ``events`` to a worker that is already waiting; rates, RSS and the raw-consume baseline."""
    from dataclasses import replace

    from infra.ports import pick_free_ports
    from streams.kafka.producer import EventProducer
    from streams.ops.supervisor import start_worker
    from streams.kafka.topics import ensure_topics, full_name, spec

    settings = replace(settings, topic_prefix=f"bench-{label}.")
    ensure_topics(settings)
    n = len(events)
    worker = start_worker(settings, web_port=pick_free_ports(1)[0], name=f"bench-coview-{label}",
                          extra_env={"VITRINA_AGENTS": "coview", "VITRINA_VIEW_PREFIX": f"bench-{label}:"})
    try:
        time.sleep(2.0)  # the engine's groups join after the Faust worker is ready
        pid = worker_pid(worker)
        rss_start = rss_kib(pid)
        producer = EventProducer(settings)
        published = time.perf_counter()
        producer.publish_many(spec("playback"), events)
        producer.flush()
        publish_s = time.perf_counter() - published
        first_at = last_at = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            seen = counter(worker, "vitrina_events_in_total", topic="playback", agent="coview-sessions")
            now = time.perf_counter()
            if seen and first_at is None:
                first_at = now - 0.1  # the first record came within the last poll interval
            if seen is not None and seen >= n:
                last_at = now
                break
            time.sleep(0.2)
        if last_at is None:
            raise RuntimeError(f"{label}: the worker did not consume the input in time")
        sent = got = 0.0
        while time.monotonic() < deadline:
            sent = counter(worker, "vitrina_events_out_total", topic="coview.contributions") or 0.0
            got = counter(worker, "vitrina_events_in_total", topic="coview.contributions", agent="coview-titles") or 0.0
            if got >= sent:
                break
            time.sleep(0.2)
        end_to_end_at = time.perf_counter()
        rss_end = rss_kib(pid)
        views = worker.counter("vitrina_coview_views_total")
        lists = worker.counter("vitrina_coview_lists_written_total")
        rate = n / max(last_at - first_at, 1e-3)
        e2e = n / max(end_to_end_at - first_at, 1e-3)
        raw = asyncio.run(raw_consume(settings, full_name(settings, "playback"), n))
        print(f"{label}: {n:,} events published in {publish_s:.1f}s; sessionizer {rate:,.0f} events/s, "
              f"end to end {e2e:,.0f} events/s ({views:,.0f} views, {sent:,.0f} batches, {lists:,.0f} list writes); "
              f"raw consume {raw:,.0f} events/s")
        result = {"events": n, "events_per_s": round(rate), "end_to_end_events_per_s": round(e2e),
                  "raw_consume_events_per_s": round(raw), "ratio_to_raw": round(rate / raw, 3),
                  "views_completed": int(views), "contribution_batches": int(sent), "similar_list_writes": int(lists),
                  "rss_kib_start_end": [rss_start, rss_end]}
        if label == "generated":
            delays = freshness(settings, producer, PROBES)
            result["freshness"] = delays
        return result
    finally:
        worker.stop()


PROBES = 30


def main() -> None:
    global PROBES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="playback events per input (default 200,000)")
    parser.add_argument("--probes", type=int, default=30, help="freshness probes (default 30)")
    add_broker_argument(parser)
    args = parser.parse_args()
    if run_per_broker("coview", args.broker, ["events_per_s", "sessionizer_events_per_s", "raw_consume_events_per_s",
                                              "worst_case_events_per_s"]):
        return
    PROBES = args.probes

    _fresh_env()
    from infra.settings import load
    from infra.stack import EmbeddedStack

    settings = load()
    stack = EmbeddedStack(settings)
    stack.up()
    try:
        inputs = {"generated": generated_events(args.events), "movielens": movielens_events(args.events)}
        results = {label: measure(settings, label, events) for label, events in inputs.items()}
        delays = results["generated"].pop("freshness")
        p50, p95 = statistics.median(delays), percentile(delays, 0.95)
        print(f"freshness (idle worker, {len(delays)} probes): p50 {p50:.3f}s p95 {p95:.3f}s")
        heavy = results["movielens"]
        state_10k, titles = state_bytes_per_10k_titles(inputs["movielens"])
        rss_start, rss_end = heavy["rss_kib_start_end"]
        rss_per_m = (rss_end - rss_start) * 1024 / heavy["events"] * 1_000_000
        print(f"memory: worker RSS +{(rss_end - rss_start) / 1024:.0f} MiB over {heavy['events']:,} MovieLens events "
              f"(~{rss_per_m / 2**20:.0f} MiB per 1M); co-view state {state_10k / 2**20:.1f} MiB JSON per 10k titles")
        live, worst = results["generated"], results["movielens"]
        quality = json.loads((RESULTS / "coview_quality.json").read_text())
        write_result("coview", {
            # headline: a player-like stream through sessionize + per-title co-view + list writes
            "events_per_s": live["end_to_end_events_per_s"],
            "broker": broker_name(settings),
            "sessionizer_events_per_s": live["events_per_s"],
            "raw_consume_events_per_s": live["raw_consume_events_per_s"],
            "ratio_to_raw": round(live["end_to_end_events_per_s"] / live["raw_consume_events_per_s"], 3),
            "worst_case_events_per_s": worst["end_to_end_events_per_s"],
            "worst_case_sessionizer_events_per_s": worst["events_per_s"],
            "headline_input": "generated player stream, end to end (sessionize + co-view + lists); worst_case_* = "
                              "MovieLens pairs; per-input figures under 'inputs'",
            "goal_events_per_s": 20_000,
            "inputs": results,
            "input_descriptions": {
                "generated": "built-in generator player stream (demo/eventgen.py), playback topic only",
                "movielens": "MovieLens ratings as START+COMPLETE pairs (one view per 2 events, window 20)"},
            "freshness_p50_s": round(p50, 3),
            "freshness_p95_s": round(p95, 3),
            "freshness_probes": len(delays),
            "freshness_method": "idle worker: publish a 2-title session of a new viewer -> first list in Redis "
                                "containing the second title (Redis polled every 5 ms)",
            "memory_rss_mib_per_1m_events": round(rss_per_m / 2**20, 1),
            "state_json_mib_per_10k_titles": round(state_10k / 2**20, 2),
            "state_titles_measured": titles,
            "memory_method": "RSS = worker VmRSS growth over the MovieLens input scaled to 1M events (in-memory "
                             "engine state + caches); state = JSON bytes of the per-title co-view states "
                             "(processors/coview/memory.py on the same events), scaled to 10k titles",
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "hr10": quality.get("hr10"),
            "ndcg10": quality.get("ndcg10"),
            "best_baseline": quality.get("best_baseline"),
            "best_baseline_ndcg10": quality.get("best_baseline_ndcg10"),
            "baselines": quality.get("baselines"),
            "dataset": quality.get("dataset"),
            "quality_source": "copied from bench/results/coview_quality.json (bench/coview_quality.py)",
        })
    finally:
        stack.down()


if __name__ == "__main__":
    main()
