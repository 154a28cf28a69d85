"""Session co-view "similar" lists: playback/sessions -> sessions -> per-title co-view -> Redis.

Both stages run on the engine (streams/runtime/engine/): a Faust agent tops out near 11k events/s here,
the engine's loop carries the co-view pipeline's >= 20k/s. Same contract: changelog-backed state
per source partition, at-least-once input, state changes applied once.

1. ``coview-sessions`` (playback + sessions, co-partitioned by viewer): per-viewer ``SessionState``
   (processors/coview/sessionize.py) in the engine store. A batch is grouped by viewer and folded
   with the pure ``apply``; completed views become co-view updates (processors/coview/cooccurrence.py),
   grouped per (title, origin) and sent to ``coview.contributions`` keyed by title partition (one
   message per destination partition per batch). Viewers are forgotten by an event-time rule
   (``sessionize.expired``); every ``VITRINA_COVIEW_SWEEP_S`` the forgotten ones are dropped from memory.
2. ``coview-titles`` (coview.contributions): per-title decayed, bounded co-view state, idempotent by
   (origin, origin offset) so a sessionizer that re-sends after a crash changes nothing, with a
   version bumped on every applied change. Changed titles are marked dirty.
3. Every ``VITRINA_COVIEW_FLUSH_S`` the title stage writes the dirty titles' lists: top-K by the
   core's measure, blended with the list of a closed-form item model the worker refits every few minutes
   from its sessions (``refit_model``, processors/coview/item_model.py), then with the catalogue-metadata
   list while support is low (cold start),
   to ``vitrina:similar:{item}`` in one pipeline only if the list (or its ``updated_at``) changed, plus one
   ``similar.updated`` event per changed title.

"Now" for decay is the title's latest view (event time), not the wall clock, so a replayed log
(MovieLens from 1996-2018) decays as it did when it happened, even next to live traffic.

The order that makes the result deterministic (same input -> same counts and lists, whatever the
batching, timing, crashes or rebalances; tests/faults/):

* a viewer's events are folded in playback-partition order (one partition per viewer), and every
  decision uses event time or that order, never the wall clock: sessions close on event-time gaps,
  a viewer's state is forgotten when its partition's clocks (largest playback event time so far,
  playback offset) say so (``sessionize.expired``), the same rule before each event and in the sweep.
  Session events (``sessions``) join in arrival order, the one order this stage does not define;
* a title's contributions from different origins arrive in any interleaving: the state is built so
  that the order does not matter (exact grid sums, landmark on whole half-lives:
  processors/coview/cooccurrence.py); re-sent ones are dropped by (origin, origin offset), which the
  idempotent producer keeps increasing per partition;
* lists are scored from counts; once the input is quiet every list is re-scored (``settle``), and
  again whenever a count it read from another worker or the catalogue changes, so the final lists
  are a function of the final counts; equal scores rank by title id (``top_similar``). Restored
  partitions are re-flushed by their new owner (``TitleProcessor.assigned``).
"""
from __future__ import annotations

import asyncio
import time
import zlib
from collections import OrderedDict
from itertools import islice

from prometheus_client import Counter, Histogram

from infra.logs import get_logger
from processors.coview.coldstart import DEFAULT_BLEND_PRIOR, MetadataIndex, arrange, blend
from processors.coview.cooccurrence import Contribution, CoviewConfig, apply_contributions, decayed
from processors.coview.item_model import BasketLog, ItemModelConfig, ModelRefresher, fit_item_model, served_coview
from processors.coview.routing import pack_views, unpack_by_title
from processors.coview.sessionize import Rejected, SessionConfig, ViewCompleted, apply, event_time_ms, expired
from processors.coview.sessionize import sessionizer_key
from processors.coview.similarity import SimilarityConfig, title_count, top_similar
from sinks.catalogue_views import catalogue_version, load_titles
from sinks.redis_views import async_client
from sinks.similar_views import (count_field, fetch_counts, list_signature, queue_counts, queue_views, similar_view,
                                 updated_event)
