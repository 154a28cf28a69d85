"""Example agent of the foundation: playback -> per-title play counts (table, Redis, stats.plays).

Playback is keyed by viewer, counts by title, so the first agent repartitions
(an explicit group_by that forwards the original bytes) and the second keeps a
changelog-backed table keyed by title.

Each play is counted once per (playback partition, offset) — the origin kept across the repartition —
in whatever order the repartitioned records arrive: around a rebalance the old owner of a playback
partition may still forward its batch in flight while the new owner forwards again from the last
commit, so an earlier stretch can follow a later one (processors/counters.py). The marks are part of
the title's table state (one changelog record: count and marks move together), never in Redis, so a
Redis loss does not touch them: the Redis view is always written whole from the table.
"""
from __future__ import annotations

from datetime import datetime, timezone

from infra.logs import get_logger
from infra.settings import load
from processors.counters import apply_playback
from sinks.redis_views import POPULAR_KEY, async_client, plays_key
from streams.runtime.app import app
from streams.kafka.codec import default_codec
from streams.runtime.inbound import dead_letter_failed, decoded_batches, forward, raw_topic
from streams.runtime.metrics import EVENTS_OUT, VIEW_WRITES
from streams.runtime.tables import json_table
from streams.kafka.topics import spec

settings = load()
log = get_logger("vitrina.agent.plays")
PLAYBACK = spec("playback")
BY_ITEM = spec("playback.by-item")
STATS = spec("stats.plays")

playback_topic = raw_topic(app, PLAYBACK)
by_item_topic = raw_topic(app, BY_ITEM, partitions=BY_ITEM.partitions)
stats_topic = raw_topic(app, STATS)
plays_table = json_table(app, "plays", BY_ITEM.partitions)


@app.agent(playback_topic, name="playback-by-item")
async def repartition_playback(stream):
    async for batch in decoded_batches(app, stream, PLAYBACK, "playback-by-item"):
        for event in batch:
            await forward(by_item_topic, event.value["item_id"].encode(), event)
        EVENTS_OUT.labels(topic=BY_ITEM.name, agent="playback-by-item").inc(len(batch))


@app.agent(by_item_topic, name="play-counter")
async def count_plays(stream):
    codec = default_codec()
    redis = async_client(settings)
    async for batch in decoded_batches(app, stream, BY_ITEM, "play-counter"):
        changed: dict[str, dict] = {}
        touched: dict[str, dict] = {}  # views to write: changed ones and redelivered ones
        for event in batch:
            item = event.value["item_id"]
            event.bind()  # table reads and writes go to this event's partition
            try:
                state, did_change = apply_playback(plays_table.get(item), event.value, event.origin_partition, event.origin_offset)
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the agent
                await dead_letter_failed(app, event, "play-counter", exc)
                continue
            if did_change:
                plays_table[item] = state
                changed[item] = state
            else:  # redelivered after a crash: the changelog may be ahead of Redis, so write the view again
                touched[item] = state
        touched.update(changed)
        if not touched:
            continue
        async with redis.pipeline(transaction=False) as pipe:
            for item, state in touched.items():
                pipe.hset(plays_key(item), mapping={"plays": state["plays"], "events": state["events"],
                                                    "updated_ms": state["updated_ms"]})
                pipe.zadd(POPULAR_KEY, {item: state["plays"]})
            await pipe.execute()
        VIEW_WRITES.labels(view="plays").inc(len(touched))
        for item, state in changed.items():
            value = codec.encode(STATS.schema, {
                "item_id": item, "plays": state["plays"], "events": state["events"],
                "updated_at": datetime.fromtimestamp(state["updated_ms"] / 1000, timezone.utc)})
            await stats_topic.send(key=item.encode(), value=value)
        EVENTS_OUT.labels(topic=STATS.name, agent="play-counter").inc(len(changed))
