"""Showcase views in Redis: the stored JSON, its meta hash, atomic versioned writes, the read script,
the dirty-user queue, and the per-request restriction of a stored view.

A view is one JSON string (``vitrina:showcase:{view_key}``) next to a small meta hash
(``vitrina:showcase-meta:{view_key}``). Both are written by one Lua script, so a reader never sees
half a page nor a page with another page's meta, and the script refuses a version that is not above
the stored one: versions are monotonic per view key even when two workers race.

Stored JSON = ``processors.showcase.to_view`` plus what the read API needs to restrict it per
request without the catalogue: ``view_key``, ``app_version`` (the client version it was built for),
per shelf ``ages`` (age rating of each item, parallel to ``items``) and, for version-targeted
shelves, ``min_app_version`` / ``max_app_version``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable, Mapping

from processors.counters import IMPRESSION_BOUNDS, OffsetBounds
from processors.showcase import CatalogueIndex, Showcase, to_view
from processors.showcase.config import DEFAULT_POLICY, ShowcasePolicy
from processors.showcase.rules import effective_age_limit, min_items
from processors.showcase.version import VersionKey, parse_version, version_in_range
from processors.showcase.view import VIEW_SCHEMA
from sinks.redis_views import (
    IMPRESSIONS_HWM_KEY,
    IMPRESSIONS_KEY,
    PREFIX,
    SHOWCASE_DIRTY_KEY,
    SHOWCASE_FORCE_KEY,
    SHOWCASE_USERS_KEY,
    showcase_key,
    showcase_meta_key,
)

# The builder's event clock: the latest event time (ms) of the user histories it has read (a max, so
# the same inputs give the same clock whatever the order of the reads); see streams/capabilities/showcase/builder.py.
SHOWCASE_CLOCK_KEY = f"{PREFIX}showcase-clock"
# The builder's settled-pass bookkeeping (hash): ``changes`` counts user builds requested by new input,
# ``fingerprint`` is the inputs of the last settled pass, ``generation`` bumps with every pass.
SHOWCASE_SETTLED_KEY = f"{PREFIX}showcase-settled"

AGE_STEPS = (0, 6, 12, 16)  # request age limits with a prebuilt variant (18+ = no limit)
VARIANTS = {"default": "adult", "guest": "guest", "kids": "kids"}  # view variant -> core pumpkin variant

WRITE_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if tonumber(ARGV[2]) <= current then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'version', ARGV[2], 'content_hash', ARGV[3], 'built_at', ARGV[4],
           'is_fallback', ARGV[5], 'schema', ARGV[6], 'decision', ARGV[7], 'decided_at', ARGV[8],
           'app_version', ARGV[9])
return 1
"""

# KEYS = view1, meta1, view2, meta2, ...: the first stored view as ONE string
# "<position 1-based>|<version>|<is_fallback 0/1>|<json>" (a single bulk reply parses fastest), or false.
READ_SCRIPT = """
for i = 1, #KEYS, 2 do
  local body = redis.call('GET', KEYS[i])
  if body then
    local meta = redis.call('HMGET', KEYS[i + 1], 'version', 'is_fallback')
    return ((i + 1) / 2) .. '|' .. (meta[1] or '0') .. '|' .. (meta[2] or '0') .. '|' .. body
  end
end
return false
"""

CLOCK_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) return tonumber(ARGV[1]) end
return current
"""

POP_DIRTY_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('SREM', KEYS[2], id)
end
return out
"""


@dataclass(frozen=True)
class ViewWrite:
    view_key: str
    body: str
    version: int
    content_hash: str
    built_at: str
    is_fallback: bool
    decision: str
    decided_at_ms: int
    app_version: str | None
    shelves: int
    items: int
    user_id: str | None = None  # None for the editorial variants
    device_type: str = ""


@dataclass(frozen=True)
class StoredView:
    position: int  # which of the requested keys was found (0-based)
    body: str
    version: int
    is_fallback: bool


# -- the stored JSON -------------------------------------------------------------------------------

def view_document(showcase: Showcase, view_key: str, index: CatalogueIndex, app_version: str | None) -> dict:
    view = to_view(showcase)
    view["view_key"] = view_key
    view["app_version"] = app_version
    titles, defs = index.titles, index.defs_by_id
    for shelf in view["shelves"]:
        shelf["ages"] = [titles[i].age_rating if i in titles else 0 for i in shelf["items"]]
        for link in shelf["links"]:
            if link["kind"] == "TITLE":
                target = titles.get(link["target"])
                link["age_rating"] = target.age_rating if target is not None else 0
        definition = defs.get(shelf["shelf_id"])
        if definition is not None and (definition.min_app_version or definition.max_app_version):
            shelf["min_app_version"] = definition.min_app_version
            shelf["max_app_version"] = definition.max_app_version
    return view


