"""Session co-view "similar" lists: playback/sessions -> sessions -> per-title co-view -> Redis.

1. ``coview-sessions`` / ``coview-session-ends`` (playback, sessions; keyed by viewer): per-viewer
   ``SessionState`` (processors/coview/sessionize.py) in a changelog table. A batch is grouped by
   viewer, all its events applied, the table written once per viewer. The state remembers the last
   offset applied per source partition, so redelivered events change nothing. Completed views
   become co-view updates (processors/coview/cooccurrence.py), grouped per (title, playback
   partition) and sent to ``coview.contributions`` keyed by title (one message per title per batch).
2. ``coview-titles`` (coview.contributions, keyed by title): per-title decayed, bounded co-view
   state in a changelog table, again idempotent by (origin partition, origin offset), with a
   version bumped on every applied change. Changed titles are marked dirty.
3. A short timer (and the agent once the interval has passed) flushes dirty titles: top-K by the
   core's measure, blended with the catalogue-metadata list while support is low (cold start),
   written to ``vitrina:similar:{item}`` in one pipeline only if the list changed, plus one
   ``similar.updated`` event per changed title.

"Now" for decay is the title's latest view (event time), not the wall clock, so a replayed log
(MovieLens from 1996-2018) decays as it did when it happened, even next to live traffic.
"""
from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections import OrderedDict

from faust.streams import _current_event
from prometheus_client import Counter, Histogram

from infra.logs import get_logger
from infra.settings import load
from processors.coview.coldstart import DEFAULT_BLEND_PRIOR, MetadataIndex, blend
from processors.coview.cooccurrence import Contribution, CoviewConfig, apply_contribution, contributions_for_view
from processors.coview.sessionize import Rejected, SessionConfig, ViewCompleted, apply
from processors.coview.sessionize import viewer_key as session_viewer
from processors.coview.similarity import SimilarityConfig, title_count, top_similar
from sinks.catalogue_views import catalogue_version, load_titles
from sinks.redis_views import async_client
from sinks.similar_views import fetch_counts, list_signature, queue_counts, queue_views, similar_view, updated_event
from streams.app import app
from streams.codec import default_codec
from streams.inbound import Inbound, dead_letter_failed, decoded_batches, raw_topic
from streams.metrics import EVENTS_OUT, VIEW_WRITES
from streams.tables import json_table
from streams.topics import spec

settings = load()
log = get_logger("vitrina.agent.coview")
PLAYBACK = spec("playback")
SESSIONS = spec("sessions")
CONTRIBUTIONS = spec("coview.contributions")
SIMILAR = spec("similar.updated")
SESSION_AGENT, ENDS_AGENT, TITLES_AGENT = "coview-sessions", "coview-session-ends", "coview-titles"

_DAY_MS = 24 * 3600 * 1000
_half_life_days = os.environ.get("VITRINA_COVIEW_HALF_LIFE_DAYS", "").strip()
SESSION_CONFIG = SessionConfig()
COVIEW_CONFIG = CoviewConfig() if not _half_life_days else CoviewConfig(
    half_life_ms=None if _half_life_days == "0" else int(float(_half_life_days) * _DAY_MS))
SIMILARITY = SimilarityConfig(k=int(os.environ.get("VITRINA_COVIEW_K", "50")))
BLEND_PRIOR = DEFAULT_BLEND_PRIOR  # tuned on MovieLens validation (processors/coview/coldstart.py)
FLUSH_INTERVAL_S = float(os.environ.get("VITRINA_COVIEW_FLUSH_S", "0.25"))
CATALOGUE_CHECK_S = 5.0
SESSION_BATCH = int(os.environ.get("VITRINA_COVIEW_BATCH", "10000"))
SESSION_WITHIN_S = float(os.environ.get("VITRINA_COVIEW_BATCH_WITHIN_S", "0.3"))

VIEWS = Counter("vitrina_coview_views_total", "Views completed by the sessionizer")
DUPLICATES = Counter("vitrina_coview_duplicates_total", "Redelivered records skipped", ["agent"])
REJECTED = Counter("vitrina_coview_rejected_total", "Events the sessionizer did not use", ["code"])
APPLIED = Counter("vitrina_coview_updates_total", "Co-view title updates applied")
LISTS = Counter("vitrina_coview_lists_written_total", "Similar lists written (changed)")
FRESHNESS = Histogram("vitrina_coview_freshness_seconds", "Playback record produced -> similar list written",
                      buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60))

