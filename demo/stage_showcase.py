"""Main-job stages of the showcase: shelf definitions right after the catalogue; at the end, a real
user's showcase and a guest's read through the read API (started as a subprocess for this stage)."""
from __future__ import annotations

import json
import time
from collections import Counter

from api.auth import dev_client
from infra.ports import pick_free_ports
from demo.showcase_sample import shelves_for_catalogue
from sinks.redis_views import (SHOWCASE_DIRTY_KEY, SHOWCASE_FORCE_KEY, SHOWCASE_USERS_KEY, history_key,
                                showcase_meta_key, sync_client, user_view_key)
from demo.main import DemoContext, stage, wait_until
from streams.kafka.producer import utc_now
from streams.ops.supervisor import start_api
from streams.kafka.topics import spec


@stage(11, "showcase shelves")
def publish_shelves(ctx: DemoContext) -> None:
    ctx.section("Shelf definitions for the showcase (catalogue.shelves)")
    shelves = shelves_for_catalogue(ctx.titles, seed=ctx.seed, now=utc_now())
    ctx.producer.publish_many(spec("catalogue.shelves"), shelves)
    ctx.producer.flush()
    kinds = Counter(s["kind"] for s in shelves)
    ctx.say(f"  {len(shelves)} shelves: " + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()))
    ctx.say(f"  of them {sum(1 for s in shelves if s['kids'])} in the kids template")
    ctx.facts["shelves"] = shelves


def _settled(redis, seen: list[int]) -> bool:
    """The history agent has caught up: the user count stopped growing and no user waits for a build."""
    users = redis.scard(SHOWCASE_USERS_KEY)
    seen.append(users)
    return users > 0 and len(seen) >= 4 and seen[-4] == users and redis.zcard(SHOWCASE_DIRTY_KEY) == 0


def _pick_user(redis) -> tuple[str, dict]:
    """A real user from the stream with titles in progress and titles finished."""
    best, best_score = None, -1
    for user in list(redis.sscan_iter(SHOWCASE_USERS_KEY, count=500))[:2000]:
        raw = redis.get(history_key(user))
        history = json.loads(raw) if raw else {}
        score = min(len(history.get("continue", ())), 3) * 10 + min(len(history.get("watched", ())), 10)
        if score > best_score:
            best, best_score = (user, history), score
    if best is None:
        raise RuntimeError("no user history in Redis")
    return best


def _print_showcase(ctx: DemoContext, response: dict, names: dict[str, str], watched: set[str]) -> None:
    view = response["showcase"]
    ctx.say(f"  request {response['request_id'][:12]}  view {response['view_key']}  version {response['version']}"
            f"  fallback={response['fallback']}"
            f"{'  (' + response['fallback_reason'] + ')' if response['fallback_reason'] else ''}"
            f"  {len(view['shelves'])} shelves")
    for shelf in view["shelves"]:
        if shelf["items"]:
            shown = ", ".join(names.get(i, i) for i in shelf["items"][:3])
            more = f" +{len(shelf['items']) - 3}" if len(shelf["items"]) > 3 else ""
        else:
            shown = ", ".join(link["target"] for link in shelf["links"][:3])
            more = f" +{len(shelf['links']) - 3}" if len(shelf["links"]) > 3 else ""
        ranked = f"  [re-ranked by {shelf['meta']['model_version']}]" if shelf.get("meta", {}).get("model_version") else ""
        ctx.say(f"    {shelf['title'][:24]:<24} {shelf['kind']:<18} {shown}{more}{ranked}")
    if watched:
        elsewhere = [i for s in view["shelves"] if s["kind"] != "CONTINUE_WATCHING" for i in s["items"] if i in watched]
        ctx.say(f"  watched titles on other shelves: {len(elsewhere)}")


