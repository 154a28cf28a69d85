"""Replay a topic range through chosen agents, into the live views or a shadow namespace swapped in.

How a replay runs (``vitrina replay`` / ``vitrina rebuild``, streams/cli/replay.py):

1. **Describe** the chosen agent modules (a subprocess imports them with ``VITRINA_AGENTS``): their
   agents, the registry topics they consume, their tables. Nothing is agent-specific here: any module
   in streams/agents/ is covered.
2. **Plan**: per partition of every consumed, non-internal topic a range [start, end). Topics named
   with ``--topic`` get the requested range (offsets or times; end = the verified end of the log by
   default); the agents' other input topics get an empty range at their end, so only the chosen
   topics are reprocessed. A dry run prints this plan and stops.
3. **Run** a replay worker (``streams.ops.supervisor.start_worker``) under a fresh Faust app id
   ``vitrina-replay-<id>`` (so a fresh consumer group and fresh changelog topics: table state is
   rebuilt from the range), only the chosen modules registered, a fresh local data dir, the range's
   start offsets committed for the new group before it starts, the ends passed in
   ``VITRINA_REPLAY_UNTIL`` (records past them are skipped), outputs and dead letters muted unless
   ``emit`` (streams/runtime/replay_mode.py), internal repartition topics private to the replay, and views
   written under ``VITRINA_VIEW_PREFIX`` (the live ``vitrina:`` or a shadow ``vitrina-shadow-<id>:``).
   **Lookups first** (``LOOKUP_MODULES``): agents join views of other agents (the history agent reads
   episode metadata from the catalogue's title views). Replaying every topic at once let the history
   run ahead of the catalogue (issue 18: 27 of 52 histories without their series progress; with a 4k
   title catalogue the first history view was written before most titles). A Kafka Streams user
   expects global-table semantics: a global table is restored to the end of its topic before any
   stream task processes a record. So a replay that includes a lookup module and others runs in two
   phases under the same app id and namespace: phase 1 the lookup modules alone on their topics until
   committed (a record is committed after its batch is written), phase 2 every module on the other
   topics (the lookup ranges already done). Lookup records arriving after the plan was made are not
   part of it (a live worker applies them).
4. **Watch** the group's committed offsets against the ends (a progress line), then wait until the
   worker's view writes have been quiet for ``settle_s`` and nothing is queued in the namespace's
   work queues (e.g. users waiting for a showcase build); then stop the worker.
   Views built by timers from OTHER views (showcases: ``DERIVED_VIEWS``) are then rebuilt once from the
   final inputs (every user forced, fresh stats), so they do not depend on how the topics interleaved.
5. **Swap** (shadow only): in ONE MULTI/EXEC every shadow key is RENAMEd over its live key and the live
   keys of the same view families (``plays``, ``history``, ``showcase``...: the part of the key after
   the prefix up to the first ``:``) that the replay did not produce are deleted. Readers see the old
   views or the new ones, never a mix. **Catch-up**: records that arrived in the replayed topics
   while the shadow was built (live workers applied them to live keys the swap just replaced) are then
   replayed once more, from the plan's ends to the new ends, into the live namespace under the same
   app id (tables go on from the replayed state), and derived views are refreshed again
   (``catch_up_plan``).
6. **Clean up**: the replay's private topics and changelogs are deleted (best effort), and its data dir.

Derived marks live with their namespace: the impression counter's per-partition marks
(``impressions-hwm``, sinks/showcase_views.py) sit next to the counts, so a shadow build starts from
empty marks and its marks replace the live ones in the swap (same family); play counters keep their
marks in their table state, which a replay rebuilds under its own app id. ``vitrina rebuild`` always
builds into a shadow namespace (the recovery after a Redis loss: streams/cli/replay.py).

What a replay cannot do: state is rebuilt from the range only, so a range that does not start at the
beginning of the log gives aggregates (play counts, histories) of that range alone; the plan says so
for agents with tables. A key a live worker updates with a record that arrives during the catch-up
itself may be overwritten by the catch-up's (one record older) value until its next update; counters
are not affected (exact per partition and offset).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from infra.logs import get_logger
from infra.settings import Settings

log = get_logger("vitrina.replay")

LIVE_PREFIX_DEFAULT = "vitrina:"
SHADOW_PREFIX = "vitrina-shadow-"
# Modules whose views other agents read while they process their own records (joins: the history agent
# reads episode metadata from the catalogue's title views). Like Kafka Streams' global tables they are
# brought up to date first: a replay that includes them and other modules runs them alone on their
# topics until applied, then the rest. Their topics must be read by them only: the second phase starts
# those topics at the end of the first.
LOOKUP_MODULES = ("catalogue",)
# Modules a full rebuild leaves out, with the reason (shown by `vitrina rebuild --dry-run`).
REBUILD_SKIP = {
    "ranking": "trains and publishes model versions (S3 registry, models.published): not a view; "
               "its Redis keys are restored from the registry copy in S3",
    "ranking_online": "per-version online metrics: counters appended to the model registry (S3), not a view; "
                      "a replay worker does not run it",
    "assets": "asset commands act outside Redis (S3 deletion of reaped assets, VMAF recompute): replaying them "
              "could delete files a later upload of the same bytes brought back; collections are not rebuilt",
}


class ReplayError(RuntimeError):
    """A replay that cannot be planned or run; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def as_dict(self) -> dict[str, str]:
        return {"error": self.code, "message": str(self)}