from streams.kafka.codec import default_codec
from streams.runtime.engine.runner import Output
from streams.runtime.app import app_settings
from streams.runtime.engine.service import register
from streams.runtime.engine.store import PartitionStore
from streams.runtime.records import Inbound
from streams.runtime.metrics import VIEW_WRITES
from streams.kafka.topics import spec

settings = app_settings()
log = get_logger("vitrina.agent.coview")
PLAYBACK = spec("playback")
SESSIONS = spec("sessions")
CONTRIBUTIONS = spec("coview.contributions")
SIMILAR = spec("similar.updated")
SESSION_AGENT, TITLES_AGENT = "coview-sessions", "coview-titles"
# Contribution origins: one offset sequence per (topic, partition); the sessions topic's partitions
# are numbered from here so the title stage's per-origin dedupe never mixes the two topics.
ORIGIN_BASE = {PLAYBACK.name: 0, SESSIONS.name: 10_000}
# The sessionizer partition's clocks (never a sessionizer_key: those start with u:, d: or s:)
CLOCKS = "#clocks"

_DAY_MS = 24 * 3600 * 1000
_half_life_days = settings.coview_half_life_days
SESSION_CONFIG = SessionConfig()
COVIEW_CONFIG = CoviewConfig() if not _half_life_days else CoviewConfig(
    half_life_ms=None if _half_life_days == "0" else int(float(_half_life_days) * _DAY_MS))
SIMILARITY = SimilarityConfig(k=settings.coview_k)
BLEND_PRIOR = DEFAULT_BLEND_PRIOR  # tuned on MovieLens validation (processors/coview/coldstart.py)
FLUSH_INTERVAL_S = settings.coview_flush_s
FLUSH_SHARE = 5.0
FLUSH_MAX_TITLES = settings.coview_flush_max_titles
CATALOGUE_CHECK_S = 5.0
SWEEP_S = settings.coview_sweep_s
SETTLE_S = settings.coview_settle_s
SETTLE_MAX_TITLES = settings.coview_settle_max_titles
# The item model blended into the co-view side of every list (issue 17, bench/coview_quality.py
# --add-served-blend: weight 0.25 and ridge 200 chosen on MovieLens validation): EASE refitted every
# MODEL_REFIT_S from the sessions this worker's sessionizer completed (at most MODEL_SESSIONS, 200 titles
# each; viewers are hash-partitioned, so with several workers each fits on a uniform sample of the
# sessions; a worker running only the title stage has no sessions and serves co-view lists), at most
# 8,000 titles x K entries kept. The first refit comes MODEL_REFIT_S after start and once MODEL_MIN_SESSIONS
# sessions are logged: until then (and with weight 0) lists are co-view + metadata as before. The model is
# the one input of a list that is not a function of the events (refit times, an in-memory log lost on a
# restart): like pruning, a documented exception to the determinism above, for streams of that size only.
MODEL_WEIGHT = settings.coview_model_weight
MODEL_REFIT_S = settings.coview_model_refit_s
MODEL_SESSIONS = 100_000
MODEL_MIN_SESSIONS = 1000
MODEL_CONFIG = ItemModelConfig(max_items=8000, l2=200.0, k=SIMILARITY.k)

VIEWS = Counter("vitrina_coview_views_total", "Views completed by the sessionizer")
DUPLICATES = Counter("vitrina_coview_duplicates_total", "Redelivered records skipped", ["agent"])
REJECTED = Counter("vitrina_coview_rejected_total", "Events the sessionizer did not use", ["code"])
SWEPT = Counter("vitrina_coview_idle_viewers_swept_total", "Viewer states dropped after the session gap")
APPLIED = Counter("vitrina_coview_updates_total", "Co-view title updates applied")
LISTS = Counter("vitrina_coview_lists_written_total", "Similar lists written (changed)")
FRESHNESS = Histogram("vitrina_coview_freshness_seconds", "Playback record produced -> similar list written",
                      buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60))


# --- 1. sessions ------------------------------------------------------------------------------


