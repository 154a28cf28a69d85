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
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from infra.logs import get_logger
from processors.ranking.device import DeviceRanker
from processors.ranking.registry import Registry
from processors.ranking.serving import assign_arm, candidate_rows, ranking_request
from processors.showcase.assemble import ModelScores
from sinks.redis_views import model_registry_key

log = get_logger("vitrina.ranking.serving")


def serving_enabled() -> bool:
    return os.environ.get("VITRINA_SHOWCASE_RANKING", "1").strip().lower() not in ("0", "false", "no", "off")


class ServingModels:
    def __init__(self, redis: Any, name: str | None = None, *, settings: Any = None, check_every_s: float = 5.0,
                 loader: Any = None) -> None:
        self.redis = redis
        self.name = name or os.environ.get("VITRINA_RANKING_MODEL_NAME", "ranking")
        self.settings = settings
        self.check_every_s = check_every_s
        self._loader = loader  # (version) -> DeviceRanker; tests and benches inject one
        self._store: Any = None
        self.rankers: dict[str, DeviceRanker] = {}
        self.arms: tuple[str, ...] = ()
        self._checked = float("-inf")
        self._failed: set[str] = set()

    def _load(self, version: str) -> DeviceRanker:
        if self._loader is not None:
            return self._loader(version)
        if self._store is None:
            from infra.settings import load
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

    def scores(self, viewer: str, user_id: str | None, device_type: str, recent: Sequence[str],
               duration_of: Callable[[str], int], now: datetime) -> ModelScores | None:
        """The viewer's arm as a lazy ``ModelScores``: each ML shelf scores (LiteRT, in the build thread)
        only the candidates it can still pick; None when no version serves."""
        version = self.arm_of(viewer)
        if version is None:
            return None
        ranker = self.rankers[version]
        request = ranking_request(user_id, device_type, recent, now)

        def scorer(items: Sequence[str]) -> dict[str, float]:
            scores = ranker.score(request, candidate_rows(items, {i: duration_of(i) for i in items}))
            return dict(zip(items, scores.tolist()))

        return ModelScores(self.name, version, scorer=scorer)
