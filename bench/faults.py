"""The fault suite: each fault on the same generated stream, every view compared with an uninterrupted run.

On a private embedded stack (or one the caller passes in): one input is generated (catalogue, shelves,
playback and ranking impressions: ``demo.pipeline_input``), then

  * the **reference**: a worker with every view module (catalogue, co-view, history, plays, showcase)
    consumes the input uninterrupted until its views are at rest; its snapshot (bench/_views.py) is the
    expected result;
  * each **fault** runs the same pipeline on the same input, in a namespace of its own (its own topic
    prefix, view prefix, app id and data dir), with the fault injected mid-stream, and waits (bounded)
    until its views equal the reference. Nothing is rebuilt from the final inputs before comparing
    (the showcase builder's settled pass is part of the worker).

Faults:
  worker_kill9               SIGKILL of the worker mid-stream, restarted with the same local store
  broker_kill9               SIGKILL of the broker mid-stream, started again
  redis_loss_worker_stopped  views at rest, worker stopped, Redis flushed, ``vitrina rebuild``
  redis_loss_worker_running  views at rest, Redis flushed under the running worker, ``vitrina rebuild``
  rebalance_kill             two workers in one group, one SIGKILLed mid-stream (not restarted)
  oversized_record           a ~1.5 MB value among the good playback events (must be dead-lettered)
  forged_header              ``vitrina-origin`` set by a producer on input records (well-formed and not)

Figures per fault:
  lost             input events whose effect is missing from the views: START events not counted
                   (per title, expected minus counted, when short), impressions not counted (same, per
                   title), plus every playback event of a viewer whose history view is missing or
                   differs from the reference. Goal 0.
  views_differing  view keys (bench/_views.py snapshot, bookkeeping fields left out) missing, extra or
                   different from the reference at the end of the bounded wait. Goal 0.
  converge_s       seconds from the fault until the views first equalled the reference; None when they
                   did not within the timeout (``timeout_s`` says how long was waited).

    python -m bench.faults [--events 3000] [--faults worker_kill9,broker_kill9] [--timeout 240]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from bench._views import by_family, differences, differing_keys, snapshot, without_field
from infra.settings import Settings

FAULTS = ("worker_kill9", "broker_kill9", "redis_loss_worker_stopped", "redis_loss_worker_running",
          "rebalance_kill", "oversized_record", "forged_header")
VIEW_MODULES_SKIPPED = {"ranking"}  # trains models, not a view (streams/ops/replay.py REBUILD_SKIP)
OVERSIZED_BYTES = 1_500_000
SETTLED_S = 3.0  # the showcase builder's settled pass after this many quiet seconds (VITRINA_SHOWCASE_SETTLED_S)


@dataclass
class FaultResult:
    name: str
    lost: int
    views_differing: int
    converge_s: float | None
    timeout_s: float
    differing: list[str] = field(default_factory=list)      # readable lines, a few per kind
    differing_by_family: dict[str, int] = field(default_factory=dict)
    lost_detail: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.views_differing == 0

    def as_dict(self) -> dict[str, Any]:
        return {"lost": self.lost, "views_differing": self.views_differing, "converge_s": self.converge_s,
                "timeout_s": self.timeout_s, "lost_detail": self.lost_detail,
                "differing_by_family": self.differing_by_family, "differing": self.differing[:20], **self.notes}


# -- the input -------------------------------------------------------------------------------------

def make_input(events: int, seed: int = 7):
    """About ``events`` playback events (plus as many impressions) over a small catalogue. The
    synthetic stream gives ~7.5 playback events per ranking request."""
    from demo.pipeline_input import make_pipeline_input

    requests = max(50, round(events / 7.5))
    return make_pipeline_input(120, requests, seed, users=40, items=60, clusters=4)


def view_modules() -> list[str]:
    from streams.ops.replay import rebuild_modules
    return [m for m in rebuild_modules() if m not in VIEW_MODULES_SKIPPED]


@dataclass
class Run:
    """One namespace: its own topics (prefix), views (prefix), consumer group (app id) and data dir."""
    name: str
    settings: Settings
    prefix: str
    app_id: str
    data_dir: Path
    workers: list = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {"VITRINA_APP_ID": self.app_id, "VITRINA_AGENTS": ",".join(view_modules()),
                "VITRINA_VIEW_PREFIX": self.prefix, "VITRINA_SHOWCASE_SETTLED_S": str(SETTLED_S)}

    def start_worker(self, tag: str = "1", store: str = "w1"):
        from infra.ports import pick_free_ports
        from streams.ops.supervisor import start_worker

        local = self.data_dir / store
        local.mkdir(parents=True, exist_ok=True)
        worker = start_worker(self.settings, web_port=pick_free_ports(1)[0], name=f"{self.app_id}-{tag}",
                              extra_env={**self.env(), "VITRINA_DATA_DIR": str(local)})
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            if worker.alive():
                worker.stop()


def new_run(base: Settings, name: str, root: Path) -> Run:
    from streams.kafka.topics import ensure_topics

    tag = uuid.uuid4().hex[:6]
    settings = dataclasses.replace(base, topic_prefix=f"f{tag}.")
    ensure_topics(settings)
    data_dir = root / f"{name}-{tag}"
    data_dir.mkdir(parents=True, exist_ok=True)
    return Run(name, settings, f"fault-{name}-{tag}:", f"fault-{name}-{tag}", data_dir)


def publish(settings: Settings, data, *, middle: Callable[[Any], None] | None = None,
            headers: Callable[[int], list[tuple[str, bytes]] | None] | None = None) -> None:
    """The input on the run's topics. ``middle(producer)`` is called half way through the playback
    events; ``headers(i)`` gives extra headers for playback event ``i`` (a producer forging them)."""
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import full_name, key_of, spec

    producer = EventProducer(settings, **{"message.max.bytes": 4_000_000})
    producer.publish_many(spec("catalogue.titles"), data.titles)
    producer.publish_many(spec("catalogue.shelves"), data.shelves)
    producer.flush()
    playback = spec("playback")
    half = len(data.playback) // 2
    if headers is None:
        producer.publish_many(playback, data.playback[:half])
        if middle is not None:
            producer.flush()
            middle(producer)
        producer.publish_many(playback, data.playback[half:])
    else:
        name = full_name(settings, playback.name)
        for i, event in enumerate(data.playback):
            value = producer.codec.encode(playback.schema, event)
            extra = headers(i)
            producer._producer.produce(name, value, key_of(playback, event), headers=extra,
                                       on_delivery=producer._on_delivery)
            if i % 500 == 0:
                producer._producer.poll(0)
    producer.publish_many(spec("ranking.impressions"), data.impressions)
    producer.flush()


# -- measuring -------------------------------------------------------------------------------------

def lost_events(client: Any, prefix: str, data, reference: dict[str, Any], views: dict[str, Any]) -> dict[str, int]:
    """Input events whose effect is missing (see the module docstring)."""
    from processors.partition_keys import viewer_key

    pipe = client.pipeline(transaction=False)
    starts = data.starts
    for item in starts:
        pipe.hget(f"{prefix}plays:{item}", "plays")
    counted = pipe.execute()
    plays = sum(max(0, n - int(c or 0)) for (item, n), c in zip(starts.items(), counted))
    shown: dict[str, int] = {}
    for event in data.impressions:
        shown[event["item_id"]] = shown.get(event["item_id"], 0) + 1
    stored = client.hgetall(f"{prefix}impressions")
    impressions = sum(max(0, n - int(stored.get(item) or 0)) for item, n in shown.items())
    per_viewer: dict[str, int] = {}
    for event in data.playback:
        key = viewer_key(event)
        per_viewer[key] = per_viewer.get(key, 0) + 1
    histories = sum(n for viewer, n in per_viewer.items()
                    if f"history:{viewer}" in reference and views.get(f"history:{viewer}") != reference[f"history:{viewer}"])
    return {"plays": plays, "impressions": impressions, "history_events": histories}


def pipeline_complete(client: Any, prefix: str, data) -> bool:
    """Every START counted, every history written, the catalogue in, no showcase build queued, and the
    showcase builder's settled pass done on the current inputs."""
    pipe = client.pipeline(transaction=False)
    for item in data.starts:
        pipe.hget(f"{prefix}plays:{item}", "plays")
    if any(c is None or int(c) != n for c, n in zip(pipe.execute(), data.starts.values())):
        return False
    return (client.zcard(f"{prefix}showcase-dirty") == 0 and client.exists(f"{prefix}titles") == 1
            and client.hget(f"{prefix}showcase-settled", "fingerprint") is not None)


