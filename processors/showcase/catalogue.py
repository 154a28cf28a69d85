"""CatalogueIndex: the catalogue and shelf definitions pre-indexed once, so a per-user build is cheap.

Everything that does not depend on the user is computed once and cached:
  * nightly auto-shelf fills (``fill_auto_shelves``), one tuple of ids per AUTO shelf;
  * per audience (device type, guest, age limit, kids): the set of allowed titles and every shelf's
    filtered candidate pool;
  * per (kids, device, app version): the targeted shelf definitions; the pumpkin showcase per audience.
Licence windows make eligibility time dependent: caches belong to a "licence epoch", the interval
between two consecutive licence_start/licence_end instants of the catalogue, and are dropped when a
request's ``now`` falls in another epoch.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence

from .config import DEFAULT_POLICY, ShowcasePolicy
from .errors import ShowcaseInputError
from .model import Audience, ShelfDef, Stats, Title
from .rules import (
    SIGN_LANGUAGE_TAGS,
    content_key,
    fill_auto_shelf,
    licence_active,
    shelf_targets,
    title_eligible,
)
from .version import VersionKey

_EPOCH_ZERO = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)
SimilarLists = Mapping[str, Sequence[tuple[str, float]]]


def _instant(dt: datetime) -> int:
    return (dt - _EPOCH_ZERO) // _MICRO


def fill_auto_shelves(
    shelf_defs: Iterable[ShelfDef], titles: Iterable[Title], popularity: Mapping[str, float], now: datetime
) -> dict[str, tuple[str, ...]]:
    """The nightly job: every AUTO shelf (and any shelf with a rule) filled from the whole catalogue.
    Candidates are narrowed through a genre index first, so 600 rules over the catalogue stay cheap."""
    showable = [t for t in titles if not t.is_episode]
    by_genre: dict[str, list[Title]] = {}
    for t in showable:
        for g in t.genres:
            by_genre.setdefault(g, []).append(t)
    fills: dict[str, tuple[str, ...]] = {}
    for shelf in shelf_defs:
        if shelf.rule is None:
            continue
        if shelf.rule.genres:
            pool = {t.item_id: t for g in shelf.rule.genres for t in by_genre.get(g, ())}.values()
        else:
            pool = showable
        fills[shelf.shelf_id] = fill_auto_shelf(shelf.rule, pool, popularity, now)
    return fills


class AudienceView:
    """Titles allowed for one audience in one licence epoch, and shelf pools filtered for it."""

    __slots__ = ("index", "audience", "now", "allowed", "pools")

    def __init__(self, index: "CatalogueIndex", audience: Audience, now: datetime, allowed: frozenset[str]):
        self.index = index
        self.audience = audience
        self.now = now
        self.allowed = allowed  # allowed ids that may sit on a shelf (no single episodes)
        self.pools: dict[str, tuple[tuple[str, ...], int]] = {}

    def pool(self, shelf: ShelfDef) -> tuple[tuple[str, ...], int]:
        """The user-independent candidates of a title shelf allowed for the audience:
        (ids with editorial picks first, number of picks at the head)."""
        cached = self.pools.get(shelf.shelf_id)
        if cached is None:
            cached = self.index._filtered_pool(shelf, self.allowed)
            self.pools[shelf.shelf_id] = cached
        return cached

    def playable(self, item_id: str) -> bool:
        """Any title, episodes included (continue watching), allowed for the audience now."""
        if item_id in self.allowed:
            return True
        title = self.index.titles.get(item_id)
        return title is not None and title.is_episode and title_eligible(title, self.audience, self.now)


class CatalogueIndex:
    def __init__(
        self,
        titles: Mapping[str, Title],
        shelf_defs: Sequence[ShelfDef],
        stats: Stats | None = None,
        *,
        fill_time: datetime,
        policy: ShowcasePolicy = DEFAULT_POLICY,
        auto_fills: Mapping[str, Sequence[str]] | None = None,
        similar: SimilarLists | None = None,
        rejected: Sequence[dict[str, Any]] = (),
    ):
        self.titles: dict[str, Title] = dict(titles)
        self.shelf_defs: tuple[ShelfDef, ...] = tuple(shelf_defs)
        self.defs_by_id = {d.shelf_id: d for d in self.shelf_defs}
        self.stats = stats or Stats()
        self.policy = policy
        self.similar: SimilarLists = similar or {}
        self.rejected = tuple(rejected)  # machine-readable errors of skipped input records
        self.fill_time = fill_time

        showable = [t for t in self.titles.values() if not t.is_episode]
        self.canonical = {t.item_id: (t.series_id if t.is_episode else t.item_id) for t in self.titles.values()}
        self.episode_parent = {t.item_id: t.series_id for t in self.titles.values() if t.is_episode}
        self.episode_ids = frozenset(self.episode_parent)
        self.boost_ids = frozenset(t.item_id for t in showable if t.boost)
        self.paid_ids = frozenset(t.item_id for t in self.titles.values() if t.paid)
        self.sign_language_ids = frozenset(t.item_id for t in showable if not SIGN_LANGUAGE_TAGS.isdisjoint(t.tags))
        self._content_keys: dict[str, str] = {}
        by_key: dict[str, set[str]] = {}
        for t in showable:
            by_key.setdefault(content_key(t), set()).add(t.item_id)
        # sign-language title -> the other titles with the same content (its possible duplicates)
        self.sign_twins = {i: frozenset(by_key[self.content_key(i)] - {i}) for i in self.sign_language_ids}

        genres = sorted({g for t in showable for g in t.genres})
        bit = {g: 1 << i for i, g in enumerate(genres)}
        self.genre_mask = {t.item_id: sum(bit[g] for g in t.genres) for t in showable}
        popularity = self.stats.popularity
        by_popularity = sorted(showable, key=lambda t: (-popularity.get(t.item_id, 0.0), t.item_id))
        last = max(len(by_popularity) - 1, 1)
        # novelty = popularity percentile from the top: the long tail is what a user has most likely not seen
        self.novelty = {t.item_id: rank / last for rank, t in enumerate(by_popularity)}
        self.rating_norm = {
            t.item_id: (min(max(t.rating, 0.0), 10.0) / 10.0 if t.rating is not None else 0.5) for t in showable
        }

        self.banner_candidates = tuple(t.item_id for t in by_popularity if "banner" in t.editorial_flags)
        self.originals_candidates = tuple(t.item_id for t in by_popularity if "original" in t.editorial_flags)

        # nightly fills passed in are reused; shelves with a rule but no fill yet are filled now
        self.auto_fills = {k: tuple(v) for k, v in (auto_fills or {}).items()}
        unfilled = [d for d in self.shelf_defs if d.rule is not None and d.shelf_id not in self.auto_fills]
        if unfilled:
            self.auto_fills.update(fill_auto_shelves(unfilled, showable, popularity, fill_time))
        self._episodes: dict[str, list[Title]] = {}
        for t in self.titles.values():
            if t.is_episode:
                self._episodes.setdefault(t.series_id, []).append(t)
        self.shelf_genres = {d.shelf_id: self._shelf_signature(d) for d in self.shelf_defs}
        self.adult_defs = tuple(d for d in self.shelf_defs if not d.kids)
        self.kids_defs = tuple(d for d in self.shelf_defs if d.kids)

        instants = set()
        for t in self.titles.values():
            for dt in (t.licence_start, t.licence_end):
                if dt is not None:
                    instants.add(_instant(dt))
        self._boundaries = sorted(instants)
        self._epoch: int | None = None
        self._epoch_now: datetime | None = None
        self._views: dict[Audience, AudienceView] = {}
        self._placed: dict[tuple[bool, str, VersionKey | None], tuple[ShelfDef, ...]] = {}
        self._series_latest: dict[str, tuple[int, int]] | None = None
        self._pumpkins: dict[tuple[Audience, VersionKey | None], Any] = {}
        self._targeted: dict[tuple[bool, str, VersionKey | None], tuple[ShelfDef, ...]] = {}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        titles: Iterable[Mapping[str, Any] | Title],
        shelf_defs: Iterable[Mapping[str, Any] | ShelfDef],
        stats: Stats | Mapping[str, Any] | None = None,
        *,
        now: datetime,
        policy: ShowcasePolicy = DEFAULT_POLICY,
        auto_fills: Mapping[str, Sequence[str]] | None = None,
        similar: SimilarLists | None = None,
    ) -> "CatalogueIndex":
        """Parse dicts (bad records are skipped and listed in ``rejected``, never raised)."""
        rejected: list[dict[str, Any]] = []
        parsed_titles: dict[str, Title] = {}
        for raw in titles:
            try:
                title = raw if isinstance(raw, Title) else Title.from_dict(raw)
            except ShowcaseInputError as err:
                rejected.append({"kind": "title", **err.to_dict()})
                continue
            parsed_titles[title.item_id] = title  # a later version of the same id wins
        parsed_defs: dict[str, ShelfDef] = {}
        for raw in shelf_defs:
            try:
                shelf = raw if isinstance(raw, ShelfDef) else ShelfDef.from_dict(raw)
            except ShowcaseInputError as err:
                rejected.append({"kind": "shelf", **err.to_dict()})
                continue
            parsed_defs[shelf.shelf_id] = shelf
        if stats is not None and not isinstance(stats, Stats):
            stats = Stats.from_dict(stats)
        return cls(
            parsed_titles,
            list(parsed_defs.values()),
            stats,
            fill_time=now,
            policy=policy,
            auto_fills=auto_fills,
            similar=similar,
            rejected=rejected,
        )

    def rebuild(
        self,
        titles: Iterable[Mapping[str, Any] | Title] | None = None,
        shelf_defs: Iterable[Mapping[str, Any] | ShelfDef] | None = None,
        stats: Stats | None = None,
        *,
        now: datetime,
        refill: bool = False,
    ) -> "CatalogueIndex":
        """A new index after catalogue / shelf / stats updates. Auto-shelf fills are kept (they change
        nightly) unless ``refill``; titles that left the catalogue are still filtered out per request."""
        return CatalogueIndex.build(
            self.titles.values() if titles is None else titles,
            self.shelf_defs if shelf_defs is None else shelf_defs,
            self.stats if stats is None else stats,
            now=now,
            policy=self.policy,
            auto_fills=None if refill else self.auto_fills,
            similar=self.similar,
        )

    def _shelf_signature(self, shelf: ShelfDef) -> dict[str, float]:
        """Genre weights of a shelf (its rule genres, else the genres of its first 20 titles) for personal order."""
        if shelf.rule is not None and shelf.rule.genres:
            return {g: 1.0 / len(shelf.rule.genres) for g in shelf.rule.genres}
        ids = (shelf.item_ids + self.auto_fills.get(shelf.shelf_id, ()))[:20]
        counts = Counter(g for i in ids if i in self.titles for g in self.titles[i].genres)
        total = sum(counts.values())
        return {g: c / total for g, c in counts.items()} if total else {}

    # -- epoch-scoped caches --------------------------------------------------------------------

    def _sync_epoch(self, now: datetime) -> None:
        if now == self._epoch_now:
            return
        epoch = bisect_right(self._boundaries, _instant(now))
        self._epoch_now = now
        if epoch != self._epoch:
            self._epoch = epoch
            self._views.clear()
            self._pumpkins.clear()
            self._series_latest = None

    def for_audience(self, audience: Audience, now: datetime) -> AudienceView:
        self._sync_epoch(now)
        view = self._views.get(audience)
        if view is None:
            allowed = frozenset(
                i for i, t in self.titles.items() if not t.is_episode and title_eligible(t, audience, now)
            )
            view = AudienceView(self, audience, now, allowed)
            self._views[audience] = view
        return view

    def eligible(self, audience: Audience, now: datetime) -> frozenset[str]:
        return self.for_audience(audience, now).allowed

    def pool(self, shelf: ShelfDef, audience: Audience, now: datetime) -> tuple[tuple[str, ...], int]:
        return self.for_audience(audience, now).pool(shelf)

    def _filtered_pool(self, shelf: ShelfDef, allowed: frozenset[str]) -> tuple[tuple[str, ...], int]:
        picks = shelf.item_ids
        if shelf.kind == "BANNER_CAROUSEL":
            picks = picks[: self.policy.banner_editorial_slots]
            tail = self.banner_candidates
        elif shelf.kind == "ORIGINALS_BANNER" and shelf.rule is None:
            tail = self.originals_candidates
        else:
            tail = self.auto_fills.get(shelf.shelf_id, ())
        canonical = (self.canonical.get(i, i) for i in picks)
        head = tuple(dict.fromkeys(i for i in canonical if i in allowed))
        rest = tuple(i for i in dict.fromkeys(tail) if i in allowed and i not in head)
        return head + rest, len(head)

    def series_latest(self, now: datetime) -> dict[str, tuple[int, int]]:
        """Latest (season, episode) per series among episodes whose licence is active now."""
        self._sync_epoch(now)
        if self._series_latest is None:
            latest: dict[str, tuple[int, int]] = {}
            for series_id, episodes in self._episodes.items():
                live = [(e.season or 0, e.episode or 0) for e in episodes if licence_active(e, now)]
                if live:
                    latest[series_id] = max(live)
            self._series_latest = latest
        return self._series_latest

    def targeted(self, kids: bool, device_type: str, app_version: VersionKey | None) -> tuple[ShelfDef, ...]:
        key = (kids, device_type, app_version)
        cached = self._targeted.get(key)
        if cached is None:
            if len(self._targeted) > 4096:
                self._targeted.clear()
            defs = self.kids_defs if kids else self.adult_defs
            cached = tuple(d for d in defs if shelf_targets(d, device_type, app_version))
            self._targeted[key] = cached
        return cached

    def placed(self, kids: bool, device_type: str, app_version: VersionKey | None, place) -> tuple[ShelfDef, ...]:
        """Template order without personal affinity (guests, empty histories, pumpkin), cached."""
        key = (kids, device_type, app_version)
        cached = self._placed.get(key)
        if cached is None:
            if len(self._placed) > 4096:
                self._placed.clear()
            cached = tuple(place(self.targeted(kids, device_type, app_version)))
            self._placed[key] = cached
        return cached

    def cached_pumpkin(self, audience: Audience, app_version: VersionKey | None, now: datetime, build) -> Any:
        self._sync_epoch(now)
        key = (audience, app_version)
        cached = self._pumpkins.get(key)
        if cached is None:
            if len(self._pumpkins) > 4096:
                self._pumpkins.clear()
            cached = build()
            self._pumpkins[key] = cached
        return cached

    def content_key(self, item_id: str) -> str:
        key = self._content_keys.get(item_id)
        if key is None:
            title = self.titles.get(item_id)
            key = content_key(title) if title is not None else "id:" + item_id
            self._content_keys[item_id] = key
        return key

    def showable_ids(self) -> list[str]:
        return [i for i, t in self.titles.items() if not t.is_episode]
