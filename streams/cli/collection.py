"""``vitrina collection add|remove ASSET_ID --user U`` and ``vitrina collection list --user U``.

add / remove publish an AssetCommand on ``assets.commands`` (the asset-commands agent applies it: a
reference to the one stored copy; an asset nobody references any more is deleted). list reads the
user's collection view from Redis. Exit status: 0 published / listed, 1 a bad argument or the stack
unreachable (the error names the field). With --json the answer is one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any

from streams.cli import command


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def fail(prefix: str, code: str, message: str, as_json: bool) -> int:
    print(_json({"error": code, "message": message}) if as_json else f"vitrina {prefix}: {message}", file=sys.stderr)
    return 1


def publish_command(action: str, asset_id: str, *, user_id: str | None = None, upload_id: str | None = None,
                    reason: str | None = None, settings: Any = None) -> dict[str, Any]:
    """Build (ValueError naming the field when incomplete) and publish one vitrina.AssetCommand."""
    from infra.settings import load
    from processors.asset_references import command as asset_command
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import spec

    cmd = asset_command(action, asset_id, user_id=user_id, upload_id=upload_id, reason=reason,
                        at=datetime.now(timezone.utc))
    producer = EventProducer(settings or load())
    producer.publish(spec("assets.commands"), cmd)
    producer.flush(30)
    return cmd


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["add", "remove", "list"],
                   help="add / remove: publish ADD_TO_COLLECTION / REMOVE_FROM_COLLECTION; list: the collection")
    p.add_argument("asset_id", nargs="?", help="asset id '<md5>-<size>' (add, remove)")
    p.add_argument("--user", required=False, help="the collection's owner (required)")
    p.add_argument("--reason", default=None, help="free text kept with the command")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


@command("collection", "a user's collection: `add|remove ASSET_ID --user U` (events), `list --user U`")(_args)
def run_collection(args: argparse.Namespace) -> int:
    from processors.asset_references import ADD_TO_COLLECTION, REMOVE_FROM_COLLECTION

    where = f"collection {args.action}"
    if not args.user:
        return fail(where, "MISSING_FIELD", "--user: required (whose collection)", args.json)
    if args.action == "list":
        return _list(args)
    if not args.asset_id:
        return fail(where, "MISSING_FIELD", "ASSET_ID: required for add / remove", args.json)
    action = ADD_TO_COLLECTION if args.action == "add" else REMOVE_FROM_COLLECTION
    try:
        cmd = publish_command(action, args.asset_id, user_id=args.user, reason=args.reason)
    except ValueError as exc:
        return fail(where, "BAD_ARGUMENT", str(exc), args.json)
    except Exception as exc:  # noqa: BLE001 - broker unreachable
        return fail(where, "NOT_PUBLISHED", f"could not publish: {exc}", args.json)
    print(_json({"published": cmd}) if args.json
          else f"published {action} of {args.asset_id} for {args.user} (applied by the asset-commands agent)")
    return 0


def _list(args: argparse.Namespace) -> int:
    import asyncio

    from infra.settings import load
    from sinks.asset_references import collection
    from sinks.redis_views import async_client

    async def read() -> list[dict[str, Any]]:
        client = async_client(load())
        try:
            return await collection(client, args.user)
        finally:
            await client.aclose()

    try:
        items = asyncio.run(read())
    except Exception as exc:  # noqa: BLE001 - Redis unreachable
        return fail("collection list", "UNAVAILABLE", f"cannot read the collection: {exc}", args.json)
    if args.json:
        print(_json({"user_id": args.user, "items": items}))
        return 0
    if not items:
        print(f"the collection of {args.user} is empty")
    for item in items:
        added = datetime.fromtimestamp(item["added_at_ms"] / 1000, timezone.utc).isoformat(timespec="seconds")
        title = item["title"] or "-"
        print(f"{item['asset_id']}  added {added}  {title}{'' if item['available'] else '  (gone)'}")
    return 0
