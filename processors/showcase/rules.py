"""The named business rules of the showcase, each a small pure function.

The assembly applies them in this order (see assemble.py):
  1. kids switch (viewer under 16 -> kids template and kids-only titles)      audience_of, kids_allowed
  2. shelf targeting by device type and app version                          shelf_targets
  3. template placement (slots 1-3 fixed, editor pins, free slots)            place_in_template
  per title shelf, top-down:
  4. editorial picks first, ML / auto results appended                        editorial_first
  5. eligibility: licence window, device rights, guest adult, age limit, kids title_eligible
  6. watched titles removed, series back on new episode/season                series_has_new_content
  7. cross-shelf dedupe inside the visible area (upper wins)                  take_unseen / dedupe_across_shelves
  8. truncate to the device shelf length                                      shelf_length
  9. boosting with the CTR guard                                              apply_boost
 10. "sign language" duplicates to the shelf end                              sign_language_to_end
 11. shelf minimum (shelf removed below it); super-shelf covers checked       shelf_meets_minimum, link_valid
 12. showcase minimum -> default editorial ("pumpkin") showcase + alarm        showcase_meets_minimum
"""
from __future__ import annotations

import re
from itertools import filterfalse, islice
from datetime import datetime
from typing import Callable, Collection, Iterable, Mapping, Sequence

from .config import BIG_SCREENS, DEFAULT_POLICY, ShowcasePolicy
from .model import AGE_RATINGS, Audience, ShelfDef, ShelfLink, ShelfRule, Title, Viewer
from .version import VersionKey, version_in_range

SIGN_LANGUAGE_TAGS = frozenset({"sign language", "сурдоперевод"})
EDUCATIONAL_TAGS = frozenset({"educational", "развивающие"})
ADULT_GENRES = frozenset({"adult", "эротика", "erotic"})
FIXED_SLOTS = {"BANNER_CAROUSEL": 1, "CONTINUE_WATCHING": 2, "FAVOURITE_CHANNELS": 3}
# order of unpinned shelves: ML shelves first, then VOD-like shelves (personal order), super-shelves last
FREE_KIND_RANK = {"ML_FOR_YOU": 0, "ML_WATCH_ALSO": 1, "SUPER_SHELF": 3}
TITLE_SHELF_KINDS = frozenset({"BANNER_CAROUSEL", "VOD", "AUTO", "ORIGINALS_BANNER", "ML_FOR_YOU", "ML_WATCH_ALSO"})


# -- sizes and minimums ---------------------------------------------------------------------------

def shelf_length(device_type: str, policy: ShowcasePolicy = DEFAULT_POLICY) -> int:
    return policy.shelf_length[device_type]


def visible_items(device_type: str, policy: ShowcasePolicy = DEFAULT_POLICY) -> int:
    return policy.visible_items[device_type]


def min_items(kind: str, policy: ShowcasePolicy = DEFAULT_POLICY) -> int:
    return policy.min_items_by_kind.get(kind, policy.min_titles_per_shelf)


def shelf_meets_minimum(kind: str, count: int, policy: ShowcasePolicy = DEFAULT_POLICY) -> bool:
    return count >= min_items(kind, policy)


def showcase_meets_minimum(shelf_count: int, policy: ShowcasePolicy = DEFAULT_POLICY) -> bool:
    return shelf_count >= policy.min_shelves


# -- targeting and template ---------------------------------------------------------------------

def shelf_targets(shelf: ShelfDef, device_type: str, app_version: VersionKey | None) -> bool:
    if shelf.device_types and device_type not in shelf.device_types:
        return False
    return version_in_range(app_version, shelf.min_version_key, shelf.max_version_key)


def template_slot(shelf: ShelfDef) -> int | None:
    """Explicit editor pin wins; banner / continue watching / favourite channels default to slots 1/2/3."""
    return shelf.template_slot if shelf.template_slot is not None else FIXED_SLOTS.get(shelf.kind)


