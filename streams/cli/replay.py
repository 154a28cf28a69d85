"""`vitrina replay` (a topic range through chosen agents) and `vitrina rebuild` (every view from the topics).

Recovery after a Redis loss (FLUSHALL, a restart without persistence, a new empty instance): run
``vitrina rebuild``. The workers may be running or stopped, both are supported:

* a rebuild always builds into a fresh shadow namespace (``vitrina-shadow-<id>:``), so it starts from
  empty derived marks (the impression counter's per-partition marks live next to the counts), never
  from marks a running worker wrote after the loss; the catalogue is replayed first and applied before
  the events that join it (streams/ops/replay.py, phases); showcases are rebuilt from the final inputs;
  then the views AND their marks are swapped over the live ones in one MULTI/EXEC.
* a worker that kept running keeps its state in its tables (changelogs), not in Redis: after the swap
  it counts on top of the rebuilt marks (records the rebuild counted are skipped, exactly once per
  partition and offset) and writes whole views from its tables.
* records that arrive while the shadow is built are applied to the live views after the swap (a
  catch-up under the rebuild's app id, streams/ops/replay.py), so traffic may go on during a rebuild.
  Limit: a key a running worker updates with a record arriving during the catch-up itself may keep
  the catch-up's value (one record older) until its next update; counters are exact regardless.
"""
from __future__ import annotations

import argparse
import json
import sys

from infra.settings import load
from streams.cli import _parse_time, command


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shadow", action="store_true",
                   help="build into a shadow namespace, then swap it over the live views atomically")
    p.add_argument("--dry-run", action="store_true", help="print the plan (partitions, offsets, counts), change nothing")
    p.add_argument("--no-swap", action="store_true", help="with --shadow: build the shadow namespace and leave it there "
                                                            "(inspect it; `vitrina replay-swap PREFIX` swaps it in later)")
    p.add_argument("--emit", action="store_true", help="publish the range's outputs and dead letters again (default: muted)")
    p.add_argument("--json", action="store_true", help="print the plan / result as JSON on stdout")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the replay (default 3600)")
    p.add_argument("--settle", type=float, default=6.0, help="quiet seconds of view writes that end a replay (default 6)")


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", required=True, help="agent module(s), comma-separated (e.g. plays,history)")
    p.add_argument("--topic", action="append", default=None,
                   help="input topic to reprocess (repeatable or comma-separated; default: all inputs of the agents)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=int, metavar="N", help="first offset, every partition (default 0)")
    start.add_argument("--from-time", metavar="TIME", help="ISO-8601 or epoch ms: first record at/after it")
    end = p.add_mutually_exclusive_group()
    end.add_argument("--to-offset", type=int, metavar="N", help="end offset (exclusive), every partition")
    end.add_argument("--to-time", metavar="TIME", help="ISO-8601 or epoch ms: stop before the first record at/after it")
    _common_args(p)


def _rebuild_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", default=None, help="only these agent modules (default: all but "
                                                 "the ones REBUILD_SKIP names, see --dry-run)")
    _common_args(p)
    p.set_defaults(shadow=True)  # always: fresh marks, swapped in with the views (see the module docstring)


def _progress(line: str) -> None:
    print(f"\r{line:<100}", end="", file=sys.stderr, flush=True)


def _execute(plan, args) -> int:
    from streams.ops.replay import ReplayError, run

    settings = load()
    if args.json and args.dry_run:
        print(json.dumps(plan.as_dict()))
    else:
        for line in plan.describe():
            print(line, file=sys.stderr if args.json else sys.stdout)
    if args.dry_run:
        if not args.json:
            print("dry run: nothing changed")
        return 0
    try:
        result = run(settings, plan, timeout_s=args.timeout, settle_s=args.settle, progress=_progress,
                     swap=not args.no_swap)
    except ReplayError as exc:
        print(file=sys.stderr)
        print(json.dumps(exc.as_dict()) if args.json else f"vitrina replay: {exc.code}: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    summary = result.as_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        swapped = (f"; shadow {plan.view_prefix} left in place" if args.no_swap else
                   f"; swapped {result.swapped} key(s), deleted {result.deleted} stale"
                   + (f"; caught up {result.caught_up} record(s) that arrived meanwhile" if result.caught_up else "")
                   ) if plan.shadow else ""
        print(f"replayed {result.plan.total} record(s) in {result.processing_seconds:.1f}s "
              f"({result.events_per_s:.0f}/s){swapped}")
    return 0


def _fail(exc) -> int:
    print(json.dumps(exc.as_dict()), file=sys.stderr)
    return 2


@command("replay", "reprocess a topic range through chosen agents (live views or a shadow namespace swapped in)")(_replay_args)
def run_replay(args: argparse.Namespace) -> int:
    from streams.ops.replay import RangeSpec, ReplayError, plan

    topics = [t.strip() for group in args.topic for t in group.split(",") if t.strip()] if args.topic else None
    try:
        span = RangeSpec(from_offset=args.from_offset, to_offset=args.to_offset,
                         from_time_ms=_parse_time(args.from_time) if args.from_time else None,
                         to_time_ms=_parse_time(args.to_time) if args.to_time else None)
    except ValueError as exc:
        print(json.dumps({"error": "BAD_TIME", "message": str(exc)}), file=sys.stderr)
        return 2
    try:
        replay_plan = plan(load(), args.agent.split(","), topics, span, shadow=args.shadow, emit=args.emit)
    except (ReplayError, KeyError) as exc:
        return _fail(exc if isinstance(exc, ReplayError) else ReplayError("UNKNOWN_TOPIC", str(exc)))
    return _execute(replay_plan, args)


@command("rebuild", "rebuild every Redis view from the topics (all agents, earliest offsets) in a shadow namespace, "
                    "swapped in atomically; the recovery after a Redis loss, workers running or not")(_rebuild_args)
def run_rebuild(args: argparse.Namespace) -> int:
    from streams.ops.replay import REBUILD_SKIP, ReplayError, plan, rebuild_modules, restore_models

    settings = load()
    modules = rebuild_modules(args.agent.split(",") if args.agent else None)
    try:
        replay_plan = plan(settings, modules, None, shadow=True, emit=args.emit)
    except ReplayError as exc:
        return _fail(exc)
    for module, reason in REBUILD_SKIP.items():
        if module not in modules:
            print(f"  skipped module {module}: {reason}", file=sys.stderr)
    code = _execute(replay_plan, args)
    if code == 0 and not args.dry_run:
        for name in restore_models(settings):
            print(f"model registry {name} restored from its S3 copy", file=sys.stderr)
    return code


def _swap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("shadow_prefix", help="a shadow namespace left by --no-swap, e.g. vitrina-shadow-1a2b3c4d:")


@command("replay-swap", "swap a shadow namespace (from `vitrina replay --shadow --no-swap`) over the live views")(_swap_args)
def run_replay_swap(args: argparse.Namespace) -> int:
    from sinks.redis_views import PREFIX, sync_client
    from streams.ops.replay import SHADOW_PREFIX, swap_namespace

    if not args.shadow_prefix.startswith(SHADOW_PREFIX) or not args.shadow_prefix.endswith(":"):
        print(json.dumps({"error": "BAD_PREFIX", "message": f"expected {SHADOW_PREFIX}<id>:"}), file=sys.stderr)
        return 2
    renamed, deleted = swap_namespace(sync_client(load()), args.shadow_prefix, PREFIX)
    print(f"swapped {renamed} key(s), deleted {deleted} stale")
    return 0
