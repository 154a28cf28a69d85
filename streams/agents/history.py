"""Viewer history: playback -> per-viewer state (engine store) -> ``vitrina:history:{viewer}``.

Playback is keyed by viewer, so no repartition is needed. An engine processor (streams/runtime/engine/)
keeps each viewer's state in its partition's store, written to the changelog at each checkpoint. Per
batch the events are grouped by viewer and merged in one go (processors/history.py), so a viewer's
state and Redis view are written once per batch, not once per heartbeat. The merge is idempotent, so
a batch applied again (after a crash between a changelog write and the offset commit) leaves the
state as it is; its viewers' views are still written again, in case the state got ahead of Redis. Logged-in viewers
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

from processors.history import apply_events, history_view
from sinks.catalogue_views import catalogue_version, fetch_series
from sinks.redis_views import async_client, history_key
from sinks.showcase_views import mark_dirty
from streams.kafka.topics import spec, viewer_key
from streams.runtime.engine.runner import Output, sink_write
from streams.runtime.engine.service import register
from streams.runtime.engine.store import PartitionStore
from streams.runtime.metrics import VIEW_WRITES
from streams.runtime.records import Inbound

PLAYBACK = spec("playback")
AGENT = "viewer-history"


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


class ViewerHistory:
    """playback -> per-viewer history state -> ``vitrina:history:{viewer}``; logged-in viewers whose
    history changed are queued for a showcase rebuild."""

    name = AGENT
    sources = (PLAYBACK,)

    def __init__(self) -> None:
        self._redis = None
        self.series: SeriesCache | None = None

    def redis(self, out: Output):
        if self._redis is None:
            self._redis = async_client(out.settings)
            self.series = SeriesCache(self._redis)
        return self._redis

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: Output) -> None:
        redis = self.redis(out)
        groups: dict[str, list[Inbound]] = {}
        users: set[str] = set()
        for event in events:
            viewer = viewer_key(event.value)
            groups.setdefault(viewer, []).append(event)
            if event.value.get("user_id"):
                users.add(viewer)
        changed: dict[str, dict] = {}
        touched: dict[str, dict] = {}  # views to write: changed ones and redelivered ones
        for viewer, viewer_events in groups.items():
            try:
                update = apply_events(store.get(viewer), [e.value for e in viewer_events])
            except Exception as exc:  # noqa: BLE001 - a bug on one viewer must not stop the partition
                for event in viewer_events:
                    await out.failed(event, exc)
                continue
            for index, err in update.rejected:
                await out.failed(viewer_events[index], err)
            if update.changed:
                store[viewer] = update.state
                changed[viewer] = update.state
            elif len(update.rejected) < len(viewer_events):
                touched[viewer] = update.state
        touched.update(changed)
        if not touched:
            return
        async with sink_write("history"):
            known = await self.series.lookup({item for state in touched.values() for item in state["items"]})
            async with redis.pipeline(transaction=False) as pipe:
                for viewer, state in touched.items():
                    pipe.set(history_key(viewer), json.dumps(history_view(state, known.get), separators=(",", ":")))
                mark_dirty(pipe, [v for v in touched if v in users], int(time.time() * 1000))
                await pipe.execute()
        VIEW_WRITES.labels(view="history").inc(len(touched))

    async def tick(self, out: Output, stores: dict[int, PartitionStore]) -> None:
        return None


register(ViewerHistory())