def dumps(document: Mapping[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def view_write(showcase: Showcase, view_key: str, index: CatalogueIndex, app_version: str | None, version: int,
               decision: str, now_ms: int, *, user_id: str | None = None, device_type: str | None = None) -> ViewWrite:
    stamped = replace(showcase, version=version)
    document = view_document(stamped, view_key, index, app_version)
    meta = document["meta"]
    return ViewWrite(view_key, dumps(document), version, meta["content_hash"], meta["built_at"], stamped.is_fallback,
                     decision, now_ms, app_version, len(stamped.shelves), sum(len(s.items) for s in stamped.shelves),
                     user_id, device_type or showcase.device_type)


def has_version_targeting(body: str) -> bool:
    """Whether a stored view has version-targeted shelves (checked on the text, without decoding it)."""
    return '"min_app_version"' in body


# -- per-request restriction -----------------------------------------------------------------------

def restrict_view(view: dict, age_limit: int | None, app_version: VersionKey | None,
                  policy: ShowcasePolicy = DEFAULT_POLICY) -> dict | None:
    """The stored view cut down for a request: titles above the age limit removed, shelves not targeted
    to the client version removed, shelves that fall under their minimum dropped. None when fewer than
    the showcase minimum remain (the caller serves the editorial variant instead)."""
    limit = effective_age_limit(age_limit)
    kept = []
    for shelf in view.get("shelves", ()):
        if app_version is not None and ("min_app_version" in shelf or "max_app_version" in shelf):
            low = parse_version(shelf["min_app_version"]) if shelf.get("min_app_version") else None
            high = parse_version(shelf["max_app_version"]) if shelf.get("max_app_version") else None
            if not version_in_range(app_version, low, high):
                continue
        if limit is not None:
            ages = shelf.get("ages") or [0] * len(shelf.get("items", ()))
            pairs = [(i, a) for i, a in zip(shelf["items"], ages) if a <= limit]
            links = [l for l in shelf.get("links", ()) if l.get("age_rating", 0) <= limit]
            shelf = {**shelf, "items": [i for i, _ in pairs], "ages": [a for _, a in pairs], "links": links}
            count = len(links) if shelf["kind"] == "SUPER_SHELF" else len(shelf["items"])
            if count < min_items(shelf["kind"], policy):
                continue
        kept.append(shelf)
    if len(kept) < policy.min_shelves:
        return None
    return {**view, "shelves": kept}


# -- meta ------------------------------------------------------------------------------------------

def view_meta_of(fields: Mapping[str, str] | None) -> dict | None:
    """The meta hash as the ``view_meta`` dict ``should_replace`` reads (None when nothing is stored)."""
    if not fields or "version" not in fields:
        return None
    try:
        schema = int(fields.get("schema") or 0)
    except ValueError:
        schema = 0
    return {"schema": schema, "version": int(fields["version"]), "built_at": fields.get("built_at"),
            "content_hash": fields.get("content_hash"), "is_fallback": fields.get("is_fallback") == "1"}


async def read_metas(redis: Any, view_keys: Iterable[str]) -> dict[str, dict | None]:
    keys = list(view_keys)
    if not keys:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(showcase_meta_key(key))
        found = await pipe.execute()
    return {key: view_meta_of(fields) for key, fields in zip(keys, found)}


# -- writes ----------------------------------------------------------------------------------------

class ShowcaseStore:
    """Redis scripts bound to one client."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._write = redis.register_script(WRITE_SCRIPT)
        self._read = redis.register_script(READ_SCRIPT)
        self._pop = redis.register_script(POP_DIRTY_SCRIPT)
        self._clock = redis.register_script(CLOCK_SCRIPT)

    async def advance_clock(self, event_ms: int) -> int:
        """Move the event clock up to ``event_ms`` (never back); returns the clock."""
        return int(await self._clock(keys=[SHOWCASE_CLOCK_KEY], args=[int(event_ms)]))

    async def clock_ms(self) -> int:
        return int(await self.redis.get(SHOWCASE_CLOCK_KEY) or 0)

    async def write(self, writes: list[ViewWrite]) -> list[bool]:
        """Each write applies only if its version is above the stored one; returns which applied."""
        if not writes:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for w in writes:
                await self._write(keys=[showcase_key(w.view_key), showcase_meta_key(w.view_key)],
                                  args=[w.body, w.version, w.content_hash, w.built_at, int(w.is_fallback), VIEW_SCHEMA,
                                        w.decision, w.decided_at_ms, w.app_version or ""], client=pipe)
            results = await pipe.execute()
        return [bool(r) for r in results]

    async def record_decisions(self, decisions: list[tuple[str, str]], now_ms: int) -> None:
        """Why a stored view was kept (e.g. too_soon), for ops and tests; only for views that exist."""
        if not decisions:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for view_key, decision in decisions:
                pipe.hset(showcase_meta_key(view_key), mapping={"decision": decision, "decided_at": now_ms})
            await pipe.execute()

    async def read_first(self, view_keys: list[str]) -> StoredView | None:
        keys: list[str] = []
        for key in view_keys:
            keys += [showcase_key(key), showcase_meta_key(key)]
        found = await self._read(keys=keys)
        if not found:
            return None
        position, version, fallback, body = found.split("|", 3)
        return StoredView(int(position) - 1, body, int(version), fallback == "1")

    async def pop_dirty(self, limit: int, quiet_before_ms: int) -> list[tuple[str, bool]]:
        """Take up to ``limit`` dirty users last marked before ``quiet_before_ms`` -> (user, forced)."""
        flat = await self._pop(keys=[SHOWCASE_DIRTY_KEY, SHOWCASE_FORCE_KEY], args=[quiet_before_ms, limit])
        popped = [(flat[i], bool(int(flat[i + 1]))) for i in range(0, len(flat), 2)]
        unforced = sum(1 for _, forced in popped if not forced)
        if unforced:  # new input (a history changed, a sweep): the next settled pass must run
            await self.redis.hincrby(SHOWCASE_SETTLED_KEY, "changes", unforced)
        return popped


def mark_dirty(pipe: Any, user_ids: Iterable[str], at_ms: int) -> None:
    """Queue 'rebuild these users once they are quiet' on a pipeline (history writes call this)."""
    users = list(user_ids)
    if users:
        pipe.zadd(SHOWCASE_DIRTY_KEY, {u: at_ms for u in users})
        pipe.sadd(SHOWCASE_USERS_KEY, *users)


async def request_rebuild(redis: Any, user_ids: Iterable[str], force: bool) -> int:
    """Ops: rebuild these users at the next tick (score 0 = no quiet wait), forced or not."""
    users = list(user_ids)
    if not users:
        return 0
    async with redis.pipeline(transaction=True) as pipe:
        if force:
            pipe.sadd(SHOWCASE_FORCE_KEY, *users)
        pipe.zadd(SHOWCASE_DIRTY_KEY, {u: 0 for u in users})
        await pipe.execute()
    return len(users)


def iso_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# -- impressions (the CTR denominator) -------------------------------------------------------------

# Exactly once per (partition, offset) in any delivery order: processors/counters.py, contiguous variant.
# KEYS = impressions hash, marks hash (partition -> floor), this partition's zset of counted offsets above
# the floor; ARGV = partition, window, max_seen, then offset, item pairs. Returns how many were new.
IMPRESSIONS_SCRIPT = """
local floor = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local window, max_seen = tonumber(ARGV[2]), tonumber(ARGV[3])
local function absorb()
  while true do
    local first = redis.call('ZRANGE', KEYS[3], 0, 0)
    if #first == 0 or tonumber(first[1]) ~= floor + 1 then return end
    floor = floor + 1
    redis.call('ZREM', KEYS[3], first[1])
  end
end
local function raise(to)
  if to > floor then
    floor = to
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', floor)
  end
  absorb()
end
local counts, counted = {}, 0
for i = 4, #ARGV, 2 do
  local offset = tonumber(ARGV[i])
  if offset > floor and not redis.call('ZSCORE', KEYS[3], ARGV[i]) then
    counts[ARGV[i + 1]] = (counts[ARGV[i + 1]] or 0) + 1
    counted = counted + 1
    if offset == floor + 1 then
      floor = offset
      absorb()
    else
      redis.call('ZADD', KEYS[3], offset, ARGV[i])
      raise(tonumber(redis.call('ZRANGE', KEYS[3], -1, -1)[1]) - window)
      local extra = redis.call('ZCARD', KEYS[3]) - max_seen
      if extra > 0 then raise(tonumber(redis.call('ZRANGE', KEYS[3], extra - 1, extra - 1)[1])) end
    end
  end
end
for item, n in pairs(counts) do redis.call('HINCRBY', KEYS[1], item, n) end
if counted > 0 then redis.call('HSET', KEYS[2], ARGV[1], floor) end
return counted
"""


def impressions_seen_key(partition: int) -> str:
    """Counted offsets above the floor of one partition. In the family of the marks hash
    (``impressions-hwm``), so a rebuild's swap replaces or deletes them together with it."""
    return f"{IMPRESSIONS_HWM_KEY}:{partition}"


class ImpressionCounter:
    """Impressions per title, counted exactly once per (partition, offset) whatever the delivery order
    (a redelivery, or an earlier stretch of the partition arriving after a later one around a
    rebalance): per partition a floor (every offset at/below it counted) and the set of counted
    offsets above it, bounded (processors/counters.py IMPRESSION_BOUNDS). Counts and marks move
    together in one script. The marks live next to the counts in the view namespace: a rebuild into a
    shadow namespace starts from empty marks and swaps them in with the counts."""

    def __init__(self, redis: Any, bounds: OffsetBounds = IMPRESSION_BOUNDS) -> None:
        self.redis = redis
        self.bounds = bounds
        self._script = redis.register_script(IMPRESSIONS_SCRIPT)

    async def add(self, partition: int, records: list[tuple[int, str]]) -> int:
        """records = (offset, item_id) of one partition; returns how many were new."""
        if not records:
            return 0
        args: list[Any] = [partition, self.bounds.window, self.bounds.max_seen]
        for offset, item in records:
            args += [offset, item]
        keys = [IMPRESSIONS_KEY, IMPRESSIONS_HWM_KEY, impressions_seen_key(partition)]
        return int(await self._script(keys=keys, args=args))
