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
from streams.capabilities.ranking.settings import load_ranking_settings
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
        _report_impressions(ctx, redis, client, playoff, users=60 if playoff else 20)
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

    store = ModelStore(ctx.settings, load_ranking_settings(ctx.settings).model_name)
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


def _report_impressions(ctx: DemoContext, redis, client, arms: tuple[str, ...] | None, users: int = 20,
                        visible: int = 6) -> None:
    """The simulated client: the pages it was served, reported as impressions (request id, row, position,
    the serving model version and score of re-ranked shelves) on ranking.impressions, where the label
    join and the per-version online metrics pick them up (contract: processors/showcase/impressions.py);
    then what the simulated viewer watched of them (demo/simulated_client.py); and a second visit
    (label max age + lateness + 1 h later), whose events move the label join's watermark past the first
    visit, so its labels are final and the online metrics of the serving versions reach the registry."""
    import random
    from datetime import datetime, timedelta

    from demo.eventgen import Viewer
    from demo.simulated_client import choose_plays, tastes_of, watch
    from processors.showcase.impressions import autoplay_impression, page_impressions

    titles = _catalogue_titles(ctx.settings) or ctx.titles  # the whole catalogue (MovieLens titles included)
    genres_of = {t["item_id"]: list(t.get("genres") or ()) for t in titles}
    durations = {t["item_id"]: int(t.get("duration_ms") or 0) for t in titles}
    rng = random.Random(ctx.seed)
    ranking = load_ranking_settings(ctx.settings)
    next_visit = timedelta(seconds=ranking.max_label_age_s + ranking.lateness_s + 3600)
    sent, plays, versions = 0, 0, Counter()
    viewers: dict[str, tuple[Viewer, list[str], datetime | None]] = {}
    for user in sorted(redis.sscan_iter(SHOWCASE_USERS_KEY, count=500))[:users]:
        raw = redis.get(history_key(user))
        history = json.loads(raw) if raw else {}
        device = next(iter(sorted(history.get("devices", {}))), "TV")
        recent = list(history.get("watched", ()))[-20:][::-1]
        viewers[user] = (Viewer(user_id=user, device_id=f"{user}-{device}", device_type=device, app_version="4.1.2",
                                tastes=sorted(tastes_of(recent, genres_of)), network_kbps=6000, device_score=0.8),
                         recent, None)
    # every viewer's first visit before anyone's second: the label join's watermark (per partition) must
    # not pass a first visit before its plays are in
    for visit in range(2):
        for user, (viewer, recent, first_seen) in viewers.items():
            device = viewer.device_type
            page = client.showcase(user, device)
            if first_seen is None:
                first_seen = datetime.fromisoformat(page["showcase"]["meta"]["built_at"])  # the builder's event time
                viewers[user] = (viewer, recent, first_seen)
            shown_at = first_seen + visit * next_visit
            impressions = page_impressions(page, user_id=user, device_id=viewer.device_id, device_type=device,
                                           shown_at=shown_at, visible=visible, recent_watched=recent,
                                           durations=durations)
            if recent:
                auto = client.autoplay_next(recent[0], user_id=user, device_type=device)
                one = autoplay_impression(auto, user_id=user, device_id=viewer.device_id, device_type=device,
                                          shown_at=shown_at, recent_watched=recent)
                impressions += [one] if one else []
            watched = watch(choose_plays(impressions, set(viewer.tastes), genres_of, rng), viewer=viewer,
                            durations=durations, shown_at=shown_at, session_id=f"demo-client-{user}-{visit}", rng=rng)
            ctx.producer.publish_many(spec("ranking.impressions"), impressions)
            ctx.producer.publish_many(spec("playback"), watched)
            sent += len(impressions)
            plays += sum(1 for e in watched if e["event_type"] == "START")
            versions.update(i["model_version"] or "not model-ranked" for i in impressions)
        ctx.producer.flush()
    ctx.producer.flush()
    ctx.say(f"\n  simulated client: {sent} impressions of the pages served to {users} users over two visits "
            f"{next_visit.total_seconds() / 3600:g} h apart reported on ranking.impressions (request id, row, "
            f"position): " + ", ".join(f"{n} {v}" for v, n in versions.most_common()))
    ctx.say(f"  simulated viewer (demo/simulated_client.py: position-biased, taste-driven): started {plays} titles")
    if arms:
        _show_online_metrics(ctx, arms)


def _catalogue_titles(settings) -> list[dict]:
    """The whole catalogue from the Redis views (the loader the builder and the API use)."""
    import asyncio

    from sinks.catalogue_views import load_titles
    from sinks.redis_views import async_client

    async def load() -> list[dict]:
        client = async_client(settings)
        try:
            return await load_titles(client)
        finally:
            await client.aclose()

    return asyncio.run(load())


def _show_online_metrics(ctx: DemoContext, arms: tuple[str, ...]) -> None:
    """Wait for each serving version's online metrics (label join -> ranking.samples -> the online
    metrics agent -> the registry) and print them as `vitrina model list` does."""
    from processors.ranking.tasks import TASKS
    from sinks.model_store import ModelStore

    store = ModelStore(ctx.settings, load_ranking_settings(ctx.settings).model_name)

    def online() -> dict[str, dict]:
        registry = store.load()
        found = {v: registry.get(v).online[-1] for v in arms if registry.get(v) and registry.get(v).online}
        return found if len(found) == len(arms) else {}

    try:
        waited = wait_until(lambda: bool(online()), 240, "the online metrics of the serving versions", poll_s=2.0)
    except TimeoutError as exc:
        ctx.say(f"  online metrics: not in the registry yet ({exc}); see `vitrina model list` later")
        return
    ctx.say(f"  online metrics per serving version ({waited:.0f}s later; `vitrina model list`, "
            "`vitrina model promote V --online`):")
    for version, figures in online().items():
        rates = " ".join(f"{t} {_rate(figures.get(t))}" for t in TASKS)
        aucs = " ".join(f"{t} {_rate(figures.get('auc_' + t))}" for t in TASKS)
        ctx.say(f"    {version:<26} {figures.get('impressions', 0):>5} impressions  rates {rates}  AUC {aucs}")
    ctx.facts["online_metrics"] = online()


def _rate(value) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _alarm_counts(metrics: str) -> Counter:
    found: Counter = Counter()
    for line in metrics.splitlines():
        if line.startswith("vitrina_showcase_alarms_total{"):
            labels, value = line.rsplit(" ", 1)
            code = labels.split('code="', 1)[1].split('"', 1)[0]
            found[code] += float(value)
    return found
