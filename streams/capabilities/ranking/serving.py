"""The serving models of the showcase builder: Production + playoff candidates, loaded with LiteRT.

``ServingModels.refresh`` (called by the builder before each batch, at most every ``check_every_s``)
reads the registry from Redis (``vitrina:model:{name}:registry``, one GET); the serving arms are
``Registry.serving()``: the Production version, then the playoff candidates (at most 6 in all). A
version not loaded yet is fetched from S3 (manifest + float TFLite, sha256-checked) in a thread and
loaded into a ``DeviceRanker``: the same file, runtime and feature code as the device. A version
that cannot be loaded is skipped (logged once); with no loadable version ``arms`` is empty and the
showcase keeps today's order.

``scores(viewer, ...)`` picks the viewer's arm (stable hash, ``processors.ranking.serving``) and
returns a lazy ``ModelScores``: each ML shelf scores only the candidates it can still pick.
``batch_scores(jobs, ...)`` does the same for a whole batch of users: the candidates each user's ML
shelves will likely ask for (``processors.showcase.assemble.model_candidates``) are scored per arm in
a few 256-row LiteRT calls, back to back (measured: 17-24 us per row for a 32-row call between two users'
Python work, the model's weights out of the CPU cache by then, vs 3.4-7.7 us in 256-row calls); a shelf asking for more scores the rest
on demand, so the showcases are the same as with ``scores`` (a row's score does not depend on the
call it runs in).
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from infra.logs import get_logger
from infra.settings import Settings, load
from processors.ranking.device import DeviceRanker
from processors.ranking.registry import Registry
from processors.ranking.serving import PoolEncoder, assign_arm, ranking_request
from processors.showcase.assemble import ModelScores
from sinks.redis_views import model_registry_key

log = get_logger("vitrina.ranking.serving")


def serving_enabled(settings: Settings) -> bool:
    """``VITRINA_SHOWCASE_RANKING``: whether the builder re-ranks with the serving ranking versions."""
    return settings.showcase_ranking


class ServingModels:
    def __init__(self, redis: Any, name: str | None = None, *, settings: Any = None, check_every_s: float = 5.0,
                 loader: Any = None) -> None:
        self.redis = redis
        self.name = name or (settings or load()).ranking_model_name
        self.settings = settings
        self.check_every_s = check_every_s
        self._loader = loader  # (version) -> DeviceRanker; tests and benches inject one
        self._store: Any = None
        self.rankers: dict[str, DeviceRanker] = {}
        self._encoders: dict[int, tuple[DeviceRanker, PoolEncoder]] = {}
        self.arms: tuple[str, ...] = ()
        self._checked = float("-inf")
        self._failed: set[str] = set()

    def _load(self, version: str) -> DeviceRanker:
        if self._loader is not None:
            return self._loader(version)
        if self._store is None:
            from sinks.model_store import ModelStore

            self._store = ModelStore(self.settings or load(), self.name)
        manifest = self._store.manifest(version)
        return DeviceRanker(manifest, self._store.model_bytes(manifest))

    async def refresh(self, force: bool = False) -> tuple[str, ...]:
        mono = time.monotonic()
        if not force and mono - self._checked < self.check_every_s:
            return self.arms
        self._checked = mono
        try:
            raw = await self.redis.get(model_registry_key(self.name))
        except Exception as exc:  # noqa: BLE001 - Redis away: keep what is loaded
            log.warning("serving_registry_read_failed", error=repr(exc))
            return self.arms
        wanted = Registry.from_dict(json.loads(raw)).serving() if raw else ()
        for version in wanted:
            if version in self.rankers or version in self._failed:
                continue
            try:
                self.rankers[version] = await asyncio.to_thread(self._load, version)
                log.info("serving_model_loaded", model=self.name, version=version)
            except Exception as exc:  # noqa: BLE001 - a broken version must not stop the showcase
                self._failed.add(version)
                log.error("serving_model_unloadable", model=self.name, version=version, error=repr(exc))
        for version in list(self.rankers):
            if version not in wanted:
                del self.rankers[version]
        self.arms = tuple(v for v in wanted if v in self.rankers)
        return self.arms

    def arm_of(self, viewer: str) -> str | None:
        return assign_arm(viewer, self.arms)

    def _encoder(self, ranker: DeviceRanker) -> PoolEncoder:
        found = self._encoders.get(id(ranker))
        if found is None or found[0] is not ranker:
            if len(self._encoders) > 4 * len(self.rankers) + 8:
                self._encoders.clear()
            found = self._encoders[id(ranker)] = (ranker, PoolEncoder(ranker.features))
        return found[1]

    def scores(self, viewer: str, user_id: str | None, device_type: str, recent: Sequence[str],
               durations: Mapping[str, int], now: datetime, *, prefetched: Mapping[str, float] | None = None,
               prepared: dict | None = None) -> ModelScores | None:
        """The viewer's arm as a lazy ``ModelScores``: each ML shelf scores (LiteRT, in the build thread)
        only the candidates it can still pick (those not in ``prefetched``); None when no version
        serves. ``durations``: item -> duration (ms), one map per catalogue (title features are cached
        per map)."""
        version = self.arm_of(viewer)
        if version is None:
            return None
        ranker = self.rankers[version]
        encoder = self._encoder(ranker)
        request = ranking_request(user_id, device_type, recent, now)

        def scorer(items: Sequence[str]) -> dict[str, float]:
            scores = ranker.score_encoded(encoder.encode([(request, items)], durations), pad_to=32)
            return dict(zip(items, scores.tolist()))

        return ModelScores(self.name, version, scorer=scorer, prefetched=prefetched or {}, prepared=prepared or {})

    def batch_scores(self, jobs: Sequence[tuple[str, str | None, str, Sequence[str], Sequence[str]]],
                     durations: Mapping[str, int], now: datetime, *, pad_to: int = 256,
                     prepared: Sequence[dict] | None = None) -> list[ModelScores | None]:
        """``scores`` for many users at once: ``jobs`` = (viewer, user_id, device_type, recent, likely
        candidates); each arm scores all its users' candidates in ``pad_to``-row LiteRT calls and hands
        every user a ``ModelScores`` with them prefetched (and ``prepared[k]``, what the guess computed
        for the assembly to reuse). A failing batch call leaves the users their lazy scorer (each shelf
        then scores on demand, as ``scores``)."""
        arms = [self.arm_of(viewer) for viewer, *_ in jobs]
        prefetched: list[dict[str, float]] = [{} for _ in jobs]
        for version in dict.fromkeys(a for a in arms if a is not None):
            ranker = self.rankers[version]
            mine = [k for k, arm in enumerate(arms) if arm == version and jobs[k][4]]
            if not mine:
                continue
            pools = [(ranking_request(jobs[k][1], jobs[k][2], jobs[k][3], now), list(dict.fromkeys(jobs[k][4])))
                     for k in mine]
            try:
                scores = ranker.score_encoded(self._encoder(ranker).encode(pools, durations), pad_to=pad_to).tolist()
            except Exception as exc:  # noqa: BLE001 - the shelves score on demand instead
                log.warning("serving_batch_scoring_failed", model=self.name, version=version, error=repr(exc))
                continue
            start = 0
            for k, (_, items) in zip(mine, pools):
                prefetched[k] = dict(zip(items, scores[start:start + len(items)]))
                start += len(items)
        memos = prepared if prepared is not None else [None] * len(jobs)
        return [self.scores(viewer, user_id, device_type, recent, durations, now, prefetched=ahead, prepared=memo)
                for (viewer, user_id, device_type, recent, _), ahead, memo in zip(jobs, prefetched, memos)]