def place_in_template(shelves: Sequence[ShelfDef], affinity: Mapping[str, float] | None = None) -> list[ShelfDef]:
    """Pinned shelves take their slot (a taken slot pushes to the next one; an editor's explicit pin wins
    over a default slot); free shelves fill the gaps
    ordered ML first, then VOD-like by descending personal affinity, super-shelves last (ties: input order)."""
    pinned = sorted(
        ((template_slot(s), i, s) for i, s in enumerate(shelves) if template_slot(s) is not None),
        key=lambda t: (t[0], t[2].template_slot is None, t[1]),  # explicit pin beats a default slot
    )
    affinity = affinity or {}
    free = sorted(
        ((i, s) for i, s in enumerate(shelves) if template_slot(s) is None),
        key=lambda t: (FREE_KIND_RANK.get(t[1].kind, 2), -affinity.get(t[1].shelf_id, 0.0), t[0]),
    )
    by_slot: dict[int, ShelfDef] = {}
    for slot, _, shelf in pinned:
        while slot in by_slot:
            slot += 1
        by_slot[slot] = shelf
    result: list[ShelfDef] = []
    free_iter = iter(s for _, s in free)
    remaining_free = len(free)
    position = 1
    while by_slot or remaining_free:
        if position in by_slot:
            result.append(by_slot.pop(position))
        elif remaining_free:
            result.append(next(free_iter))
            remaining_free -= 1
        else:
            result.extend(by_slot[k] for k in sorted(by_slot))
            by_slot.clear()
        position += 1
    return result


# -- per-title eligibility --------------------------------------------------------------------------

def licence_active(title: Title, now: datetime) -> bool:
    if title.licence_start is not None and now < title.licence_start:
        return False
    return title.licence_end is None or now < title.licence_end


def device_rights_allow(title: Title, device_type: str) -> bool:
    """Empty rights = every device; rights like {TV, STB} = "big screens only"."""
    return not title.device_rights or device_type in title.device_rights


def big_screen_only(title: Title) -> bool:
    return bool(title.device_rights) and title.device_rights <= BIG_SCREENS


def is_adult(title: Title) -> bool:
    return title.adult or not ADULT_GENRES.isdisjoint(title.genres)


def guest_allowed(title: Title, guest: bool) -> bool:
    return not (guest and is_adult(title))


def age_limit_allows(title: Title, age_limit: int | None) -> bool:
    return age_limit is None or title.age_rating <= age_limit


def kids_allowed(title: Title, kids: bool, drop_educational: bool) -> bool:
    """Kids showcase keeps only titles flagged for children; above 0+ "educational" titles go."""
    if not kids:
        return True
    if not title.kids:
        return False
    return not (drop_educational and not EDUCATIONAL_TAGS.isdisjoint(title.tags))


def effective_age_limit(age_limit: int | None) -> int | None:
    """The request limit rounded down to a rating step (14 -> 12); 18 and above mean no limit."""
    if age_limit is None or age_limit >= AGE_RATINGS[-1]:
        return None
    return max((r for r in AGE_RATINGS if r <= age_limit), default=0)


def audience_of(viewer: Viewer, policy: ShowcasePolicy = DEFAULT_POLICY) -> Audience:
    age_limit = viewer.age_limit
    if viewer.is_kids and age_limit is None:
        age_limit = policy.kids_default_age_limit
    age_limit = effective_age_limit(age_limit)
    return Audience(
        device_type=viewer.device_type,
        guest=viewer.is_guest,
        age_limit=age_limit,
        kids=viewer.is_kids,
        drop_educational=viewer.is_kids and (age_limit is None or age_limit > 0),
    )


def title_eligible(title: Title, audience: Audience, now: datetime) -> bool:
    return (
        licence_active(title, now)
        and device_rights_allow(title, audience.device_type)
        and guest_allowed(title, audience.guest)
        and age_limit_allows(title, audience.age_limit)
        and kids_allowed(title, audience.kids, audience.drop_educational)
    )


# -- shelf contents ---------------------------------------------------------------------------------

def editorial_first(picks: Iterable[str], ml_results: Iterable[str]) -> tuple[str, ...]:
    """Editorial picks keep their order at the head; ML results are appended without repeats."""
    return tuple(dict.fromkeys([*picks, *ml_results]))


def take_unseen(items: Iterable[str], blocked: Collection[str], limit: int) -> list[str]:
    """First ``limit`` items not in ``blocked`` (hidden titles + titles visible in upper shelves)."""
    if limit <= 0:
        return []
    return list(islice(filterfalse(blocked.__contains__, items), limit))


def dedupe_across_shelves(shelves: Sequence[Sequence[str]], visible: int, length: int | None = None) -> list[list[str]]:
    """Top-down: a title in an upper shelf's visible area is hidden from every lower shelf, so no title is
    visible twice. Titles outside the visible area of the upper shelf stay where they are."""
    seen: set[str] = set()
    result: list[list[str]] = []
    for items in shelves:
        kept = take_unseen(dict.fromkeys(items), seen, length if length is not None else len(items))
        result.append(kept)
        seen.update(kept[:visible])
    return result


