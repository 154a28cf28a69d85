"""``vitrina schemas check``: can today's schemas read every older version (offline, what CI runs);
``vitrina schemas register``: pre-register every subject in the schema registry with its compatibility level."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from streams.cli import command


@dataclass(frozen=True)
class Finding:
    ok: bool
    subject: str  # the record's full name
    what: str  # e.g. "current reads v1 (history/vitrina.PlaybackEvent.v1.avsc)"
    problems: tuple[str, ...] = ()


def check_dirs(schema_dir: Path, history_dir: Path, level: str) -> list[Finding]:
    """Every history version against the current schema of its record, in the directions ``level``
    promises: BACKWARD (the default: the current schema reads old data), FORWARD (old readers read new
    data) or FULL (both); *_TRANSITIVE levels are the same here, since every version is checked."""
    from streams.kafka.codec import SchemaStore
    from streams.kafka.schema_registry import LEVELS, compatibility_problems, schema_text

    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}; expected one of {', '.join(LEVELS)}")
    try:
        store = SchemaStore(schema_dir, history_dir)
    except Exception as exc:  # a schema that does not parse, or a missing one, is a finding too
        return [Finding(False, str(schema_dir), "parse every schema", (f"{type(exc).__name__}: {exc}",))]
    backward = level.startswith(("BACKWARD", "FULL"))
    forward = level.startswith(("FORWARD", "FULL"))
    findings = [Finding(True, name, "current schema parses") for name in store.names]
    labels = {p.stem: p for p in sorted(history_dir.glob("*.avsc"))} if history_dir.is_dir() else {}
    for name in store.names:
        current = schema_text(store.current(name))
        for index, old in enumerate(store.history(name), start=1):
            label = next((f"history/{p.name}" for p in labels.values()
                          if p.name.startswith(f"{name}.") and p.stem.endswith(f".v{index}")), f"version {index}")
            text = schema_text(old)
            if backward:
                problems = compatibility_problems(current, text)
                findings.append(Finding(not problems, name, f"current reads data written with v{index} ({label})",
                                        tuple(problems)))
            if forward:
                problems = compatibility_problems(text, current)
                findings.append(Finding(not problems, name, f"v{index} readers read data written with current "
                                                            f"({label})", tuple(problems)))
    known = set(store.names)
    for path in labels.values():
        record = path.stem.rsplit(".v", 1)[0]
        if record not in known:
            findings.append(Finding(False, record, f"history/{path.name}",
                                    ("no current schema of that name: a record is never deleted, only deprecated",)))
    return findings


def _check_args(p: argparse.ArgumentParser) -> None:
    from schemas import HISTORY_DIR, SCHEMA_DIR
    p.add_argument("--schemas", type=Path, default=SCHEMA_DIR, help="directory of the current .avsc files")
    p.add_argument("--history", type=Path, default=None, help="directory of earlier versions "
                                                                f"(default: <schemas>/history, i.e. {HISTORY_DIR})")
    p.add_argument("--level", default=None, help="BACKWARD (default: VITRINA_SCHEMA_COMPATIBILITY), FORWARD or FULL "
                                                 "(FORWARD and FULL also check that old readers read new data)")
    p.add_argument("--quiet", "-q", action="store_true", help="print failures only")


def run_check(args: argparse.Namespace) -> int:
    from infra.settings import load
    level = (args.level or load().schema_compatibility).upper()
    findings = check_dirs(args.schemas, args.history or args.schemas / "history", level)
    failed = [f for f in findings if not f.ok]
    for f in findings:
        if f.ok and args.quiet:
            continue
        print(f"{'ok  ' if f.ok else 'FAIL'}  {f.subject}: {f.what}")
        for problem in f.problems:
            print(f"        {problem}")
    checked = sum(1 for f in findings if "reads" in f.what or "readers" in f.what)
    print(f"schemas check ({level}): {checked} version pair(s) checked, {len(failed)} failure(s)",
          file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def _register_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="registry URL (default VITRINA_SCHEMA_REGISTRY_URL)")
    p.add_argument("--level", default=None, help="compatibility level set on each subject "
                                                 "(default VITRINA_SCHEMA_COMPATIBILITY, BACKWARD)")
    p.add_argument("--subject", action="append", help="only this subject (repeatable)")


def run_register(args: argparse.Namespace) -> int:
    from infra.settings import load
    from streams.kafka.codec import SchemaStore
    from streams.kafka.schema_registry import (
        IncompatibleSchemaError,
        Registry,
        SchemaRegistryError,
        describe_problem,
        register_all,
    )

    settings = load()
    url = args.url or settings.schema_registry_url
    if not url:
        print("vitrina schemas register: no registry: set VITRINA_SCHEMA_REGISTRY_URL or pass --url", file=sys.stderr)
        return 2
    registry = Registry(url, settings.schema_compatibility)
    try:
        done = register_all(registry, SchemaStore(), settings, level=args.level, only=args.subject)
    except IncompatibleSchemaError as exc:
        print(f"vitrina schemas register: refused: {exc}", file=sys.stderr)
        return 1
    except SchemaRegistryError as exc:
        print(f"vitrina schemas register: {url}: {describe_problem(exc)}", file=sys.stderr)
        return 1
    for r in done:
        print(f"{r.subject:<40} {r.level:<20} ids {','.join(map(str, r.ids))}")
    print(f"{len(done)} subject(s) registered at {url}")
    return 0


def _schemas_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="schemas_command", metavar="ACTION", required=True)
    for name, add_args, run, help_text in (
            ("check", _check_args, run_check,
             "offline: every current schema reads data written with every version in schemas/history/ (CI runs it)"),
            ("register", _register_args, run_register,
             "pre-register every subject (history versions, then current) and set its compatibility level")):
        action = sub.add_parser(name, help=help_text, description=help_text)
        add_args(action)
        action.set_defaults(schemas_run=run)


@command("schemas", "event contracts: `schemas check` (compatibility, offline) and `schemas register` (registry)")(_schemas_args)
def run_schemas(args: argparse.Namespace) -> int:
    return args.schemas_run(args)