def _fold_viewer(state: dict | None, events: list[tuple[Inbound, int, int]],
                 views: list[tuple[ViewCompleted, Inbound]], failed: list[tuple[Inbound, Exception]],
                 last_offset: int) -> tuple[dict | None, int]:
    """Fold one viewer's events of a batch (each with the partition's clocks before it: event-time
    watermark, playback offset) into its session state (pure core; failures collected). The state is
    forgotten first if ``expired`` at that event. Returns the state and the offset of its latest event."""
    for event, watermark, offset in events:
        if state is not None and expired(state, watermark, offset - last_offset, SESSION_CONFIG):
            state = None
        try:
            state, emitted = apply(state, event.value, SESSION_CONFIG)
        except Exception as exc:  # noqa: BLE001 - a bug on one event must not stop the partition
            failed.append((event, exc))
            continue
        last_offset = offset
        for record in emitted:
            kind = type(record)
            if kind is ViewCompleted:
                views.append((record, event))
            elif kind is Rejected:
                REJECTED.labels(code=record.code).inc()
    return state, last_offset


_PARTITION_CACHE: dict[str, int] = {}


def title_partition(title: str) -> int:
    """Stable title -> contributions partition (every update of a title lands in one partition)."""
    found = _PARTITION_CACHE.get(title)
    if found is None:
        if len(_PARTITION_CACHE) > 1_000_000:
            _PARTITION_CACHE.clear()
        found = _PARTITION_CACHE[title] = zlib.crc32(title.encode()) % CONTRIBUTIONS.partitions
    return found


class SessionProcessor:
    """Engine processor: playback + session events -> per-viewer sessions -> co-view contributions."""

    name = SESSION_AGENT
    sources = (PLAYBACK, SESSIONS)

    def __init__(self) -> None:
        self.codec = default_codec()
        self.last_sweep = time.monotonic()

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: Output) -> None:
        # the partition's clocks (state.py): event-time watermark of the playback events and playback offset,
        # as they are before each event (a session event takes the playback offset reached so far)
        clocks = store.get(CLOCKS) or {"wm": 0, "o": -1}
        watermark, position = clocks["wm"], clocks["o"]
        groups: dict[str, list[tuple[Inbound, int, int]]] = {}
        playback = events[0].topic == PLAYBACK.name
        for event in events:
            offset = event.offset if playback else position
            groups.setdefault(sessionizer_key(event.value) or "", []).append((event, watermark, offset))
            if playback:
                position = event.offset
                at = event_time_ms(event.value.get("event_time"))
                if at is not None and at > watermark:
                    watermark = at
        views: list[tuple[ViewCompleted, Inbound]] = []
        failed: list[tuple[Inbound, Exception]] = []
        for viewer, viewer_events in groups.items():
            if not viewer:  # no user, device or session id: the codec's contract makes this unreachable
                REJECTED.labels(code="missing_field").inc(len(viewer_events))
                continue
            entry = store.get(viewer)
            state, last = _fold_viewer(entry["s"] if entry else None, viewer_events, views, failed,
                                       entry.get("o", -1) if entry else -1)
            if state is None:
                store.delete(viewer)
            else:
                store[viewer] = {"s": state, "o": last}
        if (watermark, position) != (clocks["wm"], clocks["o"]):
            store[CLOCKS] = {"wm": watermark, "o": position}
        for event, exc in failed:
            await out.failed(event, exc)
        if views:
            await self.send_contributions(views, out)

    async def send_contributions(self, views: list[tuple[ViewCompleted, Inbound]], out: Output) -> None:
        """Views -> one CoViewBatch per title partition they update (processors/coview/routing.py)."""
        VIEWS.inc(len(views))
        if MODEL_WEIGHT > 0.0:  # the item model's refit input (bounded, ~1 us per view)
            baskets = refresher.log
            for view, _event in views:
                baskets.add(view.session_id, view.item_id)
        by_origin: dict[int, list[tuple[ViewCompleted, int]]] = {}
        produced: dict[int, int] = {}
        for view, event in views:
            origin = ORIGIN_BASE.get(event.topic, 0) + event.partition
            by_origin.setdefault(origin, []).append((view, event.offset))
            if event.timestamp_ms and (origin not in produced or event.timestamp_ms < produced[origin]):
                produced[origin] = event.timestamp_ms
        for origin, origin_views in by_origin.items():
            origin_views.sort(key=lambda pair: pair[1])
            batches = pack_views(origin_views, origin, produced.get(origin, 0), title_partition, COVIEW_CONFIG)
            for partition, record in batches.items():
                await out.send(CONTRIBUTIONS.name, self.codec.encode(CONTRIBUTIONS.schema, record),
                               key=str(partition).encode(), partition=partition)

    async def tick(self, out: Output, stores: dict[int, PartitionStore]) -> None:
        # the wall clock only decides when memory is freed; what is forgotten is decided by ``expired``
        if time.monotonic() - self.last_sweep >= SWEEP_S:
            self.last_sweep = time.monotonic()
            SWEPT.inc(sweep_idle(stores.values()))