def apply_boost(
    items: Sequence[str],
    boosted: Collection[str],
    ctr: Mapping[str, float],
    visible: int,
    delta: float,
) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
    """Boost-flagged titles move to the first places (keeping their relative order) unless their CTR is
    below the mean CTR of the shelf's visible non-boosted titles by more than ``delta``. A boosted title
    without CTR (new content) or a shelf with no CTR data keeps its boost.
    Returns (items, boosted_applied, boost_switched_off)."""
    flagged = [item for item in items if item in boosted]
    if not flagged:
        return list(items), (), ()
    visible_ctr = [ctr[i] for i in items[:visible] if i not in boosted and i in ctr]
    mean = sum(visible_ctr) / len(visible_ctr) if visible_ctr else None
    on = [i for i in flagged if mean is None or i not in ctr or ctr[i] >= mean - delta]
    off = tuple(i for i in flagged if i not in on)
    if not on:
        return list(items), (), off
    on_set = set(on)
    return on + [i for i in items if i not in on_set], tuple(on), off


_PAREN_RE = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_NON_WORD_RE = re.compile(r"[\W_]+", re.UNICODE)


def content_key(title: Title) -> str:
    """Identity of the content behind a title, so a sign-language version matches its original."""
    if title.series_id is not None:
        return "series:" + title.series_id
    name = _PAREN_RE.sub(" ", (title.original_title or title.title).lower())
    for marker in SIGN_LANGUAGE_TAGS:
        name = name.replace(marker, " ")
    return f"{_NON_WORD_RE.sub('', name)}:{title.release_year or ''}"


def sign_language_to_end(items: Sequence[str], sign_language: Collection[str], key_of: Callable[[str], str]) -> list[str]:
    """A "sign language" title whose content also appears earlier in the shelf (any version), or later as
    a non-sign-language version, is a duplicate: it moves to the shelf end (relative order kept)."""
    if not any(item in sign_language for item in items):
        return list(items)
    plain_keys = {key_of(i) for i in items if i not in sign_language}
    seen_keys: set[str] = set()
    head: list[str] = []
    tail: list[str] = []
    for item in items:
        if item in sign_language:
            key = key_of(item)
            (tail if key in plain_keys or key in seen_keys else head).append(item)
            seen_keys.add(key)
        else:
            head.append(item)
    return head + tail


def series_has_new_content(last_watched: tuple[int, int], latest_available: tuple[int, int] | None, mode: str) -> bool:
    """Series come back to the showcase after the user's last watched episode when a newer episode
    (NEW_EPISODE) or a newer season (NEW_SEASON) is available."""
    if latest_available is None:
        return False
    if mode == "NEW_SEASON":
        return latest_available[0] > last_watched[0]
    return latest_available > last_watched


def link_valid(link: ShelfLink, collection_size: Callable[[str], int], title_allowed: Callable[[str], bool], minimum: int) -> bool:
    """A super-shelf cover survives if its collection still has enough titles or its title is allowed."""
    if link.kind == "COLLECTION":
        return collection_size(link.target) >= minimum
    if link.kind == "TITLE":
        return title_allowed(link.target)
    return link.kind == "WEB"


# -- auto-shelves -----------------------------------------------------------------------------------

def auto_rule_matches(title: Title, rule: ShelfRule) -> bool:
    if rule.genres and rule.genres.isdisjoint(title.genres):
        return False
    if rule.tags and rule.tags.isdisjoint(title.tags):
        return False
    if rule.min_year is not None and (title.release_year is None or title.release_year < rule.min_year):
        return False
    if rule.max_age_rating is not None and title.age_rating > rule.max_age_rating:
        return False
    return not (rule.kids_only and not title.kids)


def auto_sort_key(sort: str, popularity: Mapping[str, float]) -> Callable[[Title], tuple]:
    if sort == "NEWEST":
        return lambda t: (-(t.release_year or 0), -(t.updated_at.timestamp() if t.updated_at else 0.0), t.item_id)
    if sort == "RATING":
        return lambda t: (t.rating is None, -(t.rating or 0.0), -popularity.get(t.item_id, 0.0), t.item_id)
    return lambda t: (-popularity.get(t.item_id, 0.0), t.item_id)


def fill_auto_shelf(rule: ShelfRule, titles: Iterable[Title], popularity: Mapping[str, float], now: datetime) -> tuple[str, ...]:
    """Nightly fill of one auto-shelf from the whole catalogue: showable titles (no single episodes) whose
    licence is active at fill time and that match the rule, sorted and cut to ``rule.limit``."""
    matching = [
        t for t in titles if not t.is_episode and licence_active(t, now) and auto_rule_matches(t, rule)
    ]
    matching.sort(key=auto_sort_key(rule.sort, popularity))
    return tuple(t.item_id for t in matching[: rule.limit])
