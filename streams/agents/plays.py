"""Play counts per title: playback -> playback.by-item -> per-title counts (engine state, Redis, stats.plays).

Playback is keyed by viewer, counts by title, so the first processor repartitions (forwards the
original bytes keyed by title, with the origin position in a header) and the second keeps the counts
in engine state keyed by title (streams/runtime/engine/: changelog-backed, restored on assignment).

Each play is counted once per (playback partition, offset), the origin kept across the repartition, in
whatever order the repartitioned records arrive: a forwarder restarted from its last checkpoint sends
a stretch again, and around a rebalance the old owner's last batch may land after the new owner's
(processors/counters.py keeps the marks in the title's own state, so count and marks are one
changelog record and move together). The runtime's applied markers skip redelivered by-item records;
the origin marks skip re-forwarded copies, which carry new by-item offsets. The Redis view is always
written whole from the state, so a Redis loss never touches the marks.
"""
from __future__ import annotations

from datetime import datetime, timezone

from processors.counters import apply_playback
from sinks.redis_views import POPULAR_KEY, async_client, plays_key
from streams.kafka.codec import default_codec
from streams.kafka.topics import spec
from streams.runtime.engine.runner import Output, sink_write
from streams.runtime.engine.service import register
from streams.runtime.engine.store import PartitionStore
from streams.runtime.metrics import VIEW_WRITES
from streams.runtime.records import Inbound

PLAYBACK = spec("playback")
BY_ITEM = spec("playback.by-item")
STATS = spec("stats.plays")


class PlaybackByItem:
    """playback (keyed by viewer) -> playback.by-item (keyed by title), same bytes, origin in a header."""

    name = "playback-by-item"
    sources = (PLAYBACK,)

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: Output) -> None:
        for event in events:
            await out.send(BY_ITEM.name, event.raw, key=event.value["item_id"].encode(),
                           headers=[event.origin_header()])

    async def tick(self, out: Output, stores: dict[int, PartitionStore]) -> None:
        return None


class PlayCounter:
    """playback.by-item -> per-title counts -> ``vitrina:plays:{item}``, the popular set, stats.plays."""

    name = "play-counter"
    sources = (BY_ITEM,)

    def __init__(self) -> None:
        self.codec = default_codec()
        self._redis = None

    def redis(self, out: Output):
        if self._redis is None:
            self._redis = async_client(out.settings)
        return self._redis

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: Output) -> None:
        changed: dict[str, dict] = {}
        touched: dict[str, dict] = {}  # views to write: changed ones and redelivered ones
        for event in events:
            item = event.value["item_id"]
            try:
                state, did_change = apply_playback(store.get(item), event.value, event.origin_partition,
                                                   event.origin_offset)
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the partition
                await out.failed(event, exc)
                continue
            if did_change:
                store[item] = state
                changed[item] = state
            else:  # a re-forwarded copy: the state may be ahead of Redis (crash after the checkpoint), write again
                touched[item] = state
        touched.update(changed)
        if not touched:
            return
        # the view is written before the checkpoint that commits these records (the runner checkpoints
        # after process returns): a crash in between re-applies nothing and writes the view again
        async with sink_write("plays"), self.redis(out).pipeline(transaction=False) as pipe:
            for item, state in touched.items():
                pipe.hset(plays_key(item), mapping={"plays": state["plays"], "events": state["events"],
                                                    "updated_ms": state["updated_ms"]})
                pipe.zadd(POPULAR_KEY, {item: state["plays"]})
            await pipe.execute()
        VIEW_WRITES.labels(view="plays").inc(len(touched))
        if not changed or out.dropped(STATS.name, len(changed)):
            return
        for item, state in changed.items():
            value = self.codec.encode(STATS.schema, {
                "item_id": item, "plays": state["plays"], "events": state["events"],
                "updated_at": datetime.fromtimestamp(state["updated_ms"] / 1000, timezone.utc)})
            await out.send(STATS.name, value, key=item.encode())

    async def tick(self, out: Output, stores: dict[int, PartitionStore]) -> None:
        return None


register(PlaybackByItem())
register(PlayCounter())
