"""Scale-out: whole-pipeline events/s with 1 worker and with 2 workers in one consumer group.

On a private embedded stack (started here, stopped at the end), for each configuration (1 worker, then
2 workers) with its own topics (VITRINA_TOPIC_PREFIX), its own app id (VITRINA_APP_ID: the Faust
group and the engine processors' groups) and its own view namespace (VITRINA_VIEW_PREFIX):

  1. start the workers side by side: full ``vitrina worker`` processes (every agent module and the
     co-view engine, default settings), and wait until every consumer group of the app is STABLE with
     that many members (so no worker starts alone with every partition);
  2. publish one generated input, the same records in both configurations (demo/pipeline_input.py:
     catalogue titles, shelves, the synthetic stream's playback and ranking impressions);
  3. clock from the first record published to consumer lag 0 on every group of the app: the committed
     offsets of every group (AdminClient.list_consumer_groups, topics from the members' assignments,
     internal repartition topics included) reach the end of every partition. Polled every 0.25 s with
     one admin client (the poll itself costs little CPU).

events/s = input records / those seconds; scaling_ratio = workers_2 / workers_1 from the same run.
The registry topics have 6 partitions, so each of 2 workers owns 3 of every topic (the ranking trainer's
one-partition topic lives on one of them).

    .venv/bin/python -m bench.scaleout [--requests 3000] [--port-base 24100] [--broker kafka|tansu|both]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench._common import broker_name, run_per_broker, running_stack, write_result
from infra import settings as settings_module
from infra.settings import Settings

POLL_S = 0.25


def private_settings(data_dir: Path, port_base: int | None) -> Settings:
    """Settings of a stack in ``data_dir``: free loopback ports, or consecutive ones from ``port_base``."""
    from urllib.parse import urlsplit

    from infra.settings import with_redis_password
    from infra.stack import S3_INTERNAL_PORTS, free_port_env

    env = free_port_env(data_dir)
    if port_base:
        s3, broker, redis = port_base, port_base + 10, port_base + 20  # S3 uses a block, Kafka up to 6 ports
        assert max(S3_INTERNAL_PORTS.values()) < 10
        env.update({"VITRINA_S3_ENDPOINT": f"127.0.0.1:{s3}", "VITRINA_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker}",
                    "VITRINA_REDIS_URL": with_redis_password(f"redis://127.0.0.1:{redis}/0",
                                                             urlsplit(env["VITRINA_REDIS_URL"]).password)})
    os.environ.update(env)  # workers and helpers read the same stack
    return dataclasses.replace(settings_module.load(), data_dir=Path(env["VITRINA_DATA_DIR"]),
                               s3_endpoint=env["VITRINA_S3_ENDPOINT"], kafka_bootstrap=env["VITRINA_KAFKA_BOOTSTRAP"],
                               redis_url=env["VITRINA_REDIS_URL"])


def broker_details(settings: Settings) -> str:
    return f"embedded, {settings.brokers} node(s), {settings.kafka_bootstrap}"


def make_records(requests: int, seed: int) -> dict[str, list[dict]]:
    from demo.pipeline_input import make_pipeline_input

    data = make_pipeline_input(300, requests, seed, users=400, items=120, clusters=6)
    return {"catalogue.titles": data.titles, "catalogue.shelves": data.shelves, "playback": data.playback,
            "ranking.impressions": data.impressions}


class GroupWatch:
    """Committed offsets of every consumer group of an app against the ends of their topics."""

    def __init__(self, settings: Settings, app_id: str) -> None:
        from streams.kafka.topics import admin_client, all_specs, full_name

        self.settings = settings
        self.app_id = app_id
        self.admin = admin_client(settings)  # held: a collected AdminClient cancels its pending requests
        self.registry = {full_name(settings, s.name) for s in all_specs()}
        self.assigned: dict[str, list[tuple[str, int]]] = {}
        self.probe = None
        self.known_ends: dict[tuple[str, int], int] = {}

    def groups(self) -> list[str]:
        listed = self.admin.list_consumer_groups(request_timeout=10).result(timeout=30)
        return sorted(g.group_id for g in listed.valid
                      if g.group_id == self.app_id or g.group_id.startswith(f"{self.app_id}."))

    def describe(self, groups: list[str]) -> dict[str, tuple[str, int]]:
        """group -> (state, members); remembers the registry topic partitions assigned to each group."""
        out = {}
        for group, future in self.admin.describe_consumer_groups(groups, request_timeout=10).items():
            description = future.result(timeout=30)
            topics = {tp.topic for m in description.members for tp in m.assignment.topic_partitions
                      if tp.topic in self.registry}
            if topics:
                self.assigned[group] = self.partitions(sorted(topics))
            out[group] = (description.state.name, len(description.members))
        return out

    def partitions(self, topics: list[str]) -> list[tuple[str, int]]:
        metadata = self.admin.list_topics(timeout=10)
        return [(t, p) for t in topics for p in sorted(metadata.topics[t].partitions)]

    def stable(self, members: int, expected_groups: int) -> bool:
        groups = self.groups()
        if len(groups) < expected_groups:
            return False
        return all(state == "STABLE" and count == members for state, count in self.describe(groups).values())

    def ends(self) -> dict[tuple[str, int], int]:
        """End offsets as streams.kafka.offsets reads them (the high watermark; verified by reading on Tansu)."""
        from streams.kafka.offsets import end_offsets, probe_consumer

        if self.probe is None:
            self.probe = probe_consumer(self.settings)
        wanted = sorted({tp for parts in self.assigned.values() for tp in parts})
        ends = end_offsets(self.probe, wanted, self.known_ends)
        self.known_ends.update(ends)
        return ends

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()
            self.probe = None

    def committed(self) -> dict[str, dict[tuple[str, int], int]]:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        requests = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in parts])
                    for group, parts in self.assigned.items()]
        out = {}
        for request in requests:  # the admin API takes one group per call
            result = self.admin.list_consumer_group_offsets([request], request_timeout=10)[request.group_id]
            answer = result.result(timeout=30)
            out[request.group_id] = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in answer.topic_partitions}
        return out

    def lag(self) -> tuple[int, dict[tuple[str, int], int]]:
        """(total lag over every group, the lowest committed offset of any group per partition)."""
        ends, committed = self.ends(), self.committed()
        total, lowest = 0, {}
        for group, parts in self.assigned.items():
            for tp in parts:
                at = committed[group].get(tp, 0)
                total += max(0, ends[tp] - at)
                lowest[tp] = min(lowest.get(tp, at), at)
        return total, lowest


@contextmanager
def worker_group(settings: Settings, count: int, prefix: str, root: Path, port_base: int | None) -> Iterator[list]:
    """``count`` full workers of ``settings.app_id`` (one local data dir each), started side by side; web
    ports from ``port_base`` + 30 when given."""
    from infra.ports import pick_free_ports
    from streams.ops.supervisor import start_worker

    ports = ([port_base + 30 + n for n in range(count)] if port_base else
             pick_free_ports(count, avoid={settings.s3_port, settings.broker_port, settings.redis_port}))

    def start(n: int):
        data_dir = root / f"worker-{n}"
        data_dir.mkdir(parents=True, exist_ok=True)
        return start_worker(settings, web_port=ports[n - 1], name=f"{settings.app_id}-{n}",
                            extra_env={"VITRINA_VIEW_PREFIX": prefix, "VITRINA_DATA_DIR": str(data_dir)})

    workers, errors = [], []
    with ThreadPoolExecutor(count) as pool:
        for future in [pool.submit(start, n) for n in range(1, count + 1)]:
            try:
                workers.append(future.result())
            except Exception as exc:  # noqa: BLE001 - stop the others, then fail
                errors.append(exc)
    try:
        if errors:
            raise errors[0]
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def expected_groups(settings: Settings) -> int:
    """Consumer groups of a full worker: the Faust app's and one per engine processor."""
    from streams.ops.replay import agent_modules, describe

    return len(describe(settings, agent_modules()).group_topics())


