"""Stability: a user's showcase changes at most once a day, unless ops force a rebuild.

Decision order for replacing the stored showcase by a freshly built one:
  1. same content hash as the stored one        -> no write ("unchanged"), even when forced
  2. forced by ops                               -> write ("forced"; or the reason given as ``force``,
                                                    e.g. "settled" for the builder's settled pass)
  3. nothing stored                              -> write ("first_build")
  4. stored meta unreadable / other schema       -> write ("previous_unreadable" / "schema_changed")
  5. new one is a fallback, stored is personal   -> keep the stored one ("keep_previous_over_fallback")
     unless the stored one is older than max_keep_over_fallback (then rule 7 applies)
  6. stored one is a fallback (pumpkin)          -> write ("previous_was_fallback"); degraded mode must not stick
  7. stored one is at least min_interval old     -> write ("daily_refresh")
  8. otherwise                                   -> keep ("too_soon"); also when built_at is in the future
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from ._fields import as_datetime
from .errors import ShowcaseInputError
from .view import VIEW_SCHEMA

DEFAULT_MIN_INTERVAL = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ReplaceDecision:
    replace: bool
    reason: str

    def __bool__(self) -> bool:
        return self.replace


def should_replace(
    previous_meta: Mapping[str, Any] | None,
    now: datetime,
    force: bool | str = False,
    *,
    new_meta: Mapping[str, Any] | None = None,
    min_interval: timedelta = DEFAULT_MIN_INTERVAL,
    max_keep_over_fallback: timedelta = timedelta(days=3),
) -> ReplaceDecision:
    """``previous_meta``/``new_meta`` are ``view_meta(...)`` dicts (``to_view(s)["meta"]``). ``now`` is the
    build's event time (the builder's input watermark), never the wall clock: the same inputs give the
    same decisions. ``force`` may be a reason string instead of True."""
    previous_hash = previous_meta.get("content_hash") if isinstance(previous_meta, Mapping) else None
    if new_meta is not None and previous_hash is not None and new_meta.get("content_hash") == previous_hash:
        return ReplaceDecision(False, "unchanged")
    if force:
        return ReplaceDecision(True, force if isinstance(force, str) else "forced")
    if previous_meta is None:
        return ReplaceDecision(True, "first_build")
    try:
        if not isinstance(previous_meta, Mapping):
            raise ShowcaseInputError("invalid_meta", "previous meta is not a mapping")
        built_at = as_datetime(previous_meta.get("built_at"), "built_at")
    except ShowcaseInputError:
        return ReplaceDecision(True, "previous_unreadable")
    if previous_meta.get("schema") != VIEW_SCHEMA:
        return ReplaceDecision(True, "schema_changed")
    previous_fallback = bool(previous_meta.get("is_fallback"))
    age = now - built_at
    if new_meta is not None and new_meta.get("is_fallback") and not previous_fallback and age < max_keep_over_fallback:
        return ReplaceDecision(False, "keep_previous_over_fallback")
    if previous_fallback:
        return ReplaceDecision(True, "previous_was_fallback")
    if age >= min_interval:
        return ReplaceDecision(True, "daily_refresh")
    return ReplaceDecision(False, "too_soon")