def wait_at_rest(client: Any, prefix: str, data, *, stable_s: float, timeout_s: float,
                 say: Callable[[str], None]) -> dict[str, Any]:
    """The snapshot once the run is complete and its views did not change for ``stable_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if not pipeline_complete(client, prefix, data):
            last = None
            continue
        views = snapshot(client, prefix)
        if views != last:
            last, since = views, time.monotonic()
        elif time.monotonic() - since >= stable_s:
            return views
    raise TimeoutError(f"the views in {prefix} did not come to rest within {timeout_s:.0f}s")


def wait_equal(client: Any, prefix: str, reference: dict[str, Any], timeout_s: float,
               since: float) -> tuple[float | None, dict[str, Any]]:
    """Poll until the namespace's views equal ``reference``; (seconds since ``since`` or None, last snapshot)."""
    deadline = time.monotonic() + timeout_s
    views: dict[str, Any] = {}
    while time.monotonic() < deadline:
        views = snapshot(client, prefix)
        if views == reference:
            return round(time.monotonic() - since, 1), views
        time.sleep(1.0)
    return None, snapshot(client, prefix)


def consumed(worker, topic: str) -> float:
    try:
        return worker.counter("vitrina_events_in_total", topic=topic)
    except OSError:
        return 0.0


def wait_mid_stream(worker, data, share: float = 0.3, timeout_s: float = 180.0) -> None:
    target = share * len(data.playback)
    deadline = time.monotonic() + timeout_s
    while consumed(worker, "playback") < target:
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not get mid-stream")
        if not worker.alive():
            raise RuntimeError(f"worker died:\n{worker.log_tail()}")
        time.sleep(0.05)