# -- 1. describe -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AgentSet:
    modules: tuple[str, ...]
    agents: tuple[str, ...]
    sources: tuple[str, ...]    # consumed registry topics (not internal): what a replay range covers
    internal: tuple[str, ...]   # consumed internal repartition topics (private copies in a replay)
    tables: tuple[str, ...]
    # consumer group suffix -> the source topics it reads: "" is the Faust app's group (the app id),
    # others are engine processors (group "<app id>.<suffix>", streams/runtime/engine/)
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def group_topics(self) -> list[tuple[str, tuple[str, ...]]]:
        return list(self.groups) or [("", self.sources)]


def agent_modules() -> list[str]:
    import pkgutil

    import streams.agents as package
    return sorted(i.name for i in pkgutil.iter_modules(package.__path__) if not i.name.startswith("_"))


def _print_description() -> None:
    """Run in a subprocess with VITRINA_AGENTS set: print the registered agents as JSON."""
    from infra.settings import load
    from streams.agents import register_all
    from streams.runtime.app import app
    from streams.runtime.replay_mode import is_internal

    settings = load()
    register_all(settings)
    prefix = settings.topic_prefix
    from streams.runtime.engine.service import registered

    consumed: set[str] = set()
    agents = []
    faust_sources: set[str] = set()
    for name, agent in app.agents.items():
        agents.append(name)
        for topic in getattr(agent.channel, "topics", ()):
            topic = topic[len(prefix):] if prefix and topic.startswith(prefix) else topic
            consumed.add(topic)
            faust_sources.add(topic)
    groups: dict[str, list[str]] = {"": sorted(t for t in faust_sources if not is_internal(t))} if agents else {}
    tables = sorted(app.tables.keys())
    for processor in registered():
        agents.append(processor.name)
        names = [spec.name for spec in processor.sources]
        consumed.update(names)
        groups[processor.name] = sorted(t for t in names if not is_internal(t))
        tables.append(f"{processor.name} (engine state)")
    print(json.dumps({"agents": sorted(agents),
                      "sources": sorted(t for t in consumed if not is_internal(t)),
                      "internal": sorted(t for t in consumed if is_internal(t)),
                      "tables": sorted(tables),
                      "groups": groups}))


def describe(settings: Settings, modules: Iterable[str]) -> AgentSet:
    from infra.settings import to_env

    modules = tuple(dict.fromkeys(m.strip() for m in modules if m.strip()))
    known = agent_modules()
    unknown = [m for m in modules if m not in known]
    if not modules or unknown:
        raise ReplayError("UNKNOWN_AGENT", f"unknown agent module(s) {unknown or '(none given)'}; known: {', '.join(known)}")
    env = {**os.environ, **to_env(settings), "VITRINA_AGENTS": ",".join(modules), "VITRINA_LOG_LEVEL": "warning"}
    env.pop("VITRINA_REPLAY_ID", None)
    done = subprocess.run([sys.executable, "-c", "from streams.ops.replay import _print_description; _print_description()"],
                          env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{\"agents\"")]
    if done.returncode != 0 or not lines:
        raise ReplayError("DESCRIBE_FAILED", f"could not import agent modules {modules}: {done.stderr[-2000:]}")
    found = json.loads(lines[-1])
    return AgentSet(modules, tuple(found["agents"]), tuple(found["sources"]), tuple(found["internal"]),
                    tuple(found["tables"]),
                    tuple((suffix, tuple(topics)) for suffix, topics in sorted(found.get("groups", {}).items())))


