"""Main-job stage of the co-view capability: the real interaction log through the pipeline.

With MovieLens (``/work/shared/data/datasets/movielens-ml-latest-small``) its movies become catalogue
titles and the ratings of the first N users (N by ``--size``) playback: a rating = START, then
COMPLETE 4 s into an 8 s title at the rating time (the rule bench/coview_quality.py uses), so the
sessionizer's 30-minute gap cuts the users' rating bursts into sessions. Without the data set the
generated stream of the foundation stage is used. Then the similar lists of well-known titles
and an autoplay pick through the read API are printed.
"""
from __future__ import annotations

import csv
import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from api.auth import dev_client
from api.client import ApiError
from infra.ports import pick_free_ports
from demo.catalogue import movielens_titles
from sinks.redis_views import similar_key, sync_client
from demo.main import DemoContext, stage, wait_until
from streams.ops.supervisor import start_api
from streams.kafka.topics import spec

MOVIELENS = Path("/work/shared/data/datasets/movielens-ml-latest-small")
USERS_BY_SIZE = {"small": 150, "medium": 400, "large": 10_000}
WELL_KNOWN = ("ml1", "ml2571", "ml260", "ml356")  # Toy Story, The Matrix, Star Wars IV, Forrest Gump


def rating_playback(user: str, item: str, at_s: int, n: int) -> list[dict]:
    base = {"session_id": f"ml-{user}", "user_id": user, "device_id": f"ml-device-{user}", "device_type": "WEB",
            "os": "web", "app_version": "1.0.0", "item_id": item, "duration_ms": 8000, "network_kbps": None,
            "buffered_ratio": None, "stall_ms": 0, "bitrate_kbps": None}
    start = datetime.fromtimestamp(at_s, timezone.utc)
    end = datetime.fromtimestamp(at_s + 4, timezone.utc)
    return [{**base, "event_id": f"{user}-{n}-start", "event_type": "START", "position_ms": 0, "event_time": start},
            {**base, "event_id": f"{user}-{n}-complete", "event_type": "COMPLETE", "position_ms": 4000,
             "event_time": end}]


def movielens_playback(limit: int, users: int = 10_000) -> list[dict]:
    """The first ``limit`` playback events of the MovieLens replay, user after user (bench, tests)."""
    events: list[dict] = []
    for user, rows in movielens_ratings(users).items():
        for n, (at_s, item) in enumerate(rows):
            events += rating_playback(user, item, at_s, n)
            if len(events) >= limit:
                return events
    return events


def movielens_ratings(users: int) -> dict[str, list[tuple[int, str]]]:
    """user -> [(time s, item)] in time order, for the first ``users`` user ids."""
    by_user: dict[str, list[tuple[int, str]]] = {}
    with open(MOVIELENS / "ratings.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if int(row["userId"]) > users:
                continue
            by_user.setdefault(f"ml-u{row['userId']}", []).append((int(row["timestamp"]), f"ml{row['movieId']}"))
    for rows in by_user.values():
        rows.sort()
    return by_user


def _publish_movielens(ctx: DemoContext) -> tuple[dict[str, str], list[str], dict[str, list[tuple[int, str]]]]:
    titles = movielens_titles(MOVIELENS / "movies.csv")
    users = USERS_BY_SIZE.get(ctx.size, 150)
    by_user = movielens_ratings(users)
    started = time.perf_counter()
    ctx.producer.publish_many(spec("catalogue.titles"), titles)
    events = 0
    for user, rows in by_user.items():
        for n, (at_s, item) in enumerate(rows):
            ctx.producer.publish_many(spec("playback"), rating_playback(user, item, at_s, n))
            events += 2
    ctx.producer.flush()
    ratings = sum(len(r) for r in by_user.values())
    ctx.say(f"  MovieLens: {len(titles):,} titles, {ratings:,} ratings of {len(by_user)} users -> {events:,} "
            f"playback events, published in {time.perf_counter() - started:.1f}s")
    counts = Counter(item for rows in by_user.values() for _, item in rows)
    showcase = [item for item in WELL_KNOWN if counts[item] >= 10][:3] or [i for i, _ in counts.most_common(3)]
    return {t["item_id"]: t["title"] for t in titles}, showcase, by_user


def _generated(ctx: DemoContext) -> tuple[dict[str, str], list[str], dict[str, list[tuple[int, str]]]]:
    ctx.say("  MovieLens not found: using the generated stream of the foundation stage")
    starts: Counter[str] = ctx.facts.get("expected_starts", Counter())
    return {t["item_id"]: t["title"] for t in ctx.titles}, [item for item, _ in starts.most_common(3)], {}


@stage(40, "co-view similar lists")
def show_similar(ctx: DemoContext) -> None:
    ctx.section("Similar titles from session co-views (sessionizer -> co-view table -> Redis) and autoplay")
    names, showcase, by_user = _publish_movielens(ctx) if MOVIELENS.exists() else _generated(ctx)
    redis = sync_client(ctx.settings)

    seen: dict[str, object] = {"state": None, "since": 0.0}

    def lists_ready() -> bool:
        """Every showcased list has 5 titles and none changed for 3 s (the replay is through)."""
        found = [json.loads(raw) for raw in redis.mget([similar_key(item) for item in showcase]) if raw]
        if len(found) < len(showcase) or any(len(view["items"]) < 5 for view in found):
            return False
        state = [(view["version"], view["support"]) for view in found]
        if state != seen["state"]:
            seen["state"], seen["since"] = state, time.monotonic()
            return False
        return time.monotonic() - seen["since"] >= 3.0

    waited = wait_until(lists_ready, 300, "similar lists in Redis", poll_s=0.5)
    ctx.say(f"  lists of {', '.join(showcase)} ready {waited:.1f}s after publishing finished")
    api = start_api(ctx.settings, port=pick_free_ports(1)[0], name="api-coview")
    try:
        client = dev_client(ctx.settings, api.base_url)
        for item in showcase:
            view = client.similar(item, limit=5)
            ctx.say(f"\n  Similar to {names.get(item, item)} ({item}; v{view['version']}, {view['source']}, "
                    f"support {view['support']:.0f} sessions):")
            for row in view["items"]:
                ctx.say(f"    {row['score']:.3f}  {names.get(row['item_id'], row['item_id'])}")
        item = showcase[0]
        viewer = next((user for user, rows in by_user.items() if any(i == item for _, i in rows)), None)
        try:
            pick = client.autoplay_next(item, user_id=viewer, device_type="WEB", age_limit=18)
        except ApiError as exc:
            ctx.say(f"\n  autoplay after {names.get(item, item)}: {exc}")
            return
        chosen = pick["next"]
        watched = [row["item_id"] for row in pick["skipped"] if row["why"] == "watched"]
        ctx.say(f"\n  Autoplay after {names.get(item, item)} for {viewer or 'a guest'}: "
                f"{chosen['title'] if chosen else 'nothing'} ({pick['reason']}); skipped {len(watched)} already watched"
                + (f": {', '.join(names.get(i, i) for i in watched[:3])}" if watched else "")
                + (" ..." if len(watched) > 3 else ""))
        ctx.facts["coview_showcase"] = showcase
    finally:
        api.stop()