def rebuild(settings: Settings, prefix: str, timeout_s: float) -> subprocess.CompletedProcess:
    """``vitrina rebuild`` of every view module into ``prefix``, as an operator runs it."""
    from infra.settings import to_env

    env = {**os.environ, **to_env(settings), "VITRINA_VIEW_PREFIX": prefix, "VITRINA_LOG_LEVEL": "warning",
           "VITRINA_SHOWCASE_SETTLED_S": str(SETTLED_S)}
    code = "import sys; from streams.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "rebuild", "--agent", ",".join(view_modules())], env=env,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


# -- the harness -----------------------------------------------------------------------------------

class FaultSuite:
    """One stack, one input, one reference; ``run(name)`` measures one fault against it."""

    def __init__(self, stack: Any, settings: Settings, data, root: Path, *, timeout_s: float = 240.0,
                 stable_s: float = 8.0, say: Callable[[str], None] = lambda line: None) -> None:
        import redis

        self.stack, self.settings, self.data, self.root = stack, settings, data, root
        self.timeout_s, self.stable_s, self.say = timeout_s, stable_s, say
        self.client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.reference: dict[str, Any] | None = None
        self.reference_s: float | None = None

    def close(self) -> None:
        self.client.close()

    def run_reference(self) -> dict[str, Any]:
        run = new_run(self.settings, "reference", self.root)
        publish(run.settings, self.data)
        started = time.monotonic()
        run.start_worker()
        try:
            self.reference = wait_at_rest(self.client, run.prefix, self.data, stable_s=self.stable_s,
                                          timeout_s=self.timeout_s * 2, say=self.say)
        except TimeoutError:
            self.say(run.workers[0].log_tail(40))
            raise
        finally:
            run.stop()
        self.reference_s = round(time.monotonic() - started, 1)
        self.say(f"reference: {len(self.reference)} view keys at rest after {self.reference_s}s "
                 f"({by_family(list(self.reference))})")
        return self.reference

    def run(self, name: str) -> FaultResult:
        if self.reference is None:
            self.run_reference()
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        run = new_run(self.settings, name, self.root)
        notes: dict[str, Any] = {}
        try:
            fault_at = getattr(self, f"_{name}")(run, notes)
            converge_s, views = wait_equal(self.client, run.prefix, self.reference, self.timeout_s, fault_at)
            if converge_s is not None:  # equal once: still equal a settled pass later?
                time.sleep(SETTLED_S + 2)
                views = snapshot(self.client, run.prefix)
                if views != self.reference:
                    converge_s, views = wait_equal(self.client, run.prefix, self.reference, self.timeout_s, fault_at)
            notes["dead_letters"] = self._dead_letters(run)
        finally:
            run.stop()
        keys = differing_keys(self.reference, views)
        if keys:  # diagnosis for the report: how many differ by more than the similar lists' version counter
            notes["differing_beyond_similar_version"] = len(differing_keys(
                without_field(self.reference, "similar", "version"), without_field(views, "similar", "version")))
        lost = lost_events(self.client, run.prefix, self.data, self.reference, views)
        return FaultResult(name, sum(lost.values()), len(keys), converge_s, self.timeout_s,
                           differences(self.reference, views, limit=5), by_family(keys), lost, notes)

    def _dead_letters(self, run: Run) -> float:
        total = 0.0
        for worker in run.workers:
            if worker.alive():
                try:
                    total += worker.counter("vitrina_dead_letters_total")
                except OSError:
                    pass
        return total

    # -- the faults (each returns the monotonic time of the fault) ---------------------------------

    def _worker_kill9(self, run: Run, notes: dict) -> float:
        publish(run.settings, self.data)
        worker = run.start_worker("1")
        wait_mid_stream(worker, self.data)
        worker.kill()
        at = time.monotonic()
        run.start_worker("2")  # same local store, as a supervisor restarting it would
        return at

    def _broker_kill9(self, run: Run, notes: dict) -> float:
        publish(run.settings, self.data)
        worker = run.start_worker("1")
        wait_mid_stream(worker, self.data)
        self.stack.kill_component("broker", signal.SIGKILL)
        at = time.monotonic()
        time.sleep(2.0)
        self.stack.up()
        return at

    def _redis_loss(self, run: Run, notes: dict, *, keep_running: bool) -> float:
        publish(run.settings, self.data)
        worker = run.start_worker("1")
        wait_at_rest(self.client, run.prefix, self.data, stable_s=2.0, timeout_s=self.timeout_s, say=self.say)
        if not keep_running:
            worker.stop()
        self.client.flushall()
        at = time.monotonic()
        done = rebuild(run.settings, run.prefix, self.timeout_s)
        notes["rebuild_rc"] = done.returncode
        if done.returncode != 0:
            notes["rebuild_error"] = (done.stderr or done.stdout)[-500:]
        return at

    def _redis_loss_worker_stopped(self, run: Run, notes: dict) -> float:
        return self._redis_loss(run, notes, keep_running=False)

    def _redis_loss_worker_running(self, run: Run, notes: dict) -> float:
        return self._redis_loss(run, notes, keep_running=True)

    def _rebalance_kill(self, run: Run, notes: dict) -> float:
        publish(run.settings, self.data)
        first = run.start_worker("1", "w1")
        run.start_worker("2", "w2")
        wait_mid_stream(first, self.data, share=0.15)
        first.kill()
        return time.monotonic()

    def _oversized_record(self, run: Run, notes: dict) -> float:
        at = [0.0]

        def oversized(producer) -> None:
            value = b"\x00" + os.urandom(OVERSIZED_BYTES)  # not Avro: a dead letter
            producer.publish_raw("playback", value, b"oversized")
            producer.flush()
            at[0] = time.monotonic()

        publish(run.settings, self.data, middle=oversized)
        run.start_worker("1")
        notes["oversized_bytes"] = OVERSIZED_BYTES
        return at[0]

    def _forged_header(self, run: Run, notes: dict) -> float:
        def forged(i: int) -> list[tuple[str, bytes]] | None:
            if i % 20 == 0:
                return [("vitrina-origin", b"0:0")]   # well-formed: made the play counter drop events
            if i % 20 == 7:
                return [("vitrina-origin", b"\xff not an origin")]  # malformed: crashed the agents
            return None

        publish(run.settings, self.data, headers=forged)
        at = time.monotonic()
        run.start_worker("1")
        notes["forged_records"] = sum(1 for i in range(len(self.data.playback)) if forged(i))
        return at