# -- 2. plan ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PartitionRange:
    topic: str
    partition: int
    start: int
    end: int
    log_end: int

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class ReplayPlan:
    replay_id: str
    agents: AgentSet
    topics: tuple[str, ...]              # the topics reprocessed
    ranges: list[PartitionRange]         # every consumed source topic (others with empty ranges)
    shadow: bool
    emit: bool
    live_prefix: str = LIVE_PREFIX_DEFAULT
    warnings: list[str] = field(default_factory=list)
    lookups: AgentSet | None = None      # the LOOKUP_MODULES among the modules, replayed first (phase 1)

    @property
    def app_id(self) -> str:
        return f"vitrina-replay-{self.replay_id}"

    def group(self, suffix: str) -> str:
        return f"{self.app_id}.{suffix}" if suffix else self.app_id

    @property
    def view_prefix(self) -> str:
        return f"{SHADOW_PREFIX}{self.replay_id}:" if self.shadow else self.live_prefix

    @property
    def total(self) -> int:
        return sum(r.count for r in self.ranges)

    def until(self) -> dict[str, dict[str, int]]:
        bounds: dict[str, dict[str, int]] = {}
        for r in self.ranges:
            bounds.setdefault(r.topic, {})[str(r.partition)] = r.end
        return bounds

    def phases(self) -> list[ReplayPlan]:
        """The plan in the order it runs: the lookup (global table) topics first, on their own, then
        every other topic with the lookup ranges already done. One phase when there is nothing to order."""
        if self.lookups is None:
            return [self]
        tables = set(self.lookups.sources)
        first = [r for r in self.ranges if r.topic in tables]
        if not any(r.count for r in first) or not any(r.count for r in self.ranges if r.topic not in tables):
            return [self]
        rest = [r if r.topic not in tables else PartitionRange(r.topic, r.partition, r.end, r.end, r.log_end)
                for r in self.ranges]
        return [replace(self, agents=self.lookups, topics=tuple(t for t in self.topics if t in tables),
                        ranges=first, lookups=None),
                replace(self, ranges=rest, lookups=None)]

    def as_dict(self) -> dict:
        return {"replay_id": self.replay_id, "app_id": self.app_id, "modules": list(self.agents.modules),
                "agents": list(self.agents.agents), "tables": list(self.agents.tables), "topics": list(self.topics),
                "shadow": self.shadow, "view_prefix": self.view_prefix, "emit": self.emit, "total": self.total,
                "warnings": self.warnings,
                "phases": [list(p.agents.modules) for p in self.phases()],
                "ranges": [{"topic": r.topic, "partition": r.partition, "start": r.start, "end": r.end,
                            "log_end": r.log_end, "count": r.count} for r in self.ranges]}

    def describe(self) -> list[str]:
        lines = [f"replay {self.replay_id}: modules {','.join(self.agents.modules)} "
                 f"(agents {', '.join(self.agents.agents)}; tables {', '.join(self.agents.tables) or '-'})",
                 f"  into {'shadow namespace ' + self.view_prefix + ' then swapped over ' + self.live_prefix if self.shadow else 'the live views ' + self.view_prefix}"
                 f"; outputs and dead letters {'re-emitted' if self.emit else 'muted'}"]
        for r in self.ranges:
            if r.topic in self.topics:
                lines.append(f"  {r.topic:<24} p{r.partition:<3} start={r.start:>9} end={r.end:>9} "
                             f"count={r.count:>9} (log end {r.log_end})")
        idle = sorted({r.topic for r in self.ranges if r.topic not in self.topics})
        if idle:
            lines.append(f"  not replayed (other inputs of these agents, start at their end): {', '.join(idle)}")
        phases = self.phases()
        if len(phases) > 1:
            lines.append(f"  in two phases: first {', '.join(phases[0].topics)} ({','.join(phases[0].agents.modules)}) "
                         "until applied, then the other topics (lookups before the events that join them)")
        lines.append(f"  total {self.total} record(s)")
        lines += [f"  warning: {w}" for w in self.warnings]
        return lines


