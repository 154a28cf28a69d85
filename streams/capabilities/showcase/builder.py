"""The showcase builder: the I/O shell around the pure core (processors/showcase), driven by a timer.

Every worker runs ``ShowcaseBuilder.tick`` about once a second; all shared state is in Redis, so any
number of workers cooperate without owning partitions:
  1. ``CatalogueCache.refresh``: the CatalogueIndex is rebuilt from the Redis catalogue (titles,
     shelves) when it changed and then stayed quiet for ``debounce_s`` (or has been pending for
     ``max_wait_s``), and when the stats (plays from the popular zset, CTR = plays / impressions)
     were re-read and differ. Auto-shelves are refilled when shelf definitions change or the UTC day
     changes (the "nightly" fill); otherwise fills are kept.
  2. After a new index, and every ``variants_every_s``: the editorial variants (default / guest /
     kids x device type x request age step) are rebuilt; a variant is written when its content changed.
  3. Dirty users (their history changed, then ``settle_s`` without news) are popped in batches and
     their (user, device type) views assembled and written under the stability rule: a stored personal
     view is replaced at most once a day unless ops force it; a build that comes out as the pumpkin
     does not replace a personal view (``should_replace``). Builds run in a thread so the event loop
     (the agents of the same worker) keeps going.
Nothing is built while the catalogue has no shelf definitions: dirty users wait in the queue.

Determinism (two runs on the same input give the same views, whatever the timing, faults or restarts):
  * The build time ``now`` is event time, never the wall clock: the latest event time of the inputs the
    builder saw (``EventClock``: the max ``updated_at`` of the catalogue records and of every user
    history read, kept in Redis as a max so the order of the reads does not matter). Licence windows,
    "new" shelves, the nightly refill day, the once-a-day stability rule and ``built_at`` all follow it.
  * Builds in the middle of a stream see partial inputs (stats, similar lists and histories are read
    as they are at that moment) and the stability rule may keep such a build for a day. So when the
    inputs have been quiet for ``settled_s`` (nothing queued, and the same catalogue version, stats,
    event clock, count of new-input builds and similar lists over that time) and differ from the
    inputs of the last settled pass, ONE worker runs a **settled pass** (``SHOWCASE_SETTLED_KEY``): it
    bumps a generation, which makes every builder drop its caches (a fresh index with stats and
    auto-shelf fills read now, similar lists read again), and queues every user forced. Each view is
    then rebuilt from the settled inputs; an unchanged view whose ``built_at`` differs from the
    settled clock is restamped. The views at rest are thus a function of the inputs alone; while
    input keeps flowing, the once-a-day rule holds as before.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence

from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from infra.logs import get_logger
from infra.settings import Settings, load
from processors.history import user_history, viewer_devices
from processors.showcase import (
    Alarm,
    CatalogueIndex,
    Showcase,
    ShowcaseInputError,
    Stats,
    Viewer,
    assemble,
    build_pumpkin,
    content_hash,
    daily_checks,
    should_replace,
    view_meta,
)
from processors.showcase.assemble import ModelScores, model_candidates
from processors.showcase.checks import check_daily_novelty
from processors.showcase.experiments import ab_params_key, loads_params
from processors.showcase.config import DEFAULT_POLICY, DEVICE_TYPES, ShowcasePolicy
from processors.showcase.stability import ReplaceDecision
from sinks.catalogue_views import catalogue_version, load_shelves, load_titles
from sinks.redis_views import (
    IMPRESSIONS_KEY,
    POPULAR_KEY,
    SHOWCASE_DIRTY_KEY,
    SHOWCASE_USERS_KEY,
    history_key,
    similar_key,
    user_view_key,
    variant_age_view_key,
)
from sinks.showcase_views import (
    AGE_STEPS,
    SHOWCASE_SETTLED_KEY,
    VARIANTS,
    ShowcaseStore,
    ViewWrite,
    iso_ms,
    read_metas,
    request_rebuild,
    view_write,
)

log = get_logger("vitrina.showcase")

ALARMS = PromCounter("vitrina_showcase_alarms_total", "Showcase alarms (daily checks and rule limits)", ["code", "severity"])
DECISIONS = PromCounter("vitrina_showcase_decisions_total", "Showcase build decisions per view", ["kind", "decision"])
INDEX_BUILDS = PromCounter("vitrina_showcase_index_builds_total", "CatalogueIndex rebuilds", ["reason"])
BUILD_SECONDS = Histogram("vitrina_showcase_build_seconds", "Time to assemble one batch of user showcases",
                          buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def utc_now() -> datetime:
    """Wall clock: only for queue bookkeeping and ``decided_at`` (when a decision was taken), never for
    what a view contains."""
    return datetime.now(timezone.utc)


def event_ms(value: Any) -> int:
    """An ``updated_at`` of a Redis record (ISO-8601 text, epoch ms or a datetime) as epoch ms; 0 if absent."""
    if value is None or value == "":
        return 0
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)):
        return int(value)
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return iso_ms(moment)


def event_time(*candidates_ms: int) -> datetime:
    """The build time: the latest of the event times given. With no event time at all (an empty
    catalogue, no history) nothing personal can be built yet; the wall clock stands in."""
    latest = max((c for c in candidates_ms if c), default=0)
    if not latest:
        return utc_now()
    return datetime.fromtimestamp(latest / 1000, timezone.utc)


def catalogue_as_of(titles: Iterable[Any], shelves: Iterable[Any]) -> int:
    """Latest ``updated_at`` (ms) among catalogue title and shelf records (dicts or parsed records)."""
    latest = 0
    for record in (*titles, *shelves):
        value = record.get("updated_at") if isinstance(record, dict) else getattr(record, "updated_at", None)
        latest = max(latest, event_ms(value))
    return latest


@dataclass
class TickReport:
    written: list[ViewWrite] = field(default_factory=list)
    decisions: Counter = field(default_factory=Counter)
    alarms: list[tuple[str, Alarm]] = field(default_factory=list)  # (view key, alarm)
    index_rebuilt: str | None = None
    users: int = 0

    def merge(self, other: "TickReport") -> None:
        self.written += other.written
        self.decisions.update(other.decisions)
        self.alarms += other.alarms
        self.users += other.users


# -- inputs that change the index ------------------------------------------------------------------

async def load_stats(redis: Any, min_impressions: int = 30) -> Stats:
    """popularity = plays per title (the play counter's zset); CTR = plays / impressions on ranked surfaces."""
    plays = {item: float(score) for item, score in await redis.zrange(POPULAR_KEY, 0, -1, withscores=True)}
    impressions = await redis.hgetall(IMPRESSIONS_KEY)
    ctr = {}
    for item, shown in impressions.items():
        shown = int(shown)
        if shown >= min_impressions:
            ctr[item] = round(min(1.0, plays.get(item, 0.0) / shown), 4)
    return Stats(popularity=plays, ctr=ctr)


class CatalogueCache:
    """The current CatalogueIndex, rebuilt from Redis only when its inputs changed (debounced)."""

    def __init__(self, redis: Any, policy: ShowcasePolicy = DEFAULT_POLICY, *, debounce_s: float = 1.0,
                 max_wait_s: float = 5.0, stats_every_s: float = 60.0) -> None:
        self.redis = redis
        self.policy = policy
        self.debounce_s = debounce_s
        self.max_wait_s = max_wait_s
        self.stats_every_s = stats_every_s
        self.index: CatalogueIndex | None = None
        self.built_version: tuple[int, int] | None = None
        self._seen_version: tuple[int, int] | None = None
        self._seen_at = 0.0
        self._pending_since: float | None = None
        self._stats: Stats | None = None
        self._stats_at = float("-inf")
        self._fill_day: Any = None
        self._full = False
        self.fixed_now: datetime | None = None  # tests/benches: build at this time instead of the event clock
        self.as_of_ms = 0  # latest event time of the catalogue records the index was built from

    def invalidate(self) -> None:
        """The next refresh rebuilds the index from scratch: titles, shelves and stats read again,
        auto-shelves refilled (the settled pass)."""
        self._full = True

    @property
    def ready(self) -> bool:
        return self.index is not None and bool(self.index.shelf_defs)

    async def refresh(self, clock_ms: int) -> str | None:
        """Rebuild when due; returns why ("settled", "catalogue", "stats", "nightly") or None when the
        index was kept. ``clock_ms``: the builder's event clock; the index is built at
        ``event_time(clock_ms, catalogue as_of)``."""
        mono = time.monotonic()
        version = await catalogue_version(self.redis)
        reason = None
        if self._full:
            reason = "settled"
        elif version != self.built_version:
            if version != self._seen_version:
                self._seen_version, self._seen_at = version, mono
                self._pending_since = self._pending_since if self._pending_since is not None else mono
            if mono - self._seen_at >= self.debounce_s or mono - (self._pending_since or mono) >= self.max_wait_s:
                reason = "catalogue"
        if reason is None and mono - self._stats_at >= self.stats_every_s:
            stats = await load_stats(self.redis)
            self._stats_at = mono
            if stats != self._stats and self.index is not None:
                reason = "stats"
            self._stats = stats
        if reason is None and self.index is not None and self.now(clock_ms).date() != self._fill_day:
            reason = "nightly"
        if reason is None:
            return None
        if reason in ("catalogue", "settled"):
            titles: list[Any] = await load_titles(self.redis)
            shelves: list[Any] = await load_shelves(self.redis)
            self.as_of_ms = catalogue_as_of(titles, shelves)
            if self._stats is None or reason == "settled":
                self._stats, self._stats_at = await load_stats(self.redis), mono
        else:  # same catalogue: reuse the parsed records
            titles, shelves = list(self.index.titles.values()), list(self.index.shelf_defs)
        now = self.now(clock_ms)
        refill = self.index is None or now.date() != self._fill_day or reason == "settled"
        if reason == "catalogue":
            refill = refill or self.built_version is None or version[1] != self.built_version[1]  # shelves changed
        fills = None if refill or self.index is None else self.index.auto_fills
        self.index = await asyncio.to_thread(
            CatalogueIndex.build, titles, shelves, self._stats, now=now, policy=self.policy, auto_fills=fills)
        if refill:
            self._fill_day = now.date()
        if reason in ("catalogue", "settled"):
            self.built_version, self._pending_since, self._full = version, None, False
        INDEX_BUILDS.labels(reason=reason).inc()
        log.info("showcase_index_built", reason=reason, titles=len(self.index.titles), shelves=len(self.index.shelf_defs),
                 rejected=len(self.index.rejected), refilled=refill)
        return reason

    def now(self, clock_ms: int) -> datetime:
        """The build time for the event clock ``clock_ms`` and the catalogue the index was built from."""
        return self.fixed_now or event_time(clock_ms, self.as_of_ms)


class SimilarCache:
    """Similar lists read from the co-view views (``vitrina:similar:{item}``), kept ``ttl_s`` seconds."""

    def __init__(self, redis: Any, ttl_s: float = 60.0, max_items: int = 100_000) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.max_items = max_items
        self._lists: dict[str, tuple[float, list[tuple[str, float]]]] = {}

    def clear(self) -> None:
        self._lists.clear()

    async def lists(self, items: Iterable[str]) -> dict[str, list[tuple[str, float]]]:
        now = time.monotonic()
        wanted = list(dict.fromkeys(items))
        missing = [i for i in wanted if i not in self._lists or now - self._lists[i][0] > self.ttl_s]
        if missing:
            if len(self._lists) + len(missing) > self.max_items:
                self._lists.clear()
            for start in range(0, len(missing), 2000):
                chunk = missing[start:start + 2000]
                for item, raw in zip(chunk, await self.redis.mget([similar_key(i) for i in chunk])):
                    self._lists[item] = (now, parse_similar(raw))
        return {i: self._lists[i][1] for i in wanted if self._lists.get(i, (0, None))[1]}


def parse_similar(raw: str | None) -> list[tuple[str, float]]:
    if not raw:
        return []
    try:
        found = json.loads(raw)
        return [(str(s["item_id"]), float(s["score"])) for s in found.get("items", ())]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def _parse_json(raw: str | None) -> dict | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# -- the builder -----------------------------------------------------------------------------------

def model_scores_for(models: Any, index: CatalogueIndex, policy: ShowcasePolicy, user_id: str, device_type: str,
                     recent: tuple[str, ...], similar: dict, now: datetime) -> ModelScores | None:
    """The serving model's scores for one user's ML shelves: a lazy ``ModelScores`` of the user's arm
    (each shelf scores, with LiteRT in the build thread, the candidates it can still pick: the "for you"
    pool, the first titles of the "watch also" anchor's list); None without a serving model or a
    recent title (today's order then)."""
    if models is None or not models.arms or not recent:
        return None
    return models.scores(f"user:{user_id}", user_id, device_type, recent, _durations(index), now)


def model_scores_batch(models: Any, index: CatalogueIndex, users: Sequence[tuple[Viewer, Any, dict | None]],
                       similar: dict, now: datetime) -> list[ModelScores | None]:
    """``model_scores_for`` for a batch of users (``users``: viewer, history, A/B params), as the build
    thread runs it before assembling them: the candidates each user's ML shelves will likely ask for
    (``model_candidates``) are scored per serving version in a few large LiteRT calls and handed over
    prefetched; a shelf asking for more scores the rest on demand. The showcases equal those built with
    ``model_scores_for`` one user at a time (tests/unit/showcase/test_showcase_batch_scoring.py)."""
    if models is None or not models.arms:
        return [None] * len(users)
    jobs, at, memos = [], [], []
    for k, (viewer, history, params) in enumerate(users):
        recent = history.recent if history is not None else ()
        if not recent or viewer.user_id is None:
            continue
        memo: dict = {}
        try:
            likely = model_candidates(index, viewer, history, similar=similar, params=params, prepared=memo)
        except Exception as err:  # noqa: BLE001 - only a guess: the user's shelves then score on demand
            log.warning("showcase_model_candidates_failed", user=viewer.user_id, error=repr(err))
            likely, memo = [], {}
        jobs.append((f"user:{viewer.user_id}", viewer.user_id, viewer.device_type, recent, likely))
        at.append(k)
        memos.append(memo)
    out: list[ModelScores | None] = [None] * len(users)
    for k, scores in zip(at, models.batch_scores(jobs, _durations(index), now, prepared=memos)):
        out[k] = scores
    return out


_DURATIONS: dict[int, tuple[CatalogueIndex, dict[str, int]]] = {}


def _durations(index: CatalogueIndex) -> dict[str, int]:
    """item -> duration (ms) of an index, computed once per index (the model's duration feature)."""
    found = _DURATIONS.get(id(index))
    if found is None or found[0] is not index:
        _DURATIONS.clear()
        found = _DURATIONS[id(index)] = (index, {i: t.duration_ms for i, t in index.titles.items()})
    return found[1]


@dataclass
class _Plan:
    user_id: str
    device_type: str
    app_version: str | None
    history: Any
    forced: bool
    view_key: str
    previous: dict | None
    params: dict | None = None


class ShowcaseBuilder:
    def __init__(self, redis: Any, policy: ShowcasePolicy = DEFAULT_POLICY, *, settle_s: float = 2.0,
                 batch_size: int = 200, tick_budget_s: float = 0.8, variants_every_s: float = 600.0,
                 sweep_every_s: float = 3600.0, catalogue: CatalogueCache | None = None,
                 settled_s: float = 30.0, models: Any = "auto", settings: Settings | None = None) -> None:
        self.redis = redis
        if models == "auto":  # the serving ranking versions, unless VITRINA_SHOWCASE_RANKING turns them off
            from streams.capabilities.ranking.serving import ServingModels, serving_enabled
            settings = settings or load()
            models = (ServingModels(redis, settings.ranking_model_name, settings=settings)
                      if serving_enabled(settings) else None)
        self.models = models  # ServingModels: the ranking versions re-ranking the ML shelves; None = off
        self.policy = policy
        self.settle_s = settle_s
        self.batch_size = batch_size
        self.tick_budget_s = tick_budget_s
        self.variants_every_s = variants_every_s
        self.sweep_every_s = sweep_every_s
        self.catalogue = catalogue or CatalogueCache(redis, policy)
        self.similar = SimilarCache(redis)
        self.store = ShowcaseStore(redis)
        self.settled_s = settled_s  # 0 = no settled pass (views at rest then depend on build timing)
        self._variants_at = float("-inf")
        self._swept_at = time.monotonic()
        self._generation: str | None = None  # the settled generation our caches were built for
        self._quiet: tuple | None = None     # (fingerprint, since) while the inputs stay the same
        self._settle_checked_at = float("-inf")

    async def _sync_generation(self) -> bool:
        """Drop the caches when a settled pass started since we last looked (ours or another worker's)."""
        generation = await self.redis.hget(SHOWCASE_SETTLED_KEY, "generation")
        if generation == self._generation:
            return False
        self._generation = generation
        self.catalogue.invalidate()
        self.similar.clear()
        return True

    async def tick(self, now: datetime | None = None) -> TickReport:
        """One round; ``now`` overrides the event clock (tests of the pure rules)."""
        report = TickReport()
        override = self.catalogue.fixed_now = now
        await self._sync_generation()
        clock_ms = iso_ms(override) if override is not None else await self.store.clock_ms()
        report.index_rebuilt = await self.catalogue.refresh(clock_ms)
        if not self.catalogue.ready:
            return report
        mono = time.monotonic()
        if report.index_rebuilt or mono - self._variants_at >= self.variants_every_s:
            report.merge(await self.build_variants(self.catalogue.now(clock_ms),
                                                   restamp=report.index_rebuilt == "settled"))
            self._variants_at = mono
        if report.index_rebuilt == "catalogue" or mono - self._swept_at >= self.sweep_every_s:
            # users whose view is a fallback (or a day old) get rebuilt; fresh ones are skipped cheaply
            await self.mark_all_users()
            self._swept_at = mono
        deadline = time.monotonic() + self.tick_budget_s
        while time.monotonic() < deadline:
            quiet_before = iso_ms(utc_now()) - int(self.settle_s * 1000)
            users = await self.store.pop_dirty(self.batch_size, quiet_before)
            if not users:
                break
            if await self._sync_generation():  # a settled pass began: build these from fresh inputs
                await self.catalogue.refresh(clock_ms)
                report.merge(await self.build_variants(self.catalogue.now(clock_ms), restamp=True))
            report.merge(await self.build_users(users, override))
        if not report.written and not report.users:
            await self._maybe_settle()
        self._log(report)
        return report

    # -- the settled pass --------------------------------------------------------------------------

    async def fingerprint(self) -> str:
        """Everything a view is built from, as one digest: catalogue version, stats, event clock, the
        count of builds asked by new input, and every title's similar list."""
        import hashlib

        digest = hashlib.sha256()
        stats = await load_stats(self.redis)
        version = await catalogue_version(self.redis)
        changes = await self.redis.hget(SHOWCASE_SETTLED_KEY, "changes")
        arms = list(await self.models.refresh()) if self.models is not None else []
        digest.update(json.dumps([version, await self.store.clock_ms(), changes, sorted(stats.popularity.items()),
                                  sorted(stats.ctr.items()), arms]).encode())
        titles = sorted(self.catalogue.index.titles) if self.catalogue.index is not None else []
        for start in range(0, len(titles), 2000):
            chunk = titles[start:start + 2000]
            for raw in await self.redis.mget([similar_key(i) for i in chunk]):
                digest.update((raw or "").encode())
                digest.update(b"\x00")
        return digest.hexdigest()

    async def _maybe_settle(self) -> bool:
        """Start a settled pass when the inputs stayed the same for ``settled_s`` and differ from those of
        the last pass. Returns whether this worker started one."""
        mono = time.monotonic()
        if self.settled_s <= 0 or mono - self._settle_checked_at < min(1.0, self.settled_s / 2):
            return False
        self._settle_checked_at = mono
        if await self.redis.zcard(SHOWCASE_DIRTY_KEY):
            self._quiet = None
            return False
        current = await self.fingerprint()
        if current == await self.redis.hget(SHOWCASE_SETTLED_KEY, "fingerprint"):
            self._quiet = None
            return False
        if self._quiet is None or self._quiet[0] != current:
            self._quiet = (current, mono)
            return False
        if mono - self._quiet[1] < self.settled_s:
            return False
        lock = SHOWCASE_SETTLED_KEY + ":lock"
        if not await self.redis.set(lock, "1", nx=True, ex=120):
            return False
        try:
            # generation first, users second: whoever pops a user of this pass sees the new generation
            generation = await self.redis.hincrby(SHOWCASE_SETTLED_KEY, "generation", 1)
            marked = await self.mark_all_users(force=True)
            await self.redis.hset(SHOWCASE_SETTLED_KEY, "fingerprint", current)
        finally:
            await self.redis.delete(lock)
        self._quiet = None
        INDEX_BUILDS.labels(reason="settled_pass").inc()
        log.info("showcase_settled_pass", generation=generation, users=marked)
        return True

    async def mark_all_users(self, force: bool = False) -> int:
        marked = 0
        batch: list[str] = []
        async for user in self.redis.sscan_iter(SHOWCASE_USERS_KEY, count=1000):
            batch.append(user)
            if len(batch) >= 1000:
                marked += await self._mark(batch, force)
                batch = []
        return marked + await self._mark(batch, force)

    async def _mark(self, users: list[str], force: bool) -> int:
        if force:
            return await request_rebuild(self.redis, users, force=True)
        if users:
            await self.redis.zadd(SHOWCASE_DIRTY_KEY, {u: iso_ms(utc_now()) for u in users})
        return len(users)

    # -- users -------------------------------------------------------------------------------------

    async def build_users(self, users: list[tuple[str, bool]], now: datetime | None = None) -> TickReport:
        """Build these (user, forced) views; ``now`` defaults to the event clock once these users'
        histories have moved it."""
        report = TickReport(users=len(users))
        index = self.catalogue.index
        raws = await self.redis.mget([history_key(u) for u, _ in users])
        latest = max((event_ms((_parse_json(raw) or {}).get("updated_at")) for raw in raws), default=0)
        clock_ms = await self.store.advance_clock(latest) if latest else await self.store.clock_ms()
        if now is None:
            now = self.catalogue.now(clock_ms)
        plans: list[_Plan] = []
        for (user, forced), raw in zip(users, raws):
            view = _parse_json(raw)
            if view is None:
                report.decisions["no_history"] += 1
                continue
            history = user_history(view)
            for device, app_version in viewer_devices(view).items():
                if device in DEVICE_TYPES:
                    plans.append(_Plan(user, device, app_version, history, forced, user_view_key(user, device), None))
        metas = await read_metas(self.redis, [p.view_key for p in plans])
        to_build: list[_Plan] = []
        kept: list[tuple[str, str]] = []
        for plan in plans:
            plan.previous = metas.get(plan.view_key)
            early = should_replace(plan.previous, now, plan.forced, min_interval=self.policy.min_replace_interval)
            if early:
                to_build.append(plan)
            else:  # kept whatever the new content would be: no need to assemble it
                kept.append((plan.view_key, early.reason))
        seeds: list[str] = []
        for plan in to_build:
            for item in plan.history.recent[: self.policy.for_you.seeds]:
                seeds.append(item)
                parent = index.canonical.get(item)
                if parent and parent != item:
                    seeds.append(parent)
        similar = await self.similar.lists(seeds)
        if self.models is not None:
            await self.models.refresh()
        if to_build:
            users_params = await self.redis.mget([ab_params_key(p.user_id) for p in to_build])
            for plan, raw in zip(to_build, users_params):
                plan.params = loads_params(raw) or None
        started = time.perf_counter()
        built, more_kept, alarms = await asyncio.to_thread(self._assemble_all, index, to_build, similar, now)
        BUILD_SECONDS.observe(time.perf_counter() - started)
        kept += more_kept
        report.alarms += alarms
        applied = await self.store.write([write for write, _ in built])
        raced: list[_Plan] = []
        for (write, plan), ok in zip(built, applied):
            if not ok:
                raced.append(plan)
                continue
            report.written.append(write)
            report.decisions[write.decision] += 1
            DECISIONS.labels(kind="user", decision=write.decision).inc()
        if raced:  # another worker stored a newer version meanwhile: build again at the next tick
            await request_rebuild(self.redis, [p.user_id for p in raced if not p.forced], force=False)
            await request_rebuild(self.redis, [p.user_id for p in raced if p.forced], force=True)
            report.decisions["raced"] += len(raced)
        await self.store.record_decisions(kept, iso_ms(utc_now()))  # decided_at: wall clock, for ops
        for _, decision in kept:
            report.decisions[decision] += 1
            DECISIONS.labels(kind="user", decision=decision).inc()
        return report

    def _assemble_all(self, index: CatalogueIndex, plans: list[_Plan], similar: dict, now: datetime
                      ) -> tuple[list[tuple[ViewWrite, _Plan]], list[tuple[str, str]], list[tuple[str, Alarm]]]:
        writes: list[tuple[ViewWrite, _Plan]] = []
        kept: list[tuple[str, str]] = []
        alarms: list[tuple[str, Alarm]] = []
        decided_ms = iso_ms(utc_now())
        viewers = []
        for plan in plans:
            try:
                viewers.append(Viewer(user_id=plan.user_id, device_type=plan.device_type, now=now,
                                      app_version=plan.app_version))
            except ShowcaseInputError:  # an app version we cannot parse: build for an unknown client
                plan.app_version = None
                viewers.append(Viewer(user_id=plan.user_id, device_type=plan.device_type, now=now))
        models = self._model_scores(index, plans, viewers, similar, now)
        for plan, viewer, model in zip(plans, viewers, models):
            try:
                showcase = assemble(index, viewer, plan.history, similar=similar, model=model, params=plan.params)
            except Exception as err:
                alarms.append((plan.view_key, Alarm("build_failed", f"{type(err).__name__}: {err}"[:300], "critical")))
                kept.append((plan.view_key, "build_failed"))
                continue
            meta = view_meta(showcase)
            decision = should_replace(plan.previous, now, plan.forced, new_meta=meta,
                                      min_interval=self.policy.min_replace_interval)
            alarms += [(plan.view_key, a) for a in showcase.alarms]
            if model is not None and model.failed:
                alarms.append((plan.view_key, Alarm("model_scoring_failed", model.failed[0], "warning")))
            if not decision and decision.reason == "unchanged" and plan.forced and _stamp_differs(plan.previous, now):
                decision = ReplaceDecision(True, "restamped")  # same content, confirmed at the settled clock
            if not decision:
                kept.append((plan.view_key, decision.reason))
                if decision.reason == "unchanged" and _older_than(plan.previous, now, self.policy.min_replace_interval):
                    stale = check_daily_novelty(plan.previous["content_hash"], meta["content_hash"], showcase)
                    if stale is not None:
                        alarms.append((plan.view_key, stale))
                continue
            alarms += [(plan.view_key, a) for a in daily_checks(showcase, index, self.policy)]
            version = (plan.previous or {}).get("version", 0) + 1
            writes.append((view_write(showcase, plan.view_key, index, plan.app_version, version, decision.reason,
                                      decided_ms, user_id=plan.user_id, device_type=plan.device_type), plan))
        return writes, kept, alarms

    def _model_scores(self, index: CatalogueIndex, plans: list[_Plan], viewers: list[Viewer], similar: dict,
                      now: datetime) -> list[ModelScores | None]:
        try:
            return model_scores_batch(self.models, index, [(v, p.history, p.params) for p, v in zip(plans, viewers)],
                                      similar, now)
        except Exception as err:  # noqa: BLE001 - a model failure must not cost the users their showcases
            log.warning("showcase_model_scoring_failed", users=len(plans), error=repr(err))
            return [None] * len(plans)

    # -- variants ----------------------------------------------------------------------------------

    async def build_variants(self, now: datetime, *, restamp: bool = False) -> TickReport:
        """The editorial variants at ``now``; ``restamp`` (settled pass): an unchanged variant whose
        ``built_at`` differs from ``now`` is written again with it."""
        report = TickReport()
        index = self.catalogue.index
        built = await asyncio.to_thread(self._variant_showcases, index, now)
        metas = await read_metas(self.redis, [key for key, _, _ in built])
        writes = []
        decided_ms = iso_ms(utc_now())
        for key, device, showcase in built:
            previous = metas.get(key)
            report.alarms += [(key, a) for a in showcase.alarms]
            decision = "first_build" if previous is None else "catalogue_changed"
            if previous is not None and previous.get("content_hash") == content_hash(showcase):
                if not (restamp and _stamp_differs(previous, now)):
                    report.decisions["variant_unchanged"] += 1
                    continue
                decision = "restamped"
            version = (previous or {}).get("version", 0) + 1
            writes.append(view_write(showcase, key, index, None, version, decision, decided_ms, user_id=None,
                                     device_type=device))
        for write, ok in zip(writes, await self.store.write(writes)):
            report.decisions["variant_" + write.decision if ok else "variant_raced"] += 1
            if ok:
                report.written.append(write)
                DECISIONS.labels(kind="variant", decision=write.decision).inc()
        return report

    def _variant_showcases(self, index: CatalogueIndex, now: datetime) -> list[tuple[str, str, Showcase]]:
        out = []
        for variant, core_variant in VARIANTS.items():
            for device in DEVICE_TYPES:
                for age in (None, *AGE_STEPS):
                    showcase = build_pumpkin(index, device_type=device, variant=core_variant, now=now, age_limit=age)
                    out.append((variant_age_view_key(variant, device, age), device, showcase))
        return out

    # -- reporting ---------------------------------------------------------------------------------

    def _log(self, report: TickReport) -> None:
        by_code: dict[tuple[str, str], list[tuple[str, Alarm]]] = defaultdict(list)
        for key, alarm in report.alarms:
            ALARMS.labels(code=alarm.code, severity=alarm.severity).inc()
            by_code[(alarm.code, alarm.severity)].append((key, alarm))
        for (code, severity), found in by_code.items():
            key, first = found[0]
            emit = log.error if severity == "critical" else log.warning
            emit("showcase_alarm", code=code, severity=severity, count=len(found), example_view=key,
                 message=first.message)
        if report.written or report.users:
            log.info("showcase_tick", users=report.users, written=len(report.written),
                     decisions=dict(report.decisions), index=report.index_rebuilt)


def _stamp_differs(previous: dict | None, now: datetime) -> bool:
    """Whether a stored view's ``built_at`` is not ``now`` (so a settled pass restamps it)."""
    try:
        return datetime.fromisoformat(previous["built_at"]) != now  # type: ignore[index]
    except (TypeError, ValueError, KeyError):
        return True


def _older_than(previous: dict | None, now: datetime, interval: timedelta) -> bool:
    if not previous or not previous.get("built_at"):
        return False
    try:
        return now - datetime.fromisoformat(previous["built_at"]) >= interval
    except (TypeError, ValueError):
        return False