# -- CLI -------------------------------------------------------------------------------------------

def run_suite(names: Iterable[str], events: int, timeout_s: float, say: Callable[[str], None],
              progress: Callable[[str], None] | None = None) -> tuple[dict[str, FaultResult], dict[str, Any]]:
    """A private stack, the input, the reference and each fault; (results, facts about the run)."""
    from bench.replay import private_settings
    from infra.stack import EmbeddedStack
    from streams.kafka.topics import ensure_topics

    names = list(names)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        settings = private_settings(Path(tmp))
        stack = EmbeddedStack(settings, die_with_parent=True)
        stack.up()
        try:
            ensure_topics(settings)
            data = make_input(events)
            suite = FaultSuite(stack, settings, data, Path(tmp) / "runs", timeout_s=timeout_s, say=say)
            try:
                (progress or say)("reference")
                suite.run_reference()
                results = {}
                for name in names:
                    (progress or say)(name)
                    results[name] = suite.run(name)
                    say(f"{name}: lost {results[name].lost}, views differing {results[name].views_differing}, "
                        f"converge {results[name].converge_s}")
            finally:
                suite.close()
            facts = {"input": {"playback": len(data.playback), "impressions": len(data.impressions),
                               "titles": len(data.titles), "shelves": len(data.shelves)},
                     "reference_s": suite.reference_s, "reference_view_keys": len(suite.reference or {}),
                     "broker_settings": settings.broker}
            return results, facts
        finally:
            stack.down()


