"""Main-job stage of the foundation: catalogue + generated sessions, playback and impressions."""
from __future__ import annotations

import time
from collections import Counter

from demo.catalogue import synthetic_titles
from demo.eventgen import StreamConfig, generate
from sinks.redis_views import POPULAR_KEY, plays_key, sync_client
from demo.main import SIZES, DemoContext, stage, wait_until
from streams.kafka.topics import spec


@stage(10, "event stream")
def publish_stream(ctx: DemoContext) -> None:
    viewers, n_titles = SIZES[ctx.size]
    ctx.section(f"Publishing a generated stream ({ctx.size}: {viewers} viewers, {n_titles} titles, seed {ctx.seed})")
    ctx.titles = synthetic_titles(n_titles, ctx.seed)
    counts: Counter[str] = Counter()
    starts: Counter[str] = Counter()
    started = time.perf_counter()
    ctx.producer.publish_many(spec("catalogue.titles"), ctx.titles)
    counts["catalogue.titles"] = len(ctx.titles)
    for topic, event in generate(ctx.titles, StreamConfig(viewers=viewers), ctx.seed):
        ctx.producer.publish(spec(topic), event)
        counts[topic] += 1
        if topic == "playback" and event["event_type"] == "START":
            starts[event["item_id"]] += 1
    ctx.producer.flush()
    elapsed = time.perf_counter() - started
    for topic, n in sorted(counts.items()):
        ctx.say(f"  {topic:<22} {n:>8,} events")
    ctx.say(f"  published {sum(counts.values()):,} events in {elapsed:.1f}s")
    ctx.facts["expected_starts"] = starts
    ctx.facts["playback_events"] = counts["playback"]


@stage(20, "play counts")
def show_play_counts(ctx: DemoContext) -> None:
    ctx.section("Play counts per title (agent play-counter -> Faust table -> Redis)")
    redis = sync_client(ctx.settings)
    expected = ctx.facts["expected_starts"]
    top = expected.most_common(5)

    def converged() -> bool:
        return all(int(redis.hget(plays_key(item), "plays") or 0) >= n for item, n in top)

    waited = wait_until(converged, 180, "play counts in Redis")
    ctx.say(f"  views converged {waited:.1f}s after publishing finished")
    titles = {t["item_id"]: t["title"] for t in ctx.titles}
    for item, plays in redis.zrevrange(POPULAR_KEY, 0, 4, withscores=True):
        ctx.say(f"  {int(plays):>5} plays  {item:<8} {titles.get(item, '?')}")
