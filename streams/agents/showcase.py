"""Showcase agents: the builder timer, ops rebuild requests, and impression counts for CTR.

* ``build_showcases`` (timer, every VITRINA_SHOWCASE_TICK_S, default 1 s, on every worker): one
  ``ShowcaseBuilder.tick`` - index refresh when the catalogue/stats changed, variants, then the
  dirty users in batches (see streams/capabilities/showcase/builder.py), and the settled pass once the inputs are
  quiet (VITRINA_SHOWCASE_SETTLED_S, default 30 s). Each view written with new content gives a
  ``showcase.updated`` event (a restamp of unchanged content does not).
* ``showcase-rebuild-requests``: ``showcase.rebuild`` records from ops queue a user (or everyone) for
  the next tick, forced or not.
* ``showcase-impressions`` (an engine processor: half of the input volume): ranking.impressions ->
  impressions per title in Redis (the CTR denominator; plays come from the play counter), counted once
  per record by the marks kept next to the counts in Redis (sinks/showcase_views.py ``ImpressionCounter``).
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

from infra.logs import get_logger
from sinks.redis_views import async_client
from sinks.showcase_views import ImpressionCounter, ViewWrite, request_rebuild
from streams.runtime.app import app, app_settings
from streams.kafka.codec import default_codec
from streams.runtime.engine.runner import Output, sink_write
from streams.runtime.engine.service import register
from streams.runtime.engine.store import PartitionStore
from streams.runtime.inbound import dead_letter_failed, decoded_batches, raw_topic
from streams.runtime.records import Inbound
from streams.runtime.metrics import EVENTS_OUT, VIEW_WRITES
from streams.capabilities.showcase.builder import ShowcaseBuilder
from streams.kafka.topics import spec

settings = app_settings()
log = get_logger("vitrina.agent.showcase")
UPDATED = spec("showcase.updated")
REBUILD = spec("showcase.rebuild")
IMPRESSIONS = spec("ranking.impressions")

updated_topic = raw_topic(app, UPDATED)
rebuild_topic = raw_topic(app, REBUILD)

_builder: ShowcaseBuilder | None = None


def builder() -> ShowcaseBuilder:
    global _builder
    if _builder is None:
        _builder = ShowcaseBuilder(async_client(settings), settle_s=settings.showcase_settle_s,
                                   settled_s=settings.showcase_settled_s, settings=settings)
    return _builder


def updated_event(write: ViewWrite) -> dict:
    return {"view_key": write.view_key, "user_id": write.user_id, "device_type": write.device_type,
            "version": write.version, "shelves": write.shelves, "items": write.items, "fallback": write.is_fallback,
            "content_hash": write.content_hash,
            "updated_at": datetime.fromtimestamp(write.decided_at_ms / 1000, timezone.utc)}


@app.task
async def build_showcases():
    """A loop rather than ``app.timer``: a tick may take longer than the interval, and then the next one
    simply starts right after it (no drift warnings, never two ticks at once)."""
    failures = 0
    while True:
        started = time.monotonic()
        failures = 0 if await _tick() else failures + 1
        tick_s = settings.showcase_tick_s
        pause = tick_s if not failures else min(30.0, tick_s * 2 ** failures)  # back off while Redis is away
        await asyncio.sleep(max(0.05, pause - (time.monotonic() - started)))


async def _tick() -> bool:
    try:
        report = await builder().tick()
        codec = default_codec()
        for write in report.written:
            if write.decision == "restamped":  # same content, only built_at moved: nothing for clients
                continue
            await updated_topic.send(key=write.view_key.encode(),
                                     value=codec.encode(UPDATED.schema, updated_event(write)))
    except Exception as exc:
        log.exception("showcase_tick_failed", error=repr(exc))
        return False
    if report.written:
        VIEW_WRITES.labels(view="showcase").inc(len(report.written))
        EVENTS_OUT.labels(topic=UPDATED.name, agent="showcase-builder").inc(len(report.written))
    return True


@app.agent(rebuild_topic, name="showcase-rebuild-requests")
async def rebuild_requests(stream):
    async for batch in decoded_batches(app, stream, REBUILD, "showcase-rebuild-requests"):
        for event in batch:
            request = event.value
            try:
                if request["user_id"]:
                    queued = await request_rebuild(builder().redis, [request["user_id"]], force=request["force"])
                else:
                    queued = await builder().mark_all_users(force=request["force"])
            except Exception as exc:
                await dead_letter_failed(app, event, "showcase-rebuild-requests", exc)
                continue
            log.info("showcase_rebuild_requested", request_id=request["request_id"], user_id=request["user_id"],
                     force=request["force"], reason=request["reason"], queued=queued)


class ImpressionCounts:
    """ranking.impressions -> per-title impression counts (exact per partition and offset, in Redis)."""

    name = "showcase-impressions"
    sources = (IMPRESSIONS,)

    def __init__(self) -> None:
        self.counter: ImpressionCounter | None = None

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: Output) -> None:
        if self.counter is None:
            self.counter = ImpressionCounter(async_client(out.settings))
        async with sink_write("impressions"):
            counted = await self.counter.add(partition, [(event.offset, event.value["item_id"]) for event in events])
        VIEW_WRITES.labels(view="impressions").inc(counted)

    async def tick(self, out: Output, stores: dict[int, PartitionStore]) -> None:
        return None


register(ImpressionCounts())
