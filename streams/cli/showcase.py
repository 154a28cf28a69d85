"""``vitrina showcase``: ops tools for the showcase views.

  vitrina showcase rebuild --user u42 [--force]   ask the builders (topic showcase.rebuild) to rebuild a user
  vitrina showcase rebuild --all [--force]        ... every user with a history
  vitrina showcase rebuild --user u42 --direct    queue it in Redis directly (no broker needed)
  vitrina showcase show --user u42 --device TV    print a stored view compactly (guest/kids/default without --user)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from infra.settings import load
from streams.cli import command


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    rebuild = sub.add_parser("rebuild", help="rebuild a user's showcase (or everyone's) at the next builder tick")
    who = rebuild.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="user id")
    who.add_argument("--all", action="store_true", help="every user with a history")
    rebuild.add_argument("--force", action="store_true",
                         help="replace the view even if it is less than a day old (unchanged content is not rewritten)")
    rebuild.add_argument("--reason", default="", help="free text for the audit trail")
    rebuild.add_argument("--direct", action="store_true", help="queue in Redis instead of publishing to showcase.rebuild")
    show = sub.add_parser("show", help="print a stored showcase view")
    show.add_argument("--user", help="user id (default: the variant)")
    show.add_argument("--device", default="TV", help="device type (default TV)")
    show.add_argument("--variant", default="guest", choices=("guest", "kids", "default"),
                      help="variant shown without --user (default guest)")
    show.add_argument("--json", action="store_true", help="print the stored JSON as it is")


@command("showcase", "showcase views: rebuild (forced or not) and show")(_args)
def run_showcase(args: argparse.Namespace) -> int:
    if args.action == "rebuild":
        return _rebuild(args)
    return _show(args)


def _rebuild(args: argparse.Namespace) -> int:
    settings = load()
    if args.direct:
        from sinks.redis_views import async_client
        from sinks.showcase_views import request_rebuild
        from streams.capabilities.showcase.builder import ShowcaseBuilder

        async def queue() -> int:
            redis = async_client(settings)
            try:
                if args.all:
                    return await ShowcaseBuilder(redis, settings=settings).mark_all_users(force=args.force)
                return await request_rebuild(redis, [args.user], force=args.force)
            finally:
                await redis.aclose()

        print(f"queued {asyncio.run(queue())} user(s) for rebuild{' (forced)' if args.force else ''}")
        return 0
    from streams.kafka.producer import EventProducer, utc_now

    request = {"request_id": str(uuid.uuid4()), "user_id": None if args.all else args.user, "force": args.force,
               "reason": args.reason, "requested_at": utc_now()}
    with EventProducer(settings) as producer:
        producer.publish("showcase.rebuild", request)
    print(f"published rebuild request {request['request_id']} for {'every user' if args.all else args.user}"
          f"{' (forced)' if args.force else ''}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from sinks.redis_views import showcase_key, sync_client, user_view_key, variant_view_key

    device = args.device.upper()
    key = user_view_key(args.user, device) if args.user else variant_view_key(args.variant, device)
    redis = sync_client(load())
    raw = redis.get(showcase_key(key))
    if raw is None:
        print(f"no stored view {key}", file=sys.stderr)
        return 1
    if args.json:
        print(raw)
        return 0
    view = json.loads(raw)
    meta = view["meta"]
    print(f"{key}  version {meta['version']}  built {meta['built_at']}  fallback={meta['is_fallback']}  "
          f"decision={redis.hget('vitrina:showcase-meta:' + key, 'decision')}")
    for shelf in view["shelves"]:
        content = shelf["items"] or [link["target"] for link in shelf["links"]]
        print(f"  {shelf['kind']:<18} {shelf['title'][:28]:<28} {len(content):>3}  {' '.join(content[:8])}")
    for alarm in view.get("alarms", ()):
        print(f"  alarm {alarm['severity']}: {alarm['code']}: {alarm['message']}")
    return 0
