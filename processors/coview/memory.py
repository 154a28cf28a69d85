"""In-memory drivers over the pure functions (bench, tests, a single-process worker).

The Faust agents keep the same plain-dict states in tables instead of these dicts:
``SessionStore.states`` ~ table keyed by viewer key, ``CoviewIndex.titles`` ~ table
keyed by item id, ``CoviewIndex.totals`` ~ one key. The per-event code path is the
same functions (``sessionize.apply``, ``cooccurrence.apply_contribution``).
"""
from __future__ import annotations

from typing import Any, Mapping

from processors.coview.coldstart import DEFAULT_BLEND_PRIOR, MetadataIndex, arrange, blend
from processors.coview.cooccurrence import (
    CoviewConfig,
    TitleState,
    TotalsState,
    add_view_to_totals,
    apply_contribution,
    contributions_for_view,
    decayed,
)
from processors.coview.sessionize import Emitted, SessionConfig, SessionState, ViewCompleted, apply, close_idle, sessionizer_key
from processors.coview.similarity import SimilarityConfig, title_count, top_similar

__all__ = ["SessionStore", "CoviewIndex"]


class SessionStore:
    def __init__(self, config: SessionConfig = SessionConfig()) -> None:
        self.config = config
        self.states: dict[str, SessionState] = {}

    def feed(self, event: Mapping[str, Any]) -> list[Emitted]:
        key = sessionizer_key(event) if isinstance(event, Mapping) else None
        new, emitted = apply(self.states.get(key) if key else None, event, self.config)
        if key is not None:
            if new is None:
                self.states.pop(key, None)
            else:
                self.states[key] = new
        return emitted

    def sweep(self, now_ms: int) -> list[Emitted]:
        """close_idle over every viewer (a timer in the agent)."""
        emitted: list[Emitted] = []
        for key in list(self.states):
            new, out = close_idle(self.states[key], now_ms, self.config)
            emitted.extend(out)
            if new is None:
                del self.states[key]
            else:
                self.states[key] = new
        return emitted


class CoviewIndex:
    def __init__(
        self,
        config: CoviewConfig = CoviewConfig(),
        similarity: SimilarityConfig = SimilarityConfig(),
    ) -> None:
        self.config = config
        self.similarity = similarity
        self.titles: dict[str, TitleState] = {}
        self.totals: TotalsState | None = None

    def add_view(self, view: ViewCompleted) -> None:
        titles = self.titles
        config = self.config
        for contribution in contributions_for_view(view, config):
            titles[contribution.title] = apply_contribution(
                titles.get(contribution.title), contribution, config, inplace=True)
        self.totals = add_view_to_totals(self.totals, view, config)

    def count(self, item_id: str, now_ms: int) -> float:
        return title_count(self.titles.get(item_id), now_ms, self.config.half_life_ms)

    def sessions(self, now_ms: int) -> float:
        if self.totals is None:
            return 0.0
        return decayed(self.totals["sessions"], self.totals["L"], now_ms, self.config.half_life_ms)

    def similar(
        self, item_id: str, now_ms: int, similarity: SimilarityConfig | None = None
    ) -> list[tuple[str, float]]:
        half_life = self.config.half_life_ms
        titles = self.titles
        return top_similar(
            titles.get(item_id),
            lambda other: title_count(titles.get(other), now_ms, half_life),
            self.sessions(now_ms),
            now_ms,
            half_life,
            similarity or self.similarity,
            exclude=item_id,
        )

    def served(
        self,
        item_id: str,
        now_ms: int,
        metadata: MetadataIndex | None,
        prior: float = DEFAULT_BLEND_PRIOR,
        similarity: SimilarityConfig | None = None,
    ) -> tuple[list[tuple[str, float]], str]:
        """The list a "watch also" shelf / autoplay gets: co-view blended with metadata, in served order
        (``coldstart.arrange``: the title's series first, the children's rule)."""
        config = similarity or self.similarity
        coview = self.similar(item_id, now_ms, config)
        meta = metadata.similar(item_id, config.k) if metadata is not None else []
        items, source = blend(coview, meta, self.count(item_id, now_ms), prior, config.k)
        return arrange(item_id, items, metadata, meta, config.k), source
