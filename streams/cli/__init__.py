"""The ``vitrina`` command: one entry point, a subcommand per job, ``--help`` on each."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from infra.commands import COMMANDS, Command, command, load_entry_points  # noqa: F401 - re-exported
from infra.logs import configure, get_logger
from infra.settings import load

def _parse_time(text: str) -> int:
    """Epoch ms from epoch ms digits or an ISO-8601 datetime (UTC when no zone is given)."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


# --- stack ---------------------------------------------------------------------------------

def _stack():
    from infra.secrets import ensure_dev_secrets
    from infra.stack import EmbeddedStack
    return EmbeddedStack(ensure_dev_secrets(load()))


def _up_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--brokers", type=int, choices=(1, 3), default=None,
                   help="Apache Kafka nodes (KRaft, each broker + controller): 1 (default) or 3 "
                        "(replication factor 3, min.insync.replicas=2); sets VITRINA_BROKERS")


@command("up", "start the embedded stack (S3, Apache Kafka or Tansu, Redis) and create topics")(_up_args)
def run_up(args: argparse.Namespace) -> int:
    import os
    import time

    from infra.stack import StackError
    from streams.kafka.topics import ensure_topics
    if args.brokers is not None:
        os.environ["VITRINA_BROKERS"] = str(args.brokers)
    began = time.monotonic()
    try:
        statuses = _stack().up()
    except StackError as exc:
        print(f"vitrina up: {exc}", file=sys.stderr)
        return 2
    created = ensure_topics(load())
    for status in statuses:
        print(f"{status.name:<9} {status.detail}")
    print(f"stack is up in {time.monotonic() - began:.1f}s; {len(created)} topic(s) created")
    return run_status(args)


@command("down", "stop the embedded stack; leaves no process behind")(lambda p: None)
def run_down(args: argparse.Namespace) -> int:
    _stack().down()
    print("stack is down")
    return 0


@command("status", "health of each stack component")(lambda p: None)
def run_status(args: argparse.Namespace) -> int:
    rows = _stack().status()
    healthy = True
    for row in rows:
        healthy &= bool(row.healthy)
        print(f"{row.name:<9} {'up' if row.healthy else 'DOWN':<5} pid={row.pid or '-':<8} port={row.port:<6} {row.detail}")
    return 0 if healthy else 1


def _topics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--create", action="store_true", help="create missing topics (idempotent)")


@command("topics", "list the topic registry (name, partitions, retention, compaction, key)")(_topics_args)
def run_topics(args: argparse.Namespace) -> int:
    from streams.kafka.topics import all_specs, ensure_topics
    if args.create:
        print(f"created: {ensure_topics(load()) or 'none (all exist)'}")
    for s in all_specs():
        retention = "forever" if s.retention_ms < 0 else f"{s.retention_ms // 86_400_000}d"
        print(f"{s.name:<28} p={s.partitions:<3} {retention:<8} {'compact' if s.compacted else 'delete':<8} "
              f"key={s.key_field or '-':<12} {s.schema}")
    return 0


# --- produce / consume ---------------------------------------------------------------------

def _produce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("topic", help="topic name from the registry, e.g. playback")
    p.add_argument("file", nargs="?", default="-", help="JSON lines file, '-' for stdin (default)")


@command("produce", "publish JSON lines to a topic, validated against its schema")(_produce_args)
def run_produce(args: argparse.Namespace) -> int:
    """Every bad line is reported (line number, field, reason) and the file is always read to its end;
    good lines are flushed before the summary; exit 1 if any line was bad."""
    from streams.kafka.producer import json_lines_producer, open_lines, publish_json_lines
    from streams.kafka.topics import spec
    topic = spec(args.topic)  # an unknown topic is the one error that stops before reading
    with open_lines(args.file) as lines:
        report = publish_json_lines(json_lines_producer(load(), topic), topic.name, lines,
                                    on_bad=lambda problem: print(f"{args.file}: {problem}", file=sys.stderr, flush=True))
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok else 1


def _tail_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("topic", help="topic name from the registry")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the oldest record (default)")
    start.add_argument("--since", metavar="TIME", help="start at the first record at/after TIME (ISO-8601 or epoch ms)")
    start.add_argument("--latest", action="store_true", help="only records written from now on (implies --follow)")
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new records")
    p.add_argument("--limit", "-n", type=int, help="stop after N records")


@command("tail", "print a topic's records decoded to JSON lines")(_tail_args)
def run_tail(args: argparse.Namespace) -> int:
    from streams.kafka.codec import default_codec
    from streams.kafka.tail import tail
    since = _parse_time(args.since) if args.since else None
    try:
        for record in tail(load(), default_codec(), args.topic, since_ms=since, latest=args.latest,
                           follow=args.follow or args.latest, limit=args.limit):
            print(record.to_json(), flush=True)
    except KeyboardInterrupt:
        pass
    return 0


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--viewers", type=int, default=200, help="number of viewers (default 200)")
    p.add_argument("--titles", type=int, default=400, help="catalogue size (default 400)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--publish", action="store_true", help="publish to the topics instead of printing JSON lines")


@command("generate", "generate a seeded realistic stream: catalogue, sessions, playback, impressions")(_generate_args)
def run_generate(args: argparse.Namespace) -> int:
    from demo.catalogue import synthetic_titles
    from demo.eventgen import StreamConfig, generate
    from streams.kafka.tail import json_default
    titles = synthetic_titles(args.titles, args.seed)
    stream = [("catalogue.titles", t) for t in titles] + list(generate(titles, StreamConfig(viewers=args.viewers), args.seed))
    if not args.publish:
        for topic, event in stream:
            print(json.dumps({"topic": topic, "value": event}, default=json_default))
        return 0
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import spec
    producer = EventProducer()
    counts: dict[str, int] = {}
    for topic, event in stream:
        producer.publish(spec(topic), event)
        counts[topic] = counts.get(topic, 0) + 1
    producer.flush()
    print(json.dumps(counts))
    return 0


# --- workers -------------------------------------------------------------------------------

def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loglevel", "-l", default="warn", choices=["crit", "error", "warn", "info", "debug"],
                   help="Faust log level (default warn)")


@command("worker", "run a Faust worker with every agent (scale out by starting more)")(_worker_args)
def run_worker(args: argparse.Namespace) -> int:
    from streams.ops.worker import run_worker as start
    return start(args.loglevel)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitrina", description="Event-driven backend for an online video service.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (run, add_args, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def _load_plugins() -> None:
    """Subcommands of later capabilities register themselves on import."""
    from streams.runtime.plugins import import_all
    import_all("streams.cli")
    load_entry_points()  # the read API's `api` and `token` (api/commands.py)


def main(argv: list[str] | None = None) -> int:
    configure()
    _load_plugins()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `vitrina tail playback | head`
        return 0
    except Exception as exc:  # a clear one-line error for users; the traceback goes to the log
        get_logger("vitrina.cli").exception("command_failed", command=args.command)
        print(f"vitrina {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # plugins register on the importable module ``streams.cli``, not on ``__main__``
    from streams import cli as _importable

    sys.exit(_importable.main())