@dataclass(frozen=True)
class RangeSpec:
    from_offset: int | None = None
    from_time_ms: int | None = None
    to_offset: int | None = None
    to_time_ms: int | None = None


def plan(settings: Settings, modules: Iterable[str], topics: Iterable[str] | None, span: RangeSpec = RangeSpec(),
         *, shadow: bool = False, emit: bool = False, replay_id: str | None = None,
         agents: AgentSet | None = None) -> ReplayPlan:
    """``topics`` None = every input topic of the agents."""
    from streams.kafka.offsets import end_offsets, offset_for_time, partitions_of, probe_consumer
    from streams.kafka.topics import full_name
    from sinks.redis_views import PREFIX

    agents = agents or describe(settings, modules)
    chosen = tuple(agents.sources) if topics is None else tuple(dict.fromkeys(topics))
    foreign = [t for t in chosen if t not in agents.sources]
    if foreign:
        raise ReplayError("TOPIC_NOT_CONSUMED", f"topic(s) {foreign} are not inputs of {','.join(agents.modules)}; "
                          f"their inputs: {', '.join(agents.sources) or '(none)'}")
    if not chosen:
        raise ReplayError("NOTHING_TO_REPLAY", f"{','.join(agents.modules)} consume no replayable topic")
    consumer = probe_consumer(settings)
    ranges: list[PartitionRange] = []
    try:
        layout = {topic: partitions_of(consumer, full_name(settings, topic)) for topic in agents.sources}
        ends = end_offsets(consumer, [(full_name(settings, t), p) for t, parts in layout.items() for p in parts])
        for topic, parts in layout.items():
            name = full_name(settings, topic)
            for partition in parts:
                log_end = ends[(name, partition)]
                if topic not in chosen:
                    ranges.append(PartitionRange(topic, partition, log_end, log_end, log_end))
                    continue
                start = 0
                if span.from_offset is not None:
                    start = span.from_offset
                elif span.from_time_ms is not None:
                    start = offset_for_time(consumer, name, partition, span.from_time_ms)
                end = log_end
                if span.to_offset is not None:
                    end = span.to_offset
                elif span.to_time_ms is not None:
                    end = offset_for_time(consumer, name, partition, span.to_time_ms)
                start = max(0, min(start, log_end))
                end = max(start, min(end, log_end))
                ranges.append(PartitionRange(topic, partition, start, end, log_end))
    finally:
        consumer.close()
    lookup_modules = [m for m in agents.modules if m in LOOKUP_MODULES]
    lookups = None
    if lookup_modules and len(lookup_modules) < len(agents.modules):
        lookups = describe(settings, lookup_modules)
    result = ReplayPlan(replay_id or uuid.uuid4().hex[:8], agents, chosen, ranges, shadow, emit, live_prefix=PREFIX,
                        lookups=lookups)
    partial = [r for r in ranges if r.topic in chosen and r.start > 0]
    if agents.tables and partial:
        result.warnings.append(f"tables {', '.join(agents.tables)} are rebuilt from the range only: it does not "
                               "start at offset 0 everywhere, so aggregates cover the range alone")
    if emit:
        result.warnings.append("outputs and dead letters of the range are published again (--emit)")
    return result


# -- 3./4. run and watch ---------------------------------------------------------------------------

@dataclass
class ReplayResult:
    plan: ReplayPlan
    processed: int
    seconds: float
    processing_seconds: float    # from the worker being ready until the range was committed
    processing_cpu_seconds: float | None = None  # the replay workers' CPU seconds meanwhile
    swapped: int = 0
    deleted: int = 0
    view_keys: int = 0
    caught_up: int = 0           # records that arrived during a shadow build, applied after the swap

    @property
    def events_per_s(self) -> float:
        return self.plan.total / self.processing_seconds if self.processing_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"replay_id": self.plan.replay_id, "records": self.plan.total, "seconds": round(self.seconds, 2),
                "processing_seconds": round(self.processing_seconds, 2), "events_per_s": round(self.events_per_s, 1),
                "processing_cpu_seconds": (None if self.processing_cpu_seconds is None
                                           else round(self.processing_cpu_seconds, 2)),
                "swapped": self.swapped, "deleted": self.deleted, "view_keys": self.view_keys,
                "caught_up": self.caught_up}