playback_topic = raw_topic(app, PLAYBACK)
sessions_topic = raw_topic(app, SESSIONS)
contributions_topic = raw_topic(app, CONTRIBUTIONS, partitions=CONTRIBUTIONS.partitions)
similar_topic = raw_topic(app, SIMILAR)
session_table = json_table(app, "coview-sessions", PLAYBACK.partitions)
title_table = json_table(app, "coview-titles", CONTRIBUTIONS.partitions)


# --- 1. sessions ------------------------------------------------------------------------------


def _apply_viewer(entry: dict | None, events: list[Inbound], tag: str,
                  views: list[tuple[ViewCompleted, Inbound]]) -> tuple[dict | None, list[tuple[Inbound, Exception]]]:
    """Fold a viewer's events of one batch; returns the new entry (None = unchanged) and failures."""
    state = entry["s"] if entry else None
    applied = dict(entry["o"]) if entry else {}
    changed = False
    failed: list[tuple[Inbound, Exception]] = []
    for event in events:
        key = f"{tag}{event.partition}"
        if event.offset <= applied.get(key, -1):
            DUPLICATES.labels(agent=SESSION_AGENT).inc()
            continue
        applied[key] = event.offset
        changed = True
        try:
            state, emitted = apply(state, event.value, SESSION_CONFIG)
        except Exception as exc:  # noqa: BLE001 - a bug on one event must not stop the agent
            failed.append((event, exc))
            continue
        for record in emitted:
            kind = type(record)
            if kind is ViewCompleted:
                views.append((record, event))
            elif kind is Rejected:
                REJECTED.labels(code=record.code).inc()
    return ({"s": state, "o": applied} if changed else None), failed


def title_partition(title: str) -> int:
    """Stable title -> contributions partition (every update of a title lands in one partition)."""
    return zlib.crc32(title.encode()) % CONTRIBUTIONS.partitions


def group_updates(views: list[tuple[ViewCompleted, Inbound]]) -> dict[tuple[str, int], dict]:
    """(title, playback partition) -> CoViewContribution record; updates in offset order."""
    grouped: dict[tuple[str, int], dict] = {}
    for view, event in views:
        produced = event.timestamp_ms
        for contribution in contributions_for_view(view, COVIEW_CONFIG):
            record = grouped.get((contribution.title, event.partition))
            if record is None:
                record = grouped[(contribution.title, event.partition)] = {
                    "title": contribution.title, "origin_partition": event.partition, "produced_ms": produced,
                    "updates": []}
            elif produced and (not record["produced_ms"] or produced < record["produced_ms"]):
                record["produced_ms"] = produced
            record["updates"].append({
                "origin_offset": event.offset, "own": contribution.own, "at": contribution.at_ms,
                "neighbours": [{"item_id": other, "weight": weight} for other, weight in contribution.neighbours]})
    return grouped


async def _sessionize(stream, source, agent: str, tag: str) -> None:
    codec = default_codec()
    # bigger batches than the default: updates are grouped per (title, partition) per batch, so fewer
    # and larger contribution messages (the per-message produce cost dominates)
    async for batch in decoded_batches(app, stream, source, agent, max_batch=SESSION_BATCH, within_s=SESSION_WITHIN_S):
        groups: dict[str, list[Inbound]] = {}
        for event in batch:
            groups.setdefault(session_viewer(event.value) or "", []).append(event)
        views: list[tuple[ViewCompleted, Inbound]] = []
        for viewer, events in groups.items():
            if not viewer:  # no user, device or session id: the codec's contract makes this unreachable
                for event in events:
                    REJECTED.labels(code="missing_field").inc()
                continue
            events[-1].bind()  # table writes go to this viewer's partition
            entry, failed = _apply_viewer(session_table.get(viewer), events, tag, views)
            if entry is not None:
                session_table[viewer] = entry
            for event, exc in failed:
                await dead_letter_failed(app, event, agent, exc)
        if not views:
            continue
        VIEWS.inc(len(views))
        by_partition: dict[int, list[dict]] = {}
        for (title, _origin), record in group_updates(views).items():
            by_partition.setdefault(title_partition(title), []).append(record)
        for partition, items in by_partition.items():
            await contributions_topic.send(key=str(partition).encode(), partition=partition,
                                           value=codec.encode(CONTRIBUTIONS.schema, {"items": items}))
        EVENTS_OUT.labels(topic=CONTRIBUTIONS.name, agent=agent).inc(len(by_partition))