@stage(60, "showcase")
def show_showcase(ctx: DemoContext) -> None:
    ctx.section("Showcase: playback -> history -> assembly (50+ rules) -> Redis views -> read API")
    redis = sync_client(ctx.settings)
    expected = ctx.facts.get("playback_events", 0)
    history_in = lambda: ctx.worker.counter("vitrina_events_in_total", topic="playback", agent="viewer-history")
    waited = wait_until(lambda: history_in() >= expected, 600, "the history agent to read the playback stream", poll_s=1.0)
    seen: list[int] = []
    wait_until(lambda: _settled(redis, seen), 120, "showcase builds to catch up", poll_s=1.0)
    first = ctx.worker.counter("vitrina_showcase_decisions_total", kind="user", decision="first_build")
    too_soon = ctx.worker.counter("vitrina_showcase_decisions_total", kind="user", decision="too_soon")
    ctx.say(f"  {expected:,} playback events -> histories of {seen[-1]} users ({waited:.0f}s after the previous stage)")
    ctx.say(f"  during the replay: {first:.0f} first builds; {too_soon:.0f} rebuilds refused as too soon "
            "(a showcase changes at most once a day)")

    playoff = _start_playoff(ctx)
    # a replay squeezes a week into minutes: ops force one rebuild once it is processed
    asked_ms = int(time.time() * 1000)
    ctx.producer.publish("showcase.rebuild", {"request_id": f"demo-{asked_ms}", "user_id": None, "force": True,
                                               "reason": "replay processed", "requested_at": utc_now()})
    ctx.producer.flush()
    user, history = _pick_user(redis)
    devices = sorted(history.get("devices", {})) or ["TV"]
    key = user_view_key(user, devices[0])
    wait_until(lambda: int(redis.hget(showcase_meta_key(key), "decided_at") or 0) > asked_ms
               and redis.scard(SHOWCASE_FORCE_KEY) == 0 and redis.zcard(SHOWCASE_DIRTY_KEY) == 0,
               180, "the forced rebuild")
    forced = ctx.worker.counter("vitrina_showcase_decisions_total", kind="user", decision="forced")
    ctx.say(f"  ops: `vitrina showcase rebuild --all --force` -> {forced:.0f} views replaced "
            "(views whose content did not change are not rewritten)")
    names = {t["item_id"]: t["title"] for t in ctx.titles}
    views = sum(1 for _ in redis.scan_iter("vitrina:showcase:*", count=1000))
    ctx.say(f"  {views} showcase views in Redis (personal per user and device type + editorial variants)")
    started = time.monotonic()
    api = start_api(ctx.settings, port=pick_free_ports(1)[0])
    try:
        ctx.say(f"  read API up at {api.base_url} in {time.monotonic() - started:.1f}s")
        client = dev_client(ctx.settings, api.base_url)
        ctx.say(f"\n  user {user}: continue watching "
                f"{', '.join(names.get(c['item_id'], c['item_id']) for c in history.get('continue', ())[:3]) or '-'}; "
                f"{len(history.get('watched', ()))} watched; devices {', '.join(devices)}")
        _print_showcase(ctx, client.showcase(user, devices[0]), names, set(history.get("watched", ())))
        other = next((d for d in ("TV", "MOBILE", "WEB", "TABLET", "STB") if d not in devices), None)
        if other:
            response = client.showcase(user, other)
            ctx.say(f"\n  same user on {other} (never used): view {response['view_key']}, "
                    f"fallback={response['fallback']} ({response['fallback_reason']})")
        ctx.say("\n  guest on TV:")
        _print_showcase(ctx, client.showcase(None, "TV"), names, set())
        kids = client.showcase(None, "TV", kids="true", age_limit=6)
        ctx.say(f"\n  kids profile (age limit 6) on TV: view {kids['view_key']}, "
                f"{len(kids['showcase']['shelves'])} shelves")
        _report_impressions(ctx, redis, client, users=60 if playoff else 20)
    finally:
        api.stop()
    ctx.say("\n  alarms from daily checks and rule limits (metric vitrina_showcase_alarms_total, log event "
            "showcase_alarm):")
    for code, count in _alarm_counts(ctx.worker.metrics()).most_common():
        ctx.say(f"    {count:>6.0f}  {code}")


def _start_playoff(ctx: DemoContext) -> tuple[str, ...] | None:
    """Two candidates split traffic: the newest other version of the ranking model serves beside
    Production (as `vitrina model playoff V`); users are split by a stable hash, the forced rebuild
    below builds each user's shelves with their arm, and the simulated client's impressions carry it."""
    from processors.ranking.registry import ModelState, start_playoff
    from sinks.model_store import ModelStore
    from streams.capabilities.ranking.settings import load_ranking_settings

    store = ModelStore(ctx.settings, load_ranking_settings().model_name)
    registry = store.load()
    production = registry.production()
    others = sorted((v for v in registry.versions if v.state is not ModelState.PRODUCTION),
                    key=lambda v: v.created_at, reverse=True)
    if production is None or not others:
        ctx.say("  playoff: fewer than two ranking versions, so no traffic split in this run")
        return None
    store.update(lambda r: (start_playoff(r, [others[0].version]), None))
    arms = store.load().serving()
    ctx.say(f"  playoff (`vitrina model playoff {others[0].version}`): {' vs '.join(arms)} split users by a stable "
            "hash; per-version online metrics follow in `vitrina model list` once the impressions are labelled")
    time.sleep(6)  # the builder reads the serving arms at most every 5 s
    return arms


def _report_impressions(ctx: DemoContext, redis, client, users: int = 20, visible: int = 6) -> None:
    """The simulated client: the pages it was served, reported as impressions (request id, row, position,
    the serving model version and score of re-ranked shelves) on ranking.impressions, where the label
    join and the per-version online metrics pick them up (contract: processors/showcase/impressions.py)."""
    from datetime import datetime

    from processors.showcase.impressions import autoplay_impression, page_impressions

    sent, versions = 0, Counter()
    for user in list(redis.sscan_iter(SHOWCASE_USERS_KEY, count=500))[:users]:
        raw = redis.get(history_key(user))
        history = json.loads(raw) if raw else {}
        device = next(iter(sorted(history.get("devices", {}))), "TV")
        page = client.showcase(user, device)
        shown_at = datetime.fromisoformat(page["showcase"]["meta"]["built_at"])  # the builder's event time
        recent = list(history.get("watched", ()))[-20:][::-1]
        impressions = page_impressions(page, user_id=user, device_id=f"{user}-{device}", device_type=device,
                                       shown_at=shown_at, visible=visible, recent_watched=recent)
        if recent:
            auto = client.autoplay_next(recent[0], user_id=user, device_type=device)
            one = autoplay_impression(auto, user_id=user, device_id=f"{user}-{device}", device_type=device,
                                      shown_at=shown_at, recent_watched=recent)
            impressions += [one] if one else []
        ctx.producer.publish_many(spec("ranking.impressions"), impressions)
        sent += len(impressions)
        versions.update(i["model_version"] or "not model-ranked" for i in impressions)
    ctx.producer.flush()
    ctx.say(f"\n  simulated client: {sent} impressions of the pages served to {users} users reported on "
            f"ranking.impressions (request id, row, position): " + ", ".join(f"{n} {v}" for v, n in versions.most_common()))


def _alarm_counts(metrics: str) -> Counter:
    found: Counter = Counter()
    for line in metrics.splitlines():
        if line.startswith("vitrina_showcase_alarms_total{"):
            labels, value = line.rsplit(" ", 1)
            code = labels.split('code="', 1)[1].split('"', 1)[0]
            found[code] += float(value)
    return found