def _commit_starts(settings: Settings, plan: ReplayPlan) -> None:
    """The range's start offsets for every group of the replay. Their workers (an earlier phase's, or the
    shadow build's before a catch-up) were stopped by this replay: ``reset_exited_group`` (on Tansu, which
    keeps listing an exited member, the offsets are committed by a member of the group)."""
    from streams.ops.group_offsets import PartitionPlan, reset_exited_group

    by_topic: dict[str, list[PartitionPlan]] = {}
    for r in plan.ranges:
        by_topic.setdefault(r.topic, []).append(PartitionPlan(r.topic, r.partition, None, r.start, r.log_end))
    for suffix, topics in plan.agents.group_topics():
        plans = [p for topic in topics for p in by_topic.get(topic, [])]
        if plans:
            reset_exited_group(settings, plan.group(suffix), plans)


def _create_private_topics(settings: Settings, plan: ReplayPlan) -> list[str]:
    from dataclasses import replace

    from streams.runtime.replay_mode import private_name
    from streams.kafka.topics import ensure_topics, spec

    specs = [replace(spec(t), name=private_name(t, plan.replay_id)) for t in plan.agents.internal]
    ensure_topics(settings, specs)
    return [s.name for s in specs]


def committed_progress(settings: Settings, plan: ReplayPlan, admin: Any = None) -> tuple[int, bool]:
    """(records of the range committed by the replay's groups, whether every partition reached its end).

    A topic read by several groups (Faust agents and engine processors) counts as far as the
    slowest of them. ``admin``: an admin client to reuse (a poll loop asks often)."""
    from streams.ops.group_offsets import committed
    from streams.kafka.topics import admin_client, full_name

    admin = admin or admin_client(settings)
    by_topic: dict[str, list[PartitionRange]] = {}
    for r in plan.ranges:
        if r.count:
            by_topic.setdefault(r.topic, []).append(r)
    positions: dict[tuple[str, int], int] = {}
    for suffix, topics in plan.agents.group_topics():
        for topic in topics:
            ranges = by_topic.get(topic)
            if not ranges:
                continue
            offsets = committed(admin, plan.group(suffix), full_name(settings, topic), [r.partition for r in ranges])
            for r in ranges:
                at = offsets.get(r.partition)
                at = r.start if at is None else at
                key = (topic, r.partition)
                positions[key] = min(positions.get(key, at), at)
    done, finished = 0, True
    for topic, ranges in by_topic.items():
        for r in ranges:
            at = positions.get((topic, r.partition), r.start)
            done += max(0, min(at, r.end) - r.start)
            finished &= at >= r.end
    return done, finished


def _namespace_key(key: str, prefix: str) -> str:
    """A redis_views constant (built with this process's PREFIX) moved into namespace ``prefix``."""
    from sinks.redis_views import PREFIX
    return prefix + key[len(PREFIX):]


def pending_work(redis, prefix: str) -> int:
    """Work queued in a view namespace that a worker still has to do (users waiting for a showcase build)."""
    from sinks.redis_views import SHOWCASE_DIRTY_KEY
    return int(redis.zcard(_namespace_key(SHOWCASE_DIRTY_KEY, prefix)))