def sweep_idle(stores) -> int:
    """Drop the viewers that ``expired`` at their partition's current clocks: any later event of theirs
    would forget them first anyway (the clocks only grow), so this changes memory, never a result."""
    swept = 0
    for store in stores:
        clocks = store.get(CLOCKS)
        if clocks is None:
            continue
        watermark, position = clocks["wm"], clocks["o"]
        for viewer in [viewer for viewer, entry in store.items() if viewer != CLOCKS
                       and expired(entry["s"], watermark, position - entry.get("o", -1), SESSION_CONFIG)]:
            store.delete(viewer)
            swept += 1
    return swept


# --- 2. per-title co-view state ---------------------------------------------------------------


def apply_to_title(entry: dict | None, origin: str, updates: list[tuple[int, Contribution]]) -> dict | None:
    """A title's contributions of one batch (offset order) to its entry {"c": TitleState, "o": {origin:
    last offset}, "v": version}; those at or below the origin's last offset were applied already (a
    re-sent batch) and are skipped. None if nothing was new. Mutates ``entry``."""
    last = entry["o"].get(origin, -1) if entry is not None else -1
    fresh = [contribution for offset, contribution in updates if offset > last]
    if not fresh:
        return None
    if entry is None:
        entry = {"c": None, "o": {}, "v": 0}
    entry["c"] = apply_contributions(entry["c"], fresh, COVIEW_CONFIG)
    entry["o"][origin] = updates[-1][0]
    entry["v"] += 1
    return entry


