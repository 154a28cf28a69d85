"""Per-version online metrics: the shell around processors/ranking/online.py.

* ``OnlineMetricsSink.add(samples)``: each labelled sample served by a model version adds its counter
  increments (``online.sample_increments``) to one Redis hash, ``vitrina:model:{name}:online``
  (HINCRBY in one transaction), so every worker's partitions add up in one place.
* ``OnlineMetricsSink.add_records(records)``: the same, each record counted exactly once: beside the
  counters, ``...:online:applied`` keeps per partition of ``ranking.samples`` the last offset counted,
  written in the same MULTI/EXEC as the increments; records at or below it (a batch redelivered after a
  crash before the offset commit) are skipped. The marker key is WATCHed, so a zombie consumer still
  writing after a rebalance retries against the new marker instead of counting twice.
* ``OnlineMetricsSink.snapshot()``: at most every ``every_s`` (one worker at a time, a Redis lock),
  the totals are summarised per version and appended to each serving version's ``online`` history in
  the registry (``registry.record_online`` through ``ModelStore.update``): cumulative figures with
  their time, so `vitrina model list|show` and ``/v1/models/{name}/versions`` show them.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from redis.exceptions import WatchError

from infra.logs import get_logger
from processors.ranking.errors import RegistryError
from processors.ranking.online import merge_increments, summarize
from processors.ranking.registry import Registry, record_online

log = get_logger("vitrina.ranking.online")


def online_key(name: str) -> str:
    return f"vitrina:model:{name}:online"


def apply_snapshot(registry: Registry, summary: Mapping[str, Mapping[str, Any]], at: datetime) -> tuple[Registry, int]:
    """Append the summary of every registered version with new figures; (registry, versions recorded)."""
    known = {v.version: v for v in registry.versions}
    recorded = 0
    for version, figures in sorted(summary.items()):
        record = known.get(version)
        if record is None or (record.online and record.online[-1].get("impressions") == figures.get("impressions")):
            continue  # unknown version, or nothing new since its last snapshot
        registry = record_online(registry, version, {"at": at.isoformat(), **figures})
        recorded += 1
    return registry, recorded


def _impressions(increments: Mapping[str, int]) -> int:
    return sum(v for k, v in increments.items() if k.endswith("|n"))


class OnlineMetricsSink:
    def __init__(self, redis: Any, name: str, store_factory: Any, *, every_s: float = 30.0) -> None:
        self.redis = redis
        self.name = name
        self.key = online_key(name)
        self.applied_key = self.key + ":applied"
        self.every_s = every_s
        self._store_factory = store_factory  # () -> ModelStore (sync: used in a thread)
        self._store: Any = None

    async def add(self, samples: Sequence[Mapping[str, Any]]) -> int:
        """Count ``samples`` (no offsets: at-least-once; tests and benches)."""
        increments = merge_increments(samples)
        if not increments:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            for field, value in increments.items():
                pipe.hincrby(self.key, field, value)
            await pipe.execute()
        return _impressions(increments)

    async def add_records(self, records: Sequence[tuple[int, int, Mapping[str, Any]]], attempts: int = 10) -> int:
        """Count (partition, offset, sample) records of ``ranking.samples`` exactly once; returns the
        impressions counted (0 for a batch counted before)."""
        if not records:
            return 0
        partitions = sorted({partition for partition, _, _ in records})
        for _ in range(attempts):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(self.applied_key)
                    marks = dict(zip(partitions, await pipe.hmget(self.applied_key, [str(p) for p in partitions])))
                    fresh, last = [], {}
                    for partition, offset, sample in records:
                        mark = marks[partition]
                        if mark is not None and offset <= int(mark):
                            continue
                        fresh.append(sample)
                        last[partition] = max(offset, last.get(partition, -1))
                    if not last:
                        await pipe.unwatch()
                        return 0
                    increments = merge_increments(fresh)
                    pipe.multi()
                    for field, value in increments.items():
                        pipe.hincrby(self.key, field, value)
                    pipe.hset(self.applied_key, mapping={str(p): o for p, o in last.items()})
                    await pipe.execute()
                    return _impressions(increments)
                except WatchError:
                    continue  # another consumer moved a marker meanwhile: read the markers again
        raise RuntimeError(f"online metrics of {self.name}: the offset markers kept changing ({attempts} tries)")

    async def summary(self) -> dict[str, dict[str, Any]]:
        return summarize(await self.redis.hgetall(self.key))

    async def snapshot(self, at: datetime | None = None) -> int:
        """Record the current totals in the registry if no worker did it in the last ``every_s``."""
        if not await self.redis.set(self.key + ":snapshot-lock", "1", nx=True, ex=max(1, int(self.every_s))):
            return 0
        summary = await self.summary()
        if not summary:
            return 0
        at = at or datetime.now(timezone.utc)
        if self._store is None:
            self._store = self._store_factory()
        try:
            current = await asyncio.to_thread(self._store.load)
            if apply_snapshot(current, summary, at)[1] == 0:
                return 0  # nothing new: no registry write
            _, recorded = await asyncio.to_thread(self._store.update, lambda r: apply_snapshot(r, summary, at))
        except RegistryError as exc:
            log.warning("online_snapshot_failed", model=self.name, error=repr(exc))
            return 0
        log.info("online_metrics_recorded", model=self.name, versions=recorded)
        return recorded