@app.agent(playback_topic, name=SESSION_AGENT)
async def sessionize_playback(stream):
    await _sessionize(stream, PLAYBACK, SESSION_AGENT, "p")


@app.agent(sessions_topic, name=ENDS_AGENT)
async def sessionize_session_events(stream):
    await _sessionize(stream, SESSIONS, ENDS_AGENT, "s")


# --- 2. per-title co-view state ---------------------------------------------------------------


def apply_title_updates(entry: dict | None, record: dict) -> tuple[dict | None, int]:
    """Apply a contribution record to a title entry {"c": TitleState, "o": {partition: offset}, "v": version}.

    Returns (new entry or None if nothing new, latest event time applied).
    """
    partition = str(record["origin_partition"])
    last = entry["o"].get(partition, -1) if entry else -1
    fresh = [u for u in record["updates"] if u["origin_offset"] > last]
    if not fresh:
        return None, 0
    state = entry["c"] if entry else None
    latest = 0
    for update in fresh:
        contribution = Contribution(record["title"], update["own"],
                                    tuple((n["item_id"], n["weight"]) for n in update["neighbours"]), update["at"])
        state = apply_contribution(state, contribution, COVIEW_CONFIG, inplace=state is not None)
        latest = max(latest, update["at"])
    offsets = dict(entry["o"]) if entry else {}
    offsets[partition] = fresh[-1]["origin_offset"]
    return {"c": state, "o": offsets, "v": (entry["v"] if entry else 0) + 1}, latest


class _Overlay(dict):
    """Read-only view of two count maps without copying the big one."""

    def __init__(self, base: dict, extra: dict) -> None:
        super().__init__(extra)
        self.base = base

    def get(self, key, default=None):  # noqa: ANN001, ANN201
        found = dict.get(self, key)
        return found if found is not None else self.base.get(key, default)


