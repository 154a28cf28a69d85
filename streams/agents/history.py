"""Viewer history: playback -> per-viewer state (changelog table) -> ``vitrina:history:{viewer}``.

Playback is keyed by viewer, so no repartition is needed. Per batch the events are grouped by viewer
and merged in one go (processors/history.py), so a viewer's table entry and Redis view are written
once per batch, not once per heartbeat. The merge is idempotent, so a redelivered batch leaves the
table as it is; its viewers' views are still written again, because a crash between the table write
(local store and changelog) and the Redis write leaves the table ahead of Redis. Logged-in viewers
whose history was written are queued for a showcase rebuild (the builder waits until they are quiet
for a moment).

Series progress joins the catalogue: episode metadata is read from ``vitrina:title:{item}`` and cached
until the catalogue changes (``SeriesCache``). Like a stream-table join in Kafka Streams, the join
sees the catalogue as it is when the playback is processed: the catalogue is a "global table" that
must be complete before the events that refer to it. In a live system titles exist before anyone
plays them; a rebuild replays the catalogue topics first and waits until they are applied before the
event topics (streams/ops/replay.py). A view written while a title was still unknown is written again at
the viewer's next event.
"""
from __future__ import annotations

import json
import time

from infra.logs import get_logger
from infra.settings import load
from processors.history import apply_events, history_view
from sinks.catalogue_views import catalogue_version, fetch_series
from sinks.redis_views import async_client, history_key
from sinks.showcase_views import mark_dirty
from streams.runtime.app import app
from streams.runtime.inbound import Inbound, dead_letter_failed, decoded_batches, raw_topic
from streams.runtime.metrics import VIEW_WRITES
from streams.runtime.tables import json_table
from streams.kafka.topics import spec, viewer_key

settings = load()
log = get_logger("vitrina.agent.history")
PLAYBACK = spec("playback")
AGENT = "viewer-history"

playback_topic = raw_topic(app, PLAYBACK)
history_table = json_table(app, "viewer-history", PLAYBACK.partitions)


class SeriesCache:
    """item -> (series_id, season, episode) or None (not an episode), read from the catalogue views.

    Only what Redis answered is cached: a title not in Redis yet is asked again at the next lookup (it
    is never remembered as "not an episode"). The whole cache is dropped when the catalogue's title
    counter (``vitrina:catalogue:version``, bumped on every title write) moves or disappears (a title
    was written or corrected; Redis was flushed and a rebuild wrote the titles again), so a cached
    answer is never older than the catalogue views."""

    def __init__(self, redis, max_items: int = 200_000) -> None:
        self.redis = redis
        self.max_items = max_items
        self.known: dict[str, tuple[str, int, int] | None] = {}
        self.version: int | None = None

    async def lookup(self, items: set[str]) -> dict[str, tuple[str, int, int] | None]:
        version, _ = await catalogue_version(self.redis)
        if version != self.version or len(self.known) > self.max_items:
            self.known.clear()
            self.version = version
        missing = [i for i in items if i not in self.known]
        if missing:
            self.known.update(await fetch_series(self.redis, missing))
        return self.known


@app.agent(playback_topic, name=AGENT)
async def track_history(stream):
    redis = async_client(settings)
    series = SeriesCache(redis)
    async for batch in decoded_batches(app, stream, PLAYBACK, AGENT):
        groups: dict[str, list[Inbound]] = {}
        users: set[str] = set()
        for event in batch:
            viewer = viewer_key(event.value)
            groups.setdefault(viewer, []).append(event)
            if event.value.get("user_id"):
                users.add(viewer)
        changed: dict[str, dict] = {}
        touched: dict[str, dict] = {}  # views to write: changed ones and redelivered ones
        for viewer, events in groups.items():
            events[-1].bind()  # table writes go to this viewer's partition
            try:
                update = apply_events(history_table.get(viewer), [e.value for e in events])
            except Exception as exc:  # noqa: BLE001 - a bug on one viewer must not stop the agent
                for event in events:
                    await dead_letter_failed(app, event, AGENT, exc)
                continue
            for index, err in update.rejected:
                await dead_letter_failed(app, events[index], AGENT, err)
            if update.changed:
                history_table[viewer] = update.state
                changed[viewer] = update.state
            elif len(update.rejected) < len(events):
                touched[viewer] = update.state
        touched.update(changed)
        if not touched:
            continue
        known = await series.lookup({item for state in touched.values() for item in state["items"]})
        async with redis.pipeline(transaction=False) as pipe:
            for viewer, state in touched.items():
                pipe.set(history_key(viewer), json.dumps(history_view(state, known.get), separators=(",", ":")))
            mark_dirty(pipe, [v for v in touched if v in users], int(time.time() * 1000))
            await pipe.execute()
        VIEW_WRITES.labels(view="history").inc(len(touched))