class Flusher:
    """Dirty titles -> similar lists in Redis + similar.updated events, at most every FLUSH_INTERVAL_S."""

    def __init__(self, max_signatures: int = 200_000) -> None:
        self.dirty: dict[str, int] = {}  # item -> earliest produced_ms of its pending updates
        # item -> (signature, version) of the last list written (``written_signature``)
        self.written: OrderedDict[str, tuple[tuple, int]] = OrderedDict()
        self.max_signatures = max_signatures
        self.last_flush = 0.0
        self.last_duration = 0.0
        self.metadata: MetadataIndex | None = None
        self.metadata_lists: dict[str, list[tuple[str, float]]] = {}
        self.catalogue_seen: tuple[int, int] | None = None
        self.catalogue_checked = 0.0
        self.counts_written: dict[str, str] = {}  # item -> counts hash field last written by this worker
        # other workers' titles -> the count (stored, landmark) the lists written since the last settle used
        self.remote_used: dict[str, tuple[float, int] | None] = {}
        self.lock = asyncio.Lock()
        self.redis = None
        self.codec = default_codec()

    def metadata_similar(self, item: str) -> list[tuple[str, float]]:
        """The title's metadata neighbours, cached until the catalogue changes (~10 ms each to compute
        on a 10k-title catalogue; a list is rescored far more often than the catalogue changes)."""
        if self.metadata is None:
            return []
        found = self.metadata_lists.get(item)
        if found is None:
            if len(self.metadata_lists) >= 200_000:
                self.metadata_lists.clear()
            found = self.metadata_lists[item] = self.metadata.similar(item, SIMILARITY.k)
        return found

    def mark(self, item: str, produced_ms: int) -> None:
        pending = self.dirty.get(item)
        if pending is None or (produced_ms and produced_ms < pending):
            self.dirty[item] = produced_ms

    def due(self) -> bool:
        # at most ~1/FLUSH_SHARE of the time in flushing: a burst that dirties thousands of titles per
        # interval gets fewer, bigger flushes (each title scored once per flush) instead of a stalled stage
        wait = max(FLUSH_INTERVAL_S, self.last_duration * (FLUSH_SHARE - 1))
        return bool(self.dirty) and time.monotonic() - self.last_flush >= wait

    async def _refresh_metadata(self) -> bool:
        """Reload the metadata index if the catalogue changed (checked every CATALOGUE_CHECK_S); True if it did."""
        if time.monotonic() - self.catalogue_checked < CATALOGUE_CHECK_S:
            return False
        self.catalogue_checked = time.monotonic()
        version = await catalogue_version(self.redis)
        if version == self.catalogue_seen:
            return False
        index = MetadataIndex()
        for title in await load_titles(self.redis):
            if isinstance(title, dict) and title.get("item_id"):
                index.add_title(title)
        self.metadata, self.catalogue_seen = index, version
        self.metadata_lists = {}
        log.info("coview_metadata_index", titles=len(index))
        return True

    async def inputs_changed(self) -> bool:
        """Whether a list of this worker could score differently than when it was written, with nothing
        of its own applied since: the catalogue (cold-start blend) changed, or a neighbour count that
        another worker owns did. Asked when the stream is quiet (``TitleProcessor.tick``), so that lists
        end scored from the final counts of every title whichever worker wrote first."""
        if self.redis is None:
            self.redis = async_client(settings)
        self.catalogue_checked = 0.0
        changed = await self._refresh_metadata()
        if self.remote_used:
            names = sorted(self.remote_used)
            now = await fetch_counts(self.redis, names)
            changed = changed or any(now.get(name) != self.remote_used[name] for name in names)
        return changed
    async def flush(self, out: Output, stores: dict[int, PartitionStore]) -> int:
        if not self.dirty or self.lock.locked():
            return 0
        async with self.lock:
            if self.redis is None:
                self.redis = async_client(settings)
            try:
                await self._refresh_metadata()
            except Exception as exc:  # noqa: BLE001 - lists still go out, co-view only
                log.warning("coview_metadata_failed", error=repr(exc))
            if len(self.dirty) <= FLUSH_MAX_TITLES:
                pending, self.dirty = self.dirty, {}
            else:  # oldest first; the rest on the next flush (the loop must stay responsive)
                pending = dict(islice(self.dirty.items(), FLUSH_MAX_TITLES))
                for item in pending:
                    del self.dirty[item]
            self.last_flush = started = time.monotonic()
            try:
                return await self._write(pending, out, stores)
            except Exception as exc:  # noqa: BLE001 - retry these titles on the next flush
                log.error("coview_flush_failed", titles=len(pending), error=repr(exc))
                for item, produced in pending.items():
                    self.mark(item, produced)
                return 0
            finally:
                self.last_duration = time.monotonic() - started

    async def _write(self, pending: dict[str, int], out: Output, stores: dict[int, PartitionStore]) -> int:
        half_life = COVIEW_CONFIG.half_life_ms
        entries = {}
        for item in pending:
            store = stores.get(title_partition(item))
            entries[item] = store.get(item) if store is not None else None  # None: partition moved away
        # neighbour -> (stored count, landmark): titles of this worker's partitions from their state,
        # the others' from the counts hash the workers write (one HMGET per flush)
        def local(other: str) -> tuple[float, int] | None:
            store = stores.get(title_partition(other))
            found = store.get(other) if store is not None else None
            return (found["c"]["n"], found["c"]["L"]) if found is not None else None

        remote_needed = {other for entry in entries.values() if entry is not None
                         for other in entry["c"]["nb"] if stores.get(title_partition(other)) is None}
        remote = await fetch_counts(self.redis, sorted(remote_needed))
        for other in remote_needed:
            self.remote_used[other] = remote.get(other)

        def stored_count(other: str) -> tuple[float, int] | None:
            found = remote.get(other)
            return found if found is not None else local(other)
        views, counts = [], {}
        for n, (item, entry) in enumerate(entries.items()):
            if n % 20 == 19:
                await asyncio.sleep(0)  # a first metadata list costs ~10 ms: let the other tasks run
            if entry is None:
                continue
            state = entry["c"]
            # "Now" is the title's own latest view: a list is rewritten only when its title changes,
            # and a replayed old log next to live traffic must not decay to nothing.
            now_ms = state["t"]

            def count_of(other: str, now_ms: int = now_ms) -> float:
                found = stored_count(other)
                return decayed(found[0], found[1], now_ms, half_life) if found else 0.0

            total = 0.0  # N is used by lift/llr only; jaccard (the default) does not need it
            field = count_field(state["n"], state["L"])
            if self.counts_written.get(item) != field:
                counts[item] = (state["n"], state["L"])
            coview = top_similar(state, count_of, total, now_ms, half_life, SIMILARITY, exclude=item)
            coview = served_coview(coview, refresher.model, item, MODEL_WEIGHT, SIMILARITY.k)
            support = title_count(state, now_ms, half_life)
            meta = self.metadata_similar(item)
            items, source = blend(coview, meta, support, BLEND_PRIOR, SIMILARITY.k)
            items = arrange(item, items, self.metadata, meta, SIMILARITY.k)  # series first, children's rule
            view = similar_view(item, entry["v"], state["t"], source, support, items)
            signature = written_signature(view)
            last = self.written.get(item)
            if last is not None and last[0] == signature:
                continue
            if last is not None and last[1] >= entry["v"]:
                # rescored without a new update of its own (its neighbours moved on, see ``settle``):
                # a changed list gets a new version, kept in the title's state
                entry["v"] = view["version"] = last[1] + 1
                store = stores.get(title_partition(item))
                if store is not None:
                    store.touch(item)
            views.append(view)
        async with self.redis.pipeline(transaction=False) as pipe:
            queue_views(pipe, views)
            queue_counts(pipe, counts)
            await pipe.execute()
        for item, (n, landmark) in counts.items():
            self.counts_written[item] = count_field(n, landmark)
        wall_ms = time.time() * 1000
        for view in views:
            item = view["item_id"]
            self.written[item] = (written_signature(view), view["version"])
            self.written.move_to_end(item)
            produced = pending.get(item) or 0
            if produced:
                FRESHNESS.observe(max(0.0, (wall_ms - produced) / 1000))
        while len(self.written) > self.max_signatures:
            self.written.popitem(last=False)
        if views and not out.dropped(SIMILAR.name, len(views)):
            for view in views:
                state_t = entries[view["item_id"]]["c"]["t"]
                await out.send(SIMILAR.name, self.codec.encode(SIMILAR.schema, updated_event(view, state_t)),
                               key=view["item_id"].encode())
        if views:
            VIEW_WRITES.labels(view="similar").inc(len(views))
            LISTS.inc(len(views))
        return len(views)