class Flusher:
    """Dirty titles -> similar lists in Redis + similar.updated events, at most every FLUSH_INTERVAL_S."""

    def __init__(self, max_signatures: int = 200_000) -> None:
        self.dirty: dict[str, int] = {}  # item -> earliest produced_ms of its pending updates
        self.counts: dict[str, tuple[float, int]] = {}  # item -> (stored count, landmark) of titles applied here
        self.watermark_ms = 0
        self.written: OrderedDict[str, tuple] = OrderedDict()  # item -> signature of the last list written
        self.max_signatures = max_signatures
        self.last_flush = 0.0
        self.metadata: MetadataIndex | None = None
        self.catalogue_seen: tuple[int, int] | None = None
        self.catalogue_checked = 0.0
        self.lock = asyncio.Lock()
        self.redis = None
        self.codec = default_codec()

    def mark(self, item: str, produced_ms: int) -> None:
        pending = self.dirty.get(item)
        if pending is None or (produced_ms and produced_ms < pending):
            self.dirty[item] = produced_ms

    def due(self) -> bool:
        return bool(self.dirty) and time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S

    async def _refresh_metadata(self) -> None:
        if time.monotonic() - self.catalogue_checked < CATALOGUE_CHECK_S:
            return
        self.catalogue_checked = time.monotonic()
        version = await catalogue_version(self.redis)
        if version == self.catalogue_seen:
            return
        index = MetadataIndex()
        for title in await load_titles(self.redis):
            if isinstance(title, dict) and title.get("item_id"):
                index.add_title(title)
        self.metadata, self.catalogue_seen = index, version
        log.info("coview_metadata_index", titles=len(index))

    async def flush(self) -> int:
        if not self.dirty or self.lock.locked():
            return 0
        async with self.lock:
            if self.redis is None:
                self.redis = async_client(settings)
            try:
                await self._refresh_metadata()
            except Exception as exc:  # noqa: BLE001 - lists still go out, co-view only
                log.warning("coview_metadata_failed", error=repr(exc))
            pending, self.dirty = self.dirty, {}
            self.last_flush = time.monotonic()
            # Without a current event a table read looks in every local partition; with one (the
            # agent's last bound event) Faust's RocksDB store only looks in that event's partition.
            token = _current_event.set(None)
            try:
                return await self._write(pending)
            except Exception as exc:  # noqa: BLE001 - retry these titles on the next flush
                log.error("coview_flush_failed", titles=len(pending), error=repr(exc))
                for item, produced in pending.items():
                    self.mark(item, produced)
                return 0
            finally:
                _current_event.reset(token)

    async def _write(self, pending: dict[str, int]) -> int:
        half_life = COVIEW_CONFIG.half_life_ms
        entries = {item: title_table.get(item) for item in pending}
        # neighbour -> (stored count, landmark): this worker's titles from memory (no table read and
        # JSON decode per neighbour), the others' (and ours before a restart) from the counts hash
        stored = self.counts
        remote_needed: set[str] = set()
        for entry in entries.values():
            if entry is None:
                continue
            for other in entry["c"]["nb"]:
                if other not in stored:
                    remote_needed.add(other)
        remote = await fetch_counts(self.redis, sorted(remote_needed))
        if remote:
            stored = {**stored, **remote} if len(remote) < 1000 else _Overlay(stored, remote)
        views, counts = [], {}
        for item, entry in entries.items():
            if entry is None:
                continue
            state = entry["c"]
            # "Now" is the title's own latest view: a list is rewritten only when its title changes,
            # and a replayed old log next to live traffic must not decay to nothing.
            now_ms = state["t"]

            def count_of(other: str, now_ms: int = now_ms) -> float:
                found = stored.get(other)
                return title_count({"n": found[0], "L": found[1]}, now_ms, half_life) if found else 0.0

            total = 0.0  # N is used by lift/llr only; jaccard (the default) does not need it
            counts[item] = (state["n"], state["L"])
            coview = top_similar(state, count_of, total, now_ms, half_life, SIMILARITY, exclude=item)
            support = title_count(state, now_ms, half_life)
            meta = self.metadata.similar(item, SIMILARITY.k) if self.metadata is not None else []
            items, source = blend(coview, meta, support, BLEND_PRIOR, SIMILARITY.k)
            view = similar_view(item, entry["v"], state["t"], source, support, items)
            signature = list_signature(view)
            if self.written.get(item) == signature:
                continue
            views.append(view)
        async with self.redis.pipeline(transaction=False) as pipe:
            queue_views(pipe, views)
            queue_counts(pipe, counts)
            await pipe.execute()
        wall_ms = time.time() * 1000
        for view in views:
            item = view["item_id"]
            self.written[item] = list_signature(view)
            self.written.move_to_end(item)
            produced = pending.get(item) or 0
            if produced:
                FRESHNESS.observe(max(0.0, (wall_ms - produced) / 1000))
        while len(self.written) > self.max_signatures:
            self.written.popitem(last=False)
        for view in views:
            state_t = entries[view["item_id"]]["c"]["t"]
            await similar_topic.send(key=view["item_id"].encode(),
                                     value=self.codec.encode(SIMILAR.schema, updated_event(view, state_t)))
        if views:
            VIEW_WRITES.labels(view="similar").inc(len(views))
            LISTS.inc(len(views))
            EVENTS_OUT.labels(topic=SIMILAR.name, agent=TITLES_AGENT).inc(len(views))
        return len(views)


flusher = Flusher()


@app.agent(contributions_topic, name=TITLES_AGENT)
async def coview_titles(stream):
    async for batch in decoded_batches(app, stream, CONTRIBUTIONS, TITLES_AGENT):
        groups: dict[str, list[tuple[Inbound, dict]]] = {}
        for event in batch:
            for record in event.value["items"]:
                groups.setdefault(record["title"], []).append((event, record))
        failed: set[int] = set()
        for title, records in groups.items():
            records[-1][0].bind()
            entry = title_table.get(title)
            changed = False
            for event, record in records:
                try:
                    new, latest = apply_title_updates(entry, record)
                except Exception as exc:  # noqa: BLE001
                    if id(event) not in failed:
                        failed.add(id(event))
                        await dead_letter_failed(app, event, TITLES_AGENT, exc)
                    continue
                if new is None:
                    DUPLICATES.labels(agent=TITLES_AGENT).inc()
                    continue
                APPLIED.inc(len(record["updates"]))
                entry, changed = new, True
                if latest > flusher.watermark_ms:
                    flusher.watermark_ms = latest
                flusher.mark(title, record["produced_ms"])
            if changed:
                title_table[title] = entry
                flusher.counts[title] = (entry["c"]["n"], entry["c"]["L"])
        if flusher.due():
            await flusher.flush()


@app.timer(interval=FLUSH_INTERVAL_S)
async def flush_similar_lists() -> None:
    if flusher.due():
        await flusher.flush()
