"""``vitrina model``: the persisted model registry (list, show, promote, rollback) and forced checkpoints.

Exit codes: 0 ok, 2 a registry rule refused the operation (unknown version, illegal
transition, nothing to roll back to); the error is printed as ``error <code>: <message>``.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from streams.cli import command

ACTIONS = ("list", "show", "promote", "rollback", "checkpoint", "playoff", "online")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS, help="list versions | show VERSION | promote VERSION [--online] | "
                   "rollback [VERSION] (default: the previous Production version) | checkpoint (ask the trainer "
                   "to checkpoint + export now) | playoff V [V...] (up to 5 candidates serve beside Production; "
                   "--stop ends it) | online (per-version online metrics history)")
    p.add_argument("version", nargs="*", help="model version id(s) (see `vitrina model list`)")
    p.add_argument("--online", action="store_true", help="promote: only if the candidate's online evr rate beats "
                   "Production's (one-sided z-test, --alpha) without a higher svr rate")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of --online (default 0.05)")
    p.add_argument("--min-impressions", type=int, default=1000, help="--online: impressions needed per version")
    p.add_argument("--stop", action="store_true", help="playoff: stop it (only Production serves)")
    p.add_argument("--name", default=None, help="model name (default VITRINA_RANKING_MODEL_NAME or 'ranking')")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def _print_list(registry, as_json: bool) -> None:
    from processors.ranking.tasks import TASKS
    if as_json:
        print(json.dumps(registry.to_dict(), indent=2))
        return
    if not registry.versions:
        print("no versions registered")
        return
    serving = registry.serving()
    print(f"{'version':<28} {'state':<11} {'created (UTC)':<20} " + " ".join(f"{t:>5}" for t in TASKS) + "  evals"
          + "  serving  online: impr " + " ".join(f"{t:>5}" for t in TASKS) + " " + " ".join(f"a_{t:<3}" for t in TASKS))
    for record in sorted(registry.versions, key=lambda v: v.created_at):
        online = record.online[-1] if record.online else {}
        arm = "arm" if record.version in serving else "-"
        print(f"{record.version:<28} {record.state.value:<11} {record.created_at:%Y-%m-%d %H:%M:%S} "
              + " ".join(f"{_fmt(record.metrics.get(t)):>5}" for t in TASKS) + f"  {len(record.evaluations):>5}"
              + f"  {arm:>7}  {online.get('impressions', 0):>12} "
              + " ".join(f"{_fmt(online.get(t)):>5}" for t in TASKS) + " "
              + " ".join(f"{_fmt(online.get('auc_' + t)):>5}" for t in TASKS))
    if registry.playoff:
        print(f"playoff: {', '.join(serving)} (stable hash split)")


def _announce(store, version: str) -> None:
    """models.published for an operator's promotion / rollback (devices and dashboards follow it)."""
    from sinks.model_store import published_event
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import spec
    manifest = store.manifest(version)
    with EventProducer(store.settings) as producer:
        producer.publish(spec("models.published"),
                         published_event(store.name, manifest, "PRODUCTION", datetime.now(timezone.utc)))


@command("model", "model registry: list | show VERSION | promote VERSION | rollback [VERSION] | checkpoint")(_args)
def run_model(args: argparse.Namespace) -> int:
    from infra.settings import load
    from processors.ranking.errors import RegistryError
    from sinks.model_store import ModelStore
    from processors.ranking.registry import model_name_ok

    settings = load()
    name = args.name or settings.ranking_model_name
    if not model_name_ok(name):
        print(f"error bad_model_name: {name!r}", file=sys.stderr)
        return 2
    versions = list(args.version or [])
    if args.action in ("show", "promote") and not versions:
        print(f"error missing_version: `vitrina model {args.action}` needs a VERSION", file=sys.stderr)
        return 2
    if args.action in ("show", "promote", "rollback") and len(versions) > 1:
        print(f"error too_many_versions: `vitrina model {args.action}` takes one VERSION", file=sys.stderr)
        return 2
    if args.action == "playoff" and not versions and not args.stop:
        print("error missing_version: `vitrina model playoff` needs candidate VERSIONs (or --stop)", file=sys.stderr)
        return 2
    version = versions[0] if versions else None
    args.version = version
    store = ModelStore(settings, name)
    try:
        if args.action == "list":
            _print_list(store.load(), args.json)
        elif args.action == "show":
            record = store.load().get(args.version)
            print(json.dumps({"record": record.to_dict(), "manifest": store.manifest(args.version)}, indent=2))
        elif args.action == "promote" and args.online:
            from processors.ranking.online import compare_versions
            from processors.ranking.registry import promote_on_online

            at = datetime.now(timezone.utc)

            def change(registry):
                current = registry.production()
                if current is None:
                    raise RegistryError("no_production", "no Production version to compare with")
                candidate = registry.get(version)
                decision = compare_versions(candidate.online[-1] if candidate.online else {},
                                            current.online[-1] if current.online else {},
                                            alpha=args.alpha, min_impressions=args.min_impressions)
                print("\n".join(decision.reasons))
                return promote_on_online(registry, version, at, decision), decision

            registry, _ = store.update(change)
            _announce(store, version)
            print(f"{name} {version} is now {registry.get(version).state.value} (online test passed)")
        elif args.action == "promote":
            registry = store.promote(args.version)
            _announce(store, args.version)
            print(f"{name} {args.version} is now {registry.get(args.version).state.value}")
        elif args.action == "rollback":
            _, target = store.rollback(args.version)
            _announce(store, target)
            print(f"{name} rolled back to {target}")
        elif args.action == "playoff":
            from processors.ranking.registry import start_playoff, stop_playoff
            if args.stop:
                registry, _ = store.update(lambda r: (stop_playoff(r), None))
            else:
                registry, _ = store.update(lambda r: (start_playoff(r, versions), None))
            print(f"{name} serving: {', '.join(registry.serving()) or 'nothing'}")
        elif args.action == "online":
            registry = store.load()
            print(json.dumps({v.version: list(v.online) for v in registry.versions if v.online}, indent=2))
        elif args.action == "checkpoint":
            at = store.request_checkpoint()
            print(f"checkpoint of {name} requested at {at}; the worker holding the trainer exports within seconds "
                  "(the request expires after 10 minutes if no worker takes it)")
    except RegistryError as exc:
        print(f"error {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    return 0
