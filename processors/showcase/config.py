"""Tunable numbers of the showcase rules (one frozen policy object, overridable per request for A/B)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Mapping

from .errors import ShowcaseInputError

DEVICE_TYPES = ("TV", "MOBILE", "TABLET", "WEB", "STB")
BIG_SCREENS = frozenset({"TV", "STB"})

SERIES_RETURN_MODES = ("NEW_EPISODE", "NEW_SEASON")


@dataclass(frozen=True)
class ForYouWeights:
    """Blend for the "for you" re-ranker: base = relevance*w + novelty*w + rating*w, then MMR by genre."""

    relevance: float = 0.6
    novelty: float = 0.15
    rating: float = 0.25
    mmr_lambda: float = 0.7  # 1.0 = no diversity penalty
    seeds: int = 10  # most recent titles used as candidate seeds
    per_seed: int = 20  # head of each seed's similar list taken as candidates
    candidates: int = 60  # candidate pool size kept for re-ranking
    model_share: float = 1.0  # weight of the serving model's score in relevance (the rest: similarity)


@dataclass(frozen=True)
class ShowcasePolicy:
    # titles sent per shelf (device dependent: big screens show fewer, bigger posters per row)
    shelf_length: Mapping[str, int] = field(
        default_factory=lambda: {"TV": 12, "STB": 12, "MOBILE": 10, "TABLET": 14, "WEB": 20}
    )
    # posters in view without horizontal scrolling: the "visible area" of a shelf
    visible_items: Mapping[str, int] = field(
        default_factory=lambda: {"TV": 6, "STB": 6, "MOBILE": 3, "TABLET": 5, "WEB": 7}
    )
    max_shelves: Mapping[str, int] = field(
        default_factory=lambda: {"TV": 20, "STB": 20, "MOBILE": 25, "TABLET": 25, "WEB": 30}
    )
    min_titles_per_shelf: int = 5
    # kinds whose minimum differs from min_titles_per_shelf (super-shelf counts links)
    min_items_by_kind: Mapping[str, int] = field(
        default_factory=lambda: {"BANNER_CAROUSEL": 3, "CONTINUE_WATCHING": 1, "FAVOURITE_CHANNELS": 1, "SUPER_SHELF": 2}
    )
    min_shelves: int = 4
    banner_editorial_slots: int = 5  # editors keep the first 5 banner places, ML sorts the rest
    boost_ctr_delta: float = 0.02  # absolute CTR gap below the visible mean that switches a boost off
    series_return: str = "NEW_EPISODE"
    kids_default_age_limit: int = 12  # kids viewer whose request carries no age limit
    ranking_slack: int = 3  # with ranking scores, re-rank the first length*slack pool titles
    max_paid_share: float = 0.5  # daily check: paid share of the visible area
    max_boosted_per_shelf: int = 3
    max_boosted_per_showcase: int = 8
    min_replace_interval: timedelta = timedelta(days=1)
    for_you: ForYouWeights = field(default_factory=ForYouWeights)

    def with_overrides(self, params: Mapping[str, str] | None) -> "ShowcasePolicy":
        """A/B parameters from query params / headers. Unknown keys are ignored, bad values raise."""
        if not params:
            return self
        changes: dict[str, object] = {}
        for_you: dict[str, object] = {}
        for key, raw in params.items():
            target = _OVERRIDES.get(key)
            if target is None:
                continue
            name, cast = target
            try:
                value = cast(raw)
            except (TypeError, ValueError):
                raise ShowcaseInputError("invalid_param", f"param {key!r} has a bad value {raw!r}", field=key) from None
            if name.startswith("for_you."):
                for_you[name.split(".", 1)[1]] = value
            else:
                changes[name] = value
        if for_you:
            changes["for_you"] = replace(self.for_you, **for_you)
        return replace(self, **changes) if changes else self


def _series_mode(raw: str) -> str:
    value = str(raw).upper()
    if value not in SERIES_RETURN_MODES:
        raise ValueError(value)
    return value


def _unit(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError(value)
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(value)
    return value


_OVERRIDES = {
    "series_return": ("series_return", _series_mode),
    "boost_ctr_delta": ("boost_ctr_delta", _unit),
    "min_shelves": ("min_shelves", _positive_int),
    "min_titles_per_shelf": ("min_titles_per_shelf", _positive_int),
    "for_you.relevance": ("for_you.relevance", _unit),
    "for_you.novelty": ("for_you.novelty", _unit),
    "for_you.rating": ("for_you.rating", _unit),
    "for_you.mmr_lambda": ("for_you.mmr_lambda", _unit),
    "for_you.model_share": ("for_you.model_share", _unit),
}
AB_PARAMS = tuple(_OVERRIDES)  # the A/B parameter names a request may carry

DEFAULT_POLICY = ShowcasePolicy()