def main(argv: list[str] | None = None) -> int:
    from bench._common import (
        add_broker_argument,
        broker_name,
        run_per_broker,
        write_result,
    )

    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="playback events in the generated stream (default 3000)")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated subset of: {', '.join(FAULTS)} (default all)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for a fault run to converge")
    add_broker_argument(parser)
    parser.set_defaults(broker="kafka")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.faults.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
    if run_per_broker("faults", args.broker, compare=[]):
        return 0

    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("starting the stack", total=len(names) + 1)

        def progress(step: str) -> None:
            bar.update(task, description=f"running {step}", advance=0 if step == "reference" else 1)

        results, facts = run_suite(names, args.events, args.timeout, console.log, progress)
    from infra.settings import load
    table = Table(title=f"faults on {broker_name(load())}, {facts['input']['playback']} playback events")
    for column in ("fault", "lost", "views differing", "converge s", "differing families"):
        table.add_column(column)
    for name, result in results.items():
        table.add_row(name, str(result.lost), str(result.views_differing),
                      f"{result.converge_s}" if result.converge_s is not None else f"not in {result.timeout_s:.0f}",
                      ", ".join(f"{k} {v}" for k, v in result.differing_by_family.items()))
    console.print(table)
    write_result("faults", {"broker": broker_name(load()), "events": args.events, **facts,
                            "faults": {name: r.as_dict() for name, r in results.items()}})
    return 0 if all(r.ok for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