def run(settings: Settings, plan: ReplayPlan, *, timeout_s: float = 3600.0, settle_s: float = 6.0,
        progress: Callable[[str], None] | None = None, keep: bool = False, swap: bool = True) -> ReplayResult:
    """Run the plan; ``swap=False`` leaves a shadow build in its namespace (inspect it, then
    ``swap_namespace`` or delete it). ``keep`` keeps the replay's topics and data dir (debugging)."""
    from sinks.redis_views import sync_client

    say = progress or (lambda line: None)
    started = time.monotonic()
    deadline = started + timeout_s
    private = _create_private_topics(settings, plan)
    data_dir = settings.data_dir / "replay" / plan.replay_id
    data_dir.mkdir(parents=True, exist_ok=True)
    redis = sync_client(settings)
    done, processing, cpu = _run_phases(settings, plan, data_dir, deadline, settle_s, say)
    if DERIVED_VIEWS.intersection(plan.agents.modules):
        say(f"refreshing derived views: {refresh_derived_views(settings, plan.view_prefix)}")
    result = ReplayResult(plan, done, 0.0, processing, cpu)
    if plan.shadow and swap:
        result.swapped, result.deleted = swap_namespace(redis, plan.view_prefix, plan.live_prefix)
        catch_up = catch_up_plan(settings, plan)
        if catch_up is not None:
            say(f"catching up: {catch_up.total} record(s) arrived during the replay, applied to the live views")
            result.caught_up, _, _ = _run_phases(settings, catch_up, data_dir, deadline, settle_s, say)
            if DERIVED_VIEWS.intersection(plan.agents.modules):
                say(f"refreshing derived views: {refresh_derived_views(settings, plan.live_prefix)}")
    result.view_keys = sum(1 for _ in redis.scan_iter(match=plan.live_prefix + "*", count=1000))
    if not keep:
        cleanup(settings, plan, private, data_dir)
    result.seconds = time.monotonic() - started
    return result


def _run_phases(settings: Settings, plan: ReplayPlan, data_dir: Path, deadline: float, settle_s: float,
                say: Callable[[str], None]) -> tuple[int, float, float]:
    """(records, processing seconds, the workers' CPU seconds meanwhile), over every phase."""
    done, processing, cpu = 0, 0.0, 0.0
    phases = plan.phases()
    for number, phase in enumerate(phases, 1):
        if len(phases) > 1:
            say(f"replay {plan.replay_id}: phase {number}/{len(phases)}: {','.join(phase.agents.modules)} "
                f"on {', '.join(sorted({r.topic for r in phase.ranges if r.count}))}")
        # a lookup phase ends once committed: a record is committed after its batch was written
        quiet_s = settle_s if number == len(phases) else min(settle_s, 1.0)
        phase_done, phase_seconds, phase_cpu = _run_phase(settings, phase, data_dir, deadline, quiet_s, say)
        done += phase_done
        processing += phase_seconds
        cpu += phase_cpu
    return done, processing, cpu


def catch_up_plan(settings: Settings, plan: ReplayPlan) -> ReplayPlan | None:
    """After a shadow build was swapped in: the records that arrived in its topics since the plan was
    made, as a plan into the LIVE namespace under the same app id (the tables go on from the replayed
    state, so the views it writes are whole; counters are exact per partition and offset, so records a
    live worker counted too are counted once). The live workers applied these records to the old live
    keys, which the swap replaced: without this they would be missing until their keys' next update.
    None when nothing arrived, or when the plan did not run to the end of its topics (a bounded range)."""
    from streams.kafka.offsets import end_offsets, probe_consumer
    from streams.kafka.topics import full_name

    if any(r.end != r.log_end for r in plan.ranges if r.topic in plan.topics):
        return None
    consumer = probe_consumer(settings)
    try:
        ends = end_offsets(consumer, [(full_name(settings, r.topic), r.partition) for r in plan.ranges])
    finally:
        consumer.close()
    ranges = []
    for r in plan.ranges:
        now = max(r.end, ends[(full_name(settings, r.topic), r.partition)])
        ranges.append(PartitionRange(r.topic, r.partition, r.end if r.topic in plan.topics else now, now, now))
    caught = replace(plan, ranges=ranges, shadow=False, warnings=[])
    return caught if caught.total else None


PROGRESS_POLL_S = 0.25