def publish(settings: Settings, records: dict[str, list[dict]]) -> float:
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import spec

    producer = EventProducer(settings)
    for topic, values in records.items():
        producer.publish_many(spec(topic), values)
    producer.flush()
    return time.perf_counter()


def measure(base: Settings, count: int, records: dict[str, list[dict]], root: Path, timeout_s: float,
            progress: bool, port_base: int | None = None) -> dict:
    from tqdm import tqdm

    from streams.kafka.topics import ensure_topics, full_name

    tag = uuid.uuid4().hex[:6]
    settings = dataclasses.replace(base, topic_prefix=f"scale{count}-{tag}.", app_id=f"bench-scale{count}-{tag}")
    prefix = f"bench-scale{count}-{tag}:"
    ensure_topics(settings)
    inputs = {full_name(settings, topic) for topic in records}
    total = sum(len(values) for values in records.values())
    watch = GroupWatch(settings, settings.app_id)
    groups = expected_groups(settings)
    with worker_group(settings, count, prefix, root / settings.app_id, port_base) as workers:
        deadline = time.monotonic() + 120
        while not watch.stable(count, expected_groups=groups):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} worker(s): the groups did not settle: {watch.describe(watch.groups())}")
            time.sleep(0.5)
        load_before = os.getloadavg()
        started = time.perf_counter()
        published = publish(settings, records) - started
        bar = tqdm(total=total, unit="ev", desc=f"{count} worker(s)", disable=not progress, mininterval=1.0,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} input records committed "
                              "[{elapsed}{postfix}]")
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                lag, lowest = watch.lag()
                done = sum(at for tp, at in lowest.items() if tp[0] in inputs)
                bar.set_postfix(lag=lag, refresh=False)  # every group, internal topics included
                bar.update(min(done, total) - bar.n)
                if lag == 0 and done >= total:
                    finished = time.perf_counter() - started
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{count} worker(s): lag {lag} after {timeout_s}s")
                dead = [w for w in workers if not w.alive()]
                if dead:
                    raise RuntimeError(f"a worker exited:\n{dead[0].log_tail()}")
                time.sleep(POLL_S)
        finally:
            bar.close()
            watch.close()
        load_after = os.getloadavg()
        dead_letters = sum(w.counter("vitrina_dead_letters_total", reason="PROCESSING_FAILED") for w in workers)
    plays = plays_counted(settings, prefix)
    starts = sum(1 for e in records["playback"] if e["event_type"] == "START")
    if plays != starts:
        raise RuntimeError(f"{count} worker(s): {plays} plays counted, {starts} START events published")
    rate = total / finished
    print(f"{count} worker(s): {total:,} events in {finished:.1f}s (published in {published:.1f}s) "
          f"-> {rate:,.0f} events/s; {len(watch.assigned)} groups at lag 0; load {load_before[0]:.1f} -> "
          f"{load_after[0]:.1f}")
    return {"events": total, "seconds": round(finished, 2), "events_per_s": round(rate, 1),
            "publish_seconds": round(published, 2), "groups": sorted(watch.assigned),
            "partitions_per_group": {g: len(parts) for g, parts in watch.assigned.items()},
            "processing_failed_dead_letters": dead_letters, "plays_counted": plays,
            "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after]}


def plays_counted(settings: Settings, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        keys = list(client.scan_iter(match=f"{prefix}plays:*", count=1000))
        return sum(int(client.hget(key, "plays") or 0) for key in keys)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Writes bench/results/scaleout.json.")
    parser.add_argument("--requests", type=int, default=3000,
                        help="ranking requests of the synthetic stream (default 3000: ~47k input records, as "
                             "bench.replay; about 2.5 min in all on an idle 2-core machine)")
    parser.add_argument("--seed", type=int, default=5, help="seed of the generated input (default 5)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a configuration may take to reach lag 0 (default 300)")
    parser.add_argument("--port-base", type=int, default=0,
                        help="put the stack on ports from here (S3 block, Kafka +10, Redis +20, workers +30); "
                             "default: free ports")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--broker", choices=("kafka", "tansu", "both"), default="kafka",
                        help="broker(s) to measure on, each on a fresh embedded stack of its own (default kafka; "
                             "both: Apache Kafka, then Tansu, results merged as the other benches do)")
    args = parser.parse_args()
    if run_per_broker("scaleout", args.broker, ["workers_1_events_per_s", "workers_2_events_per_s", "scaling_ratio"]):
        return 0

    records = make_records(args.requests, args.seed)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        settings = private_settings(Path(tmp), args.port_base or None)
        with running_stack(settings, die_with_parent=True):
            broker = broker_name(settings)
            print(f"broker: {broker} ({broker_details(settings)}); input: " + ", ".join(f"{len(v):,} {k}" for k, v in records.items()))
            for count in (1, 2):
                results[count] = measure(settings, count, records, Path(tmp), args.timeout, not args.no_progress,
                                         args.port_base or None)
    one, two = results[1]["events_per_s"], results[2]["events_per_s"]
    ratio = two / one
    print(f"workers_1_events_per_s: {one:,.0f}\nworkers_2_events_per_s: {two:,.0f}\nscaling_ratio: {ratio:.3f}")
    write_result("scaleout", {
        "workers_1_events_per_s": one, "workers_2_events_per_s": two, "scaling_ratio": round(ratio, 3),
        "broker": broker, "broker_details": broker_details(settings), "events": results[1]["events"], "partitions": 6,
        "workers_1_seconds": results[1]["seconds"], "workers_2_seconds": results[2]["seconds"],
        "input": {topic: len(values) for topic, values in records.items()}, "requests": args.requests,
        "runs": {f"workers_{count}": result for count, result in results.items()},
        "method": "full `vitrina worker` processes (every agent module + co-view engine), started and idle with "
                  "their groups STABLE before the input is published; seconds from the first record published "
                  "until every consumer group of the app (Faust agents' group and the engine processors' groups) "
                  "has committed the end of every partition assigned to it (internal topics included); "
                  "events = input records (catalogue titles + shelves + playback + ranking impressions); "
                  "fresh topic prefix, app id and view namespace per configuration",
        "note": "2-core machine shared with other test runs while measured: figures are noisy, and with 2 cores "
                "(the broker, Redis and the workers share them) 2 workers cannot reach 2x",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