def written_signature(view: dict) -> tuple:
    """What a list is rewritten for: what readers rank by (``list_signature``) and its ``updated_at`` (the
    title's latest view, event time). A list whose items did not move but whose title was viewed again is
    written too, else the stored ``updated_at`` would be the one of whichever flush last changed the items,
    which depends on how the input was batched (a broker outage, a restart) and not on the input."""
    return list_signature(view), view["updated_at"]


flusher = Flusher()
refresher = ModelRefresher(MODEL_CONFIG, MODEL_REFIT_S, now_s=time.monotonic(),
                           log=BasketLog(MODEL_SESSIONS, MODEL_CONFIG.max_basket), min_sessions=MODEL_MIN_SESSIONS)


async def refit_model(stores: dict[int, PartitionStore], state: ModelRefresher | None = None,
                      now_s: float | None = None) -> int:
    """The periodic refit: EASE on the logged sessions in a worker thread (numpy's solve releases the GIL,
    the loop goes on), then every title of this worker's partitions is marked for a re-score so the
    lists pick the new model up (unchanged lists are not rewritten). Returns the titles marked."""
    state = state or refresher
    baskets = state.begin(time.monotonic() if now_s is None else now_s)
    fitted = None
    began = time.monotonic()
    try:
        fitted = await asyncio.to_thread(fit_item_model, baskets, state.config)
    except Exception as exc:  # noqa: BLE001 - the previous model stays in use
        log.error("coview_model_refit_failed", error=repr(exc))
    finally:
        state.done(fitted)
    if fitted is None:
        return 0
    log.info("coview_model_refit", sessions=fitted.sessions, titles=len(fitted),
             seconds=round(time.monotonic() - began, 1))
    return settle(stores)


