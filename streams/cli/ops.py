"""Ops commands: dead letters (list, show, redrive) and consumer-group offsets (show, reset)."""
from __future__ import annotations

import argparse
import json
import sys

from infra.settings import load
from streams.cli import _parse_time, command


def _dlq_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="dead letters per topic: total, pending (not re-driven), reasons, agents")
    show = sub.add_parser("show", help="print dead letters of one source topic as JSON lines")
    show.add_argument("source", help="source topic, e.g. playback (reads dlq.playback)")
    show.add_argument("-n", "--limit", type=int, default=20)
    redrive = sub.add_parser("redrive", help="re-publish pending dead letters to their source topic after a fix")
    redrive.add_argument("source", help="source topic, e.g. playback")
    redrive.add_argument("--reason", help="only letters with this reason code")
    redrive.add_argument("--dry-run", action="store_true", help="print what would be re-driven, change nothing")
    redrive.add_argument("--skip-unrestorable", action="store_true",
                         help="truncated letters whose original the source no longer has are marked done without "
                              "being sent (default: refuse the whole redrive)")


@command("dlq", "inspect and re-drive dead letters (dlq.<topic>)")(_dlq_args)
def run_dlq(args: argparse.Namespace) -> int:
    from streams.ops import dlq
    from streams.kafka.codec import default_codec
    from streams.kafka.tail import json_default
    from streams.kafka.topics import spec

    settings, codec = load(), default_codec()
    if args.action == "list":
        for summary in dlq.summarise(settings, codec):
            reasons = ", ".join(f"{r}={n}" for r, n in summary.reasons.most_common()) or "-"
            print(f"{summary.topic:<28} total={summary.total:<6} pending={summary.pending:<6} reasons: {reasons}")
        return 0
    spec(args.source)  # a clear error for an unknown topic
    if args.action == "show":
        from streams.kafka.tail import tail
        for record in tail(settings, codec, "dlq." + args.source, limit=args.limit, idle_timeout_s=1.0):
            print(json.dumps(dlq.explain(record, codec), default=json_default, ensure_ascii=False))
        return 0
    plan = dlq.plan_redrive(settings, codec, args.source, args.reason)
    print(f"{len(plan.letters)} dead letter(s) of {plan.topic} to re-drive to {args.source}"
          + (f" (reason {args.reason})" if args.reason else ""), file=sys.stderr)
    if args.dry_run:
        for record in plan.letters:
            truncated = (f", truncated: the original ({record.value.get('value_size')} bytes) is re-read from the source"
                         if record.value.get("truncated") else "")
            print(f"  offset {record.offset}: {record.value['reason_code']} from {record.value['agent']} "
                  f"(source p{record.value['source_partition']}@{record.value['source_offset']}{truncated})")
        return 0
    try:
        sent = dlq.redrive(settings, plan, skip_unrestorable=args.skip_unrestorable)
    except dlq.RedriveRefused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"re-driven {sent}" + (f", skipped {len(plan.letters) - sent} unrestorable" if sent < len(plan.letters) else ""),
          file=sys.stderr)
    return 0


def _offsets_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="committed offset, end and lag per partition")
    show.add_argument("--group", default=None, help="consumer group (default: the Faust app id)")
    show.add_argument("--topic", required=True)
    reset = sub.add_parser("reset", help="reset a group's offsets (dry run unless --execute), like kafka-consumer-groups")
    reset.add_argument("--group", default=None, help="consumer group (default: the Faust app id)")
    reset.add_argument("--topic", required=True)
    how = reset.add_mutually_exclusive_group(required=True)
    how.add_argument("--to-earliest", action="store_true")
    how.add_argument("--to-latest", action="store_true")
    how.add_argument("--to-offset", type=int)
    how.add_argument("--to-datetime", metavar="TIME", help="ISO-8601 or epoch ms: first record at/after it")
    how.add_argument("--shift-by", type=int, metavar="N", help="move by N (negative = re-read N records)")
    reset.add_argument("--partitions", help="comma-separated partitions (default all)")
    reset.add_argument("--execute", action="store_true", help="apply the plan (default: dry run)")


@command("offsets", "consumer-group offsets: show lag, reset (earliest, latest, offset, datetime, shift)")(_offsets_args)
def run_offsets(args: argparse.Namespace) -> int:
    from streams.ops.group_offsets import GroupActiveError, execute_reset, plan_reset

    settings = load()
    group = args.group or settings.app_id
    if args.action == "show":
        plans = plan_reset(settings, group, args.topic, shift_by=0)
        for plan in plans:
            print(plan.describe().replace(" new=", " at="))
        return 0
    parts = [int(p) for p in args.partitions.split(",")] if args.partitions else None
    plans = plan_reset(settings, group, args.topic, to_earliest=args.to_earliest, to_latest=args.to_latest,
                       to_offset=args.to_offset, shift_by=args.shift_by, partitions=parts,
                       to_datetime_ms=_parse_time(args.to_datetime) if args.to_datetime else None)
    for plan in plans:
        print(plan.describe())
    if not args.execute:
        print("dry run: nothing changed (add --execute to apply)", file=sys.stderr)
        return 0
    try:
        execute_reset(settings, group, plans)
    except GroupActiveError as exc:
        print(f"vitrina offsets: {exc}", file=sys.stderr)
        return 2
    print(f"offsets of group {group!r} on {args.topic} reset", file=sys.stderr)
    return 0