def _run_phase(settings: Settings, plan: ReplayPlan, data_dir: Path, deadline: float, settle_s: float,
               say: Callable[[str], None]) -> tuple[int, float, float]:
    """One replay worker over the plan's ranges until they are committed and its views settled;
    returns (records, seconds from the worker being ready until the ranges were committed, the worker's
    CPU seconds in that time)."""
    from infra.ports import pick_free_ports
    from sinks.redis_views import sync_client
    from streams.ops.group_offsets import GroupActiveError
    from streams.ops.supervisor import start_worker
    from streams.kafka.topics import admin_client

    for attempt in range(30):  # the previous phase's worker may take a moment to leave the group
        try:
            _commit_starts(settings, plan)
            break
        except GroupActiveError:
            if attempt == 29 or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    env = {"VITRINA_APP_ID": plan.app_id, "VITRINA_AGENTS": ",".join(plan.agents.modules),
           "VITRINA_REPLAY_ID": plan.replay_id, "VITRINA_REPLAY_UNTIL": json.dumps(plan.until()),
           "VITRINA_REPLAY_EMIT": "1" if plan.emit else "0", "VITRINA_VIEW_PREFIX": plan.view_prefix,
           "VITRINA_DATA_DIR": str(data_dir)}
    redis = sync_client(settings)
    admin = admin_client(settings)
    worker = start_worker(settings, web_port=pick_free_ports(1)[0], name=plan.app_id, extra_env=env)
    try:
        ready = time.monotonic()
        cpu_at_ready = worker.cpu_seconds()
        done, finished, said_at = 0, plan.total == 0, ready
        while not finished:
            if not worker.alive():
                raise ReplayError("REPLAY_WORKER_DIED", f"the replay worker exited:\n{worker.log_tail()}")
            if time.monotonic() > deadline:
                raise ReplayError("REPLAY_TIMEOUT", f"{done}/{plan.total} records before the deadline")
            # a quarter second between looks: the end of a range is seen within 0.25 s (it was 1 s, a
            # second of idle worker per phase), at the cost of one committed-offsets query per look
            time.sleep(PROGRESS_POLL_S)
            done, finished = committed_progress(settings, plan, admin)
            now = time.monotonic()
            if finished or now - said_at >= 1.0:
                said_at = now
                rate = done / max(1e-6, now - ready)
                say(f"replay {plan.replay_id}: {done}/{plan.total} records ({100 * done / max(1, plan.total):.0f}%), "
                    f"{rate:.0f}/s")
        processed_at = time.monotonic()
        cpu = worker.cpu_seconds() - cpu_at_ready
        _settle(worker, redis, plan.view_prefix, settle_s, deadline, say)
    finally:
        worker.stop()
    return done, processed_at - ready, cpu