class TitleProcessor:
    """Engine processor: co-view contributions -> per-title state -> similar lists (``flusher``)."""

    name = TITLES_AGENT
    sources = (CONTRIBUTIONS,)
    # a title's state is its whole neighbour map (KBs): checkpoint less often than the small session
    # states (fewer full rewrites of hot titles; a crash replays at most this much, deduplicated)
    commit_interval_s = settings.coview_titles_commit_s

    def __init__(self) -> None:
        self.last_applied = time.monotonic()
        self.last_check = 0.0
        self.settled = True
        self.refit: asyncio.Task | None = None

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: Output) -> None:
        touched: dict[str, int] = {}  # title -> earliest produced_ms of its updates
        applied = duplicates = 0
        for event in events:
            record = event.value
            origin, produced = str(record["origin"]), record["produced_ms"]
            try:
                for title, updates in unpack_by_title(record, COVIEW_CONFIG).items():
                    entry = apply_to_title(store.get(title), origin, updates)
                    if entry is None:
                        duplicates += len(updates)
                        continue
                    store[title] = entry
                    applied += len(updates)
                    if title not in touched or (produced and produced < touched[title]):
                        touched[title] = produced
            except Exception as exc:  # noqa: BLE001 - a malformed batch is kept, the partition goes on
                await out.failed(event, exc)
        if applied:
            self.last_applied, self.settled = time.monotonic(), False
        if duplicates:
            DUPLICATES.labels(agent=TITLES_AGENT).inc(duplicates)
        APPLIED.inc(applied)
        for title, produced in touched.items():
            flusher.mark(title, produced)

    def assigned(self, partitions: list[int], stores: dict[int, PartitionStore]) -> None:
        """Partitions restored from the changelog: their lists and counts are written again by this owner
        (the previous one may have checkpointed state it never flushed, or dropped it as moved away)."""
        for partition in partitions:
            store = stores.get(partition)
            if store is not None:
                for title, _entry in store.items():
                    flusher.mark(title, 0)
        self.settled = False

    async def tick(self, out: Output, stores: dict[int, PartitionStore]) -> None:
        now = time.monotonic()
        if not flusher.dirty and now - self.last_applied >= SETTLE_S and now - self.last_check >= SETTLE_S:
            self.last_check = now
            try:
                stale = not self.settled or await flusher.inputs_changed()
            except Exception as exc:  # noqa: BLE001 - Redis away: ask again on the next quiet tick
                log.warning("coview_settle_check_failed", error=repr(exc))
                stale = False
            if stale:
                self.settled = True
                settle(stores)
        if MODEL_WEIGHT > 0.0 and refresher.due(now):
            self.refit = asyncio.get_running_loop().create_task(refit_model(stores))  # reference kept
        if flusher.due():
            await flusher.flush(out, stores)


def settle(stores: dict[int, PartitionStore]) -> int:
    """Once the input goes quiet (and again whenever a count or the catalogue it read changes while
    quiet): re-score every list of this worker. A list is scored with its neighbours' counts as they
    were at its flush, and is rewritten only when its own title changes; after a burst some neighbours
    have moved on. This makes every list, once the input is drained, a function of the final counts
    only. Lists whose result did not change are not written (signature check), so this costs CPU once
    per quiet period, not writes."""
    titles = sum(len(store) for store in stores.values())
    if titles > SETTLE_MAX_TITLES:
        return 0
    for store in stores.values():
        for title, _entry in store.items():
            flusher.mark(title, 0)
    return titles


register(SessionProcessor())
register(TitleProcessor())