def _settle(worker, redis, prefix: str, settle_s: float, deadline: float, say: Callable[[str], None]) -> None:
    """Wait until the worker's view writes have been quiet for ``settle_s`` and no work is queued."""
    def writes() -> float:
        try:
            return worker.counter("vitrina_view_writes_total")
        except OSError:
            return -1.0

    last, quiet_since = writes(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = writes()
        if now != last or pending_work(redis, prefix):
            last, quiet_since = now, time.monotonic()
            continue
        if time.monotonic() - quiet_since >= settle_s:
            say(f"views settled ({int(last)} view write(s) by the replay worker)")
            return
    say("views did not settle before the deadline; stopping the replay worker anyway")


# Modules whose views are built by timers from OTHER views (not from their input records): a showcase
# depends on the stats (plays, impressions) read at the moment it was built. Once a replay is complete
# these are rebuilt once more from the final inputs, so the result does not depend on how the replay
# interleaved its topics.
DERIVED_VIEWS = {"showcase"}


def refresh_derived_views(settings: Settings, prefix: str, timeout_s: float = 600.0) -> dict:
    """Rebuild every showcase of namespace ``prefix`` from the views now there (forced, fresh stats)."""
    from infra.settings import to_env

    env = {**os.environ, **to_env(settings), "VITRINA_VIEW_PREFIX": prefix, "VITRINA_LOG_LEVEL": "warning"}
    done = subprocess.run([sys.executable, "-c", "from streams.ops.replay import _refresh_showcases; _refresh_showcases()"],
                          env=env, capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{\"refreshed\"")]
    if done.returncode != 0 or not lines:
        raise ReplayError("REFRESH_FAILED", f"showcase refresh in {prefix} failed: {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def _refresh_showcases(timeout_s: float = 500.0) -> None:
    """Subprocess body (VITRINA_VIEW_PREFIX selects the namespace): a fresh ShowcaseBuilder, every user
    forced, ticks until the index is built and no user is queued."""
    import asyncio

    from infra.settings import load
    from sinks.redis_views import SHELVES_SET, SHOWCASE_DIRTY_KEY, async_client
    from streams.capabilities.showcase.builder import ShowcaseBuilder

    async def refresh() -> dict:
        settings = load()
        redis = async_client(settings)
        builder = ShowcaseBuilder(redis, settle_s=0.0, settings=settings)
        marked = await builder.mark_all_users(force=True)
        written, deadline = 0, time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            report = await builder.tick()
            written += len(report.written)
            if builder.catalogue.ready and not await redis.zcard(SHOWCASE_DIRTY_KEY):
                break
            if not builder.catalogue.ready and not await redis.exists(SHELVES_SET):
                break  # no shelf definitions: nothing can be built
            await asyncio.sleep(0.2)
        await redis.aclose()
        return {"refreshed": marked, "written": written}

    print(json.dumps(asyncio.run(refresh())))


def cleanup(settings: Settings, plan: ReplayPlan, private: list[str], data_dir: Path) -> None:
    """Delete the replay's private topics and changelogs (best effort: a broker may refuse) and data dir."""
    from streams.kafka.topics import admin_client, full_name

    admin = admin_client(settings)
    try:
        names = [n for n in admin.list_topics(timeout=10).topics
                 if n.startswith((full_name(settings, plan.app_id + "-"), full_name(settings, plan.app_id + ".")))]
        names += [full_name(settings, n) for n in private]
        if names:
            for name, future in admin.delete_topics(names, request_timeout=30).items():
                try:
                    future.result(timeout=30)
                except Exception as exc:  # noqa: BLE001 - leftovers are harmless, say so
                    log.warning("replay_topic_not_deleted", topic=name, error=str(exc))
    except Exception as exc:  # noqa: BLE001
        log.warning("replay_cleanup_failed", error=str(exc))
    shutil.rmtree(data_dir, ignore_errors=True)


# -- 5. swap ---------------------------------------------------------------------------------------

def family(suffix: str) -> str:
    """The view family of a key without its prefix: 'plays:x' -> 'plays', 'popular' -> 'popular'."""
    return suffix.split(":", 1)[0]


def swap_namespace(redis, shadow_prefix: str, live_prefix: str) -> tuple[int, int]:
    """Rename every shadow key over its live key and delete the live keys of the same families that the
    shadow does not have, in one MULTI/EXEC. Returns (renamed, deleted)."""
    shadow = [k for k in redis.scan_iter(match=shadow_prefix + "*", count=1000)]
    suffixes = {k[len(shadow_prefix):] for k in shadow}
    families = {family(s) for s in suffixes}
    stale: list[str] = []
    for fam in sorted(families):
        for key in [live_prefix + fam, *redis.scan_iter(match=live_prefix + fam + ":*", count=1000)]:
            if key[len(live_prefix):] not in suffixes and (key != live_prefix + fam or redis.exists(key)):
                stale.append(key)
    with redis.pipeline(transaction=True) as pipe:
        for key in shadow:
            pipe.rename(key, live_prefix + key[len(shadow_prefix):])
        if stale:
            pipe.delete(*stale)
        pipe.execute()
    log.info("shadow_swapped", shadow=shadow_prefix, live=live_prefix, renamed=len(shadow), deleted=len(stale),
             families=sorted(families))
    return len(shadow), len(stale)


# -- rebuild ---------------------------------------------------------------------------------------

def rebuild_modules(include: Iterable[str] | None = None) -> list[str]:
    modules = agent_modules()
    if include:
        return [m for m in modules if m in set(include)]
    return [m for m in modules if m not in REBUILD_SKIP]


def restore_models(settings: Settings, names: Iterable[str] = ("ranking",)) -> list[str]:
    """Model registry keys (registry and Production pointer) back from the registry's copy in S3.

    The registry is not derived from topics: every registry change is copied to S3 (sinks/model_store.py),
    and ``ModelStore.update`` with no change rewrites both keys from that copy when Redis has none.
    """
    from sinks.model_store import ModelStore, registry_copy_key

    restored = []
    for name in names:
        store = ModelStore(settings, name)
        if store.redis.exists(store.registry_key):
            continue
        try:
            copy = store.get_json(registry_copy_key(name))
        except Exception as exc:  # noqa: BLE001 - S3 away: say so, the views are still rebuilt
            log.warning("model_registry_not_restored", model=name, error=repr(exc))
            continue
        if copy:
            store.update(lambda registry: (registry, None))
            restored.append(name)
    return restored
