"""Showcase assembly: template placement, shelf filling and the business rules, with the pumpkin fallback.

Order of work for one request (rules.py lists the rule functions in the same order):
  1. audience: kids (viewer under 16) switch to the kids template (kids=True shelf definitions) and
     kids-only titles; guests lose history and adult content; the request age limit applies to all.
  2. shelf definitions targeted by device type and app version (cached per kids/device/version).
  3. template placement: slot 1 banner carousel, 2 continue watching, 3 favourite channels (defaults),
     editor pins (template_slot, per device via device_types); free slots: ML shelves, then VOD/auto/
     originals shelves in descending genre affinity to the user's history, then super-shelves.
  4. shelves are filled top-down. For a title shelf: candidates = editorial picks first, then ML / auto
     results (rule: editorial_first); only titles allowed for the audience (licence window, device
     rights, guest adult, age limit, kids + educational); titles the user watched or is watching are
     hidden (series come back with a new episode/season); titles visible in an upper shelf are hidden
     (dedupe); the shelf is cut to the device shelf length; with ranking scores the non-editorial part
     is re-ranked; boost-flagged titles move first unless the CTR guard switches them off; "sign
     language" duplicates move to the end; a shelf under its minimum is dropped (its titles then do
     not count as visible). Super-shelves keep covers whose collection/title is still valid.
  5. fewer shelves than the showcase minimum, or any exception -> the pumpkin (default editorial)
     showcase for the same audience, ``is_fallback=True`` plus a critical alarm.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import itemgetter
from typing import Callable, Any, Iterable, Mapping, Sequence

from .catalogue import AudienceView, CatalogueIndex, SimilarLists
from .checks import daily_checks
from .config import DEFAULT_POLICY, ShowcasePolicy
from .errors import ShowcaseInputError
from .model import Alarm, Audience, DroppedShelf, ShelfDef, Shelf, Showcase, Stats, Title, UserHistory, Viewer
from .personal import (
    for_you,
    for_you_candidates,
    for_you_pool_size,
    genre_profile,
    shelf_affinity,
    watch_also,
    watch_also_candidates,
)
from .rules import (
    apply_boost,
    audience_of,
    link_valid,
    min_items,
    place_in_template,
    series_has_new_content,
    shelf_length,
    shelf_meets_minimum,
    showcase_meets_minimum,
    sign_language_to_end,
    take_unseen,
    visible_items,
)
from .version import VersionKey

EMPTY_HISTORY = UserHistory()
PERSONAL_KINDS = frozenset({"CONTINUE_WATCHING", "FAVOURITE_CHANNELS", "ML_FOR_YOU", "ML_WATCH_ALSO"})
_AFFINITY_KINDS = frozenset({"VOD", "AUTO", "ORIGINALS_BANNER"})
PUMPKIN_VARIANTS = ("adult", "guest", "kids")
ML_KINDS = frozenset({"ML_FOR_YOU", "ML_WATCH_ALSO"})


@dataclass(frozen=True)
class ModelScores:
    """The serving ranking model's final (weighted task) score per candidate of the ML shelves of one
    user: "for you" and "watch also" are re-ranked by it; the version is stamped on those shelves.

    ``scores`` may be given whole, or filled on demand by ``scorer`` (item ids -> scores): each ML
    shelf then scores only the candidates it can still pick. ``prefetched`` holds scores computed ahead
    (the builder scores the likely candidates of a whole batch of users in a few large LiteRT calls,
    ``model_candidates``): a shelf takes its candidates from there and calls ``scorer`` only for the
    rest, so ``scores`` (what the shelves asked for, stamped in their meta) is the same either way. A
    scorer that fails leaves today's order (``failed`` is set); it never costs the user the showcase."""

    name: str
    version: str
    scores: dict[str, float] = field(default_factory=dict)
    scorer: Callable[[Sequence[str]], Mapping[str, float]] | None = None
    failed: list[str] = field(default_factory=list)
    prefetched: Mapping[str, float] = field(default_factory=dict, compare=False, repr=False)
    # what ``model_candidates`` computed that assembly reuses (hidden titles, the unblocked "for you"
    # stage 1), each under the key of its inputs: used only when the build's inputs match it
    prepared: dict[str, tuple[tuple, Any]] = field(default_factory=dict, compare=False, repr=False)
    asked: list[int] = field(default_factory=lambda: [0, 0], compare=False)  # [titles asked for, of them not prefetched]

    def score(self, items: Sequence[str]) -> dict[str, float]:
        if self.scorer is not None and not self.failed:
            missing = [i for i in dict.fromkeys(items) if i not in self.scores]
            if missing and self.prefetched:
                ahead = self.prefetched
                found = [i for i in missing if i in ahead]
                self.scores.update((i, ahead[i]) for i in found)
                self.asked[0] += len(missing)
                if len(found) < len(missing):
                    missing = [i for i in missing if i not in ahead]
                    self.asked[1] += len(missing)
                else:
                    missing = []
            if missing:
                try:
                    self.scores.update(self.scorer(missing))
                except Exception as err:  # noqa: BLE001 - the model is optional, the showcase is not
                    self.failed.append(f"{type(err).__name__}: {err}"[:300])
        scores = self.scores
        return {i: scores[i] for i in items if i in scores}


def model_candidates(
    index: CatalogueIndex,
    viewer: Viewer,
    history: UserHistory | None,
    *,
    similar: SimilarLists | None = None,
    params: Mapping[str, str] | None = None,
    policy: ShowcasePolicy | None = None,
    prepared: dict[str, tuple[tuple, Any]] | None = None,
) -> list[str]:
    """The titles the ML shelves of this viewer's showcase will ask the serving model to score, as far
    as they can be told before the build (cheap: no shelf is filled): the "for you" pool and the first
    ``length x slack`` titles of the "watch also" anchor's list, each computed as if no upper shelf
    blocked anything, plus a margin of one visible window per shelf placed before it for the titles
    that upper shelves will block. The builder scores these for a whole batch of users at once
    (``ModelScores.prefetched``); a title a shelf asks for beyond them is scored on demand, so the
    result never depends on this guess, only the cost does. ``prepared`` (``ModelScores.prepared``)
    receives the user's hidden titles and unblocked "for you" stage 1, which assembly then reuses."""
    if viewer.is_guest or history is None or not history.recent:
        return []
    policy = policy or index.policy
    try:
        policy = policy.with_overrides(params)
    except ShowcaseInputError:
        pass
    audience = audience_of(viewer, policy)
    placed = index.placed(audience.kids, viewer.device_type, viewer.app_version_key, place_in_template)
    kinds = [d.kind for d in placed]  # ML shelves come before the affinity-ordered ones: their slots hold
    if "ML_FOR_YOU" not in kinds and "ML_WATCH_ALSO" not in kinds:
        return []
    device = viewer.device_type
    length, visible = shelf_length(device, policy), visible_items(device, policy)
    similar = similar if similar is not None else index.similar
    hidden = hidden_titles(history, index, viewer.now, policy.series_return)
    allowed = index.for_audience(audience, viewer.now).allowed
    if prepared is not None:
        prepared["hidden"] = (_hidden_key(history, viewer.now, policy), hidden)
    out: dict[str, None] = {}
    if "ML_FOR_YOU" in kinds:
        weights = policy.for_you
        unblocked = for_you_candidates(history.recent, similar, (), allowed, index, weights)
        if prepared is not None:
            prepared["for_you"] = (_for_you_key(history.recent, similar, allowed, weights), unblocked)
        scores = {item: score for item, score in unblocked.items() if item not in hidden}
        size = for_you_pool_size(length, weights) + visible
        out.update((i, None) for i, _ in heapq.nlargest(size, scores.items(), key=itemgetter(1)))
    if "ML_WATCH_ALSO" in kinds:
        take = length * max(1, policy.ranking_slack) + visible
        out.update((i, None) for i in watch_also_candidates(history.recent[0], similar, hidden, allowed, index, take))
    return list(out)


def _hidden_key(history: UserHistory, now: datetime, policy: ShowcasePolicy) -> tuple:
    return (id(history), now, policy.series_return)


def _for_you_key(recent: Sequence[str], similar: SimilarLists, allowed: Any, weights: Any) -> tuple:
    return (tuple(recent[: weights.seeds]), id(similar), id(allowed), weights.seeds, weights.per_seed)


def _prepared(model: ModelScores | None, name: str, key: tuple) -> Any:
    found = model.prepared.get(name) if model is not None else None
    return found[1] if found is not None and found[0] == key else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)


@dataclass
class _Build:
    index: CatalogueIndex
    audience: Audience
    now: datetime
    policy: ShowcasePolicy
    personal: bool
    history: UserHistory = EMPTY_HISTORY
    similar: SimilarLists = field(default_factory=dict)
    ranking: Mapping[str, float] | None = None
    model: ModelScores | None = None
    ctr: Mapping[str, float] = field(default_factory=dict)
    hidden: frozenset[str] | set[str] = frozenset()
    view: AudienceView | None = None


def hidden_titles(history: UserHistory, index: CatalogueIndex, now: datetime, mode: str) -> set[str]:
    """Titles kept off the showcase for this user: watched and in-progress titles (and their series);
    a watched series returns when a newer episode/season than the last watched one is available."""
    canonical = index.canonical
    hidden = {canonical.get(i, i) for i in history.watched}
    progress: dict[str, tuple[int, int]] = {}
    for item in history.watched:
        title = index.titles.get(item)
        if title is not None and title.is_episode:
            last = (title.season or 0, title.episode or 0)
            if last > progress.get(title.series_id, (-1, -1)):
                progress[title.series_id] = last
    for series_id, last in history.series_progress.items():
        if last > progress.get(series_id, (-1, -1)):
            progress[series_id] = last
    if progress:
        latest = index.series_latest(now)
        for series_id, last in progress.items():
            if series_has_new_content(last, latest.get(series_id), mode):
                hidden.discard(series_id)
            else:
                hidden.add(series_id)
    for item in history.continue_watching:
        hidden.add(item)
        hidden.add(canonical.get(item, item))
    return hidden


def _title_items(shelf: ShelfDef, b: _Build, blocked: set[str], length: int) -> list[str]:
    index = b.index
    if shelf.kind in ("ML_FOR_YOU", "ML_WATCH_ALSO"):
        canonical, allowed = index.canonical, b.view.allowed
        picks = take_unseen((canonical.get(i, i) for i in shelf.item_ids if canonical.get(i, i) in allowed), blocked, length)
        need = length - len(picks)
        local_blocked = blocked.union(picks) if picks else blocked
        scorer = b.model.score if b.model is not None else None
        if shelf.kind == "ML_FOR_YOU":
            weights = b.policy.for_you
            unblocked = _prepared(b.model, "for_you", _for_you_key(b.history.recent, b.similar, allowed, weights))
            ml = for_you(b.history.recent, b.similar, local_blocked, allowed, index, need, weights,
                         b.ranking, score_pool=scorer, unblocked=unblocked)
        else:
            anchor = b.history.recent[0] if b.history.recent else None
            ml = watch_also(anchor, b.similar, local_blocked, allowed, index, need, score_pool=scorer,
                            slack=b.policy.ranking_slack)
        return picks + ml
    pool, n_picks = b.view.pool(shelf)
    head = take_unseen(pool[:n_picks], blocked, length)
    need = length - len(head)
    if need <= 0:
        return head
    if b.ranking:
        tail = take_unseen(pool[n_picks:], blocked, need * b.policy.ranking_slack)
        scores = b.ranking
        tail.sort(key=lambda i: (i not in scores, -scores.get(i, 0.0)))
        return head + tail[:need]
    return head + take_unseen(pool[n_picks:], blocked, need)


def _super_shelf(shelf: ShelfDef, b: _Build, allowed: frozenset[str]) -> Shelf:
    index, minimum = b.index, min_items("VOD", b.policy)

    def collection_size(shelf_id: str) -> int:
        target = index.defs_by_id.get(shelf_id)
        return len(b.view.pool(target)[0]) if target is not None else 0

    def title_allowed(item_id: str) -> bool:
        return item_id in allowed and item_id not in b.hidden

    links = tuple(link for link in shelf.links if link_valid(link, collection_size, title_allowed, minimum))
    return Shelf(shelf.shelf_id, shelf.kind, shelf.title, links=links, meta={"links_total": len(shelf.links)})


def _build_shelves(b: _Build, ordered: Sequence[ShelfDef]) -> tuple[list[Shelf], list[DroppedShelf]]:
    policy, device = b.policy, b.audience.device_type
    length, visible = shelf_length(device, policy), visible_items(device, policy)
    max_shelves = policy.max_shelves[device]
    b.view = b.index.for_audience(b.audience, b.now)
    allowed = b.view.allowed
    boost_ids, sign_ids, twins = b.index.boost_ids, b.index.sign_language_ids, b.index.sign_twins
    seen: set[str] = set()
    blocked: set[str] = set(b.hidden)
    shelves: list[Shelf] = []
    dropped: list[DroppedShelf] = []
    for shelf in ordered:
        kind = shelf.kind
        if not b.personal and kind in PERSONAL_KINDS:
            continue
        if len(shelves) >= max_shelves:
            dropped.append(DroppedShelf(shelf.shelf_id, kind, "max_shelves"))
            continue
        if kind == "SUPER_SHELF":
            built = _super_shelf(shelf, b, allowed)
            if shelf_meets_minimum(kind, len(built.links), policy):
                shelves.append(built)
            else:
                dropped.append(DroppedShelf(shelf.shelf_id, kind, "below_minimum"))
            continue
        meta: dict[str, Any] = {}
        if kind == "FAVOURITE_CHANNELS":
            items = list(dict.fromkeys(b.history.favourite_channels))[:length]
        elif kind == "CONTINUE_WATCHING":
            playable = b.view.playable
            items = take_unseen((i for i in dict.fromkeys(b.history.continue_watching) if playable(i)), seen, length)
        else:
            items = _title_items(shelf, b, blocked, length)
            if not boost_ids.isdisjoint(items):
                items, on, off = apply_boost(items, boost_ids, b.ctr, visible, policy.boost_ctr_delta)
                if on:
                    meta["boosted"] = on
                if off:
                    meta["boost_off"] = off
            if not sign_ids.isdisjoint(items) and any(not twins[i].isdisjoint(items) for i in items if i in sign_ids):
                items = sign_language_to_end(items, sign_ids, b.index.content_key)
        if not shelf_meets_minimum(kind, len(items), policy):
            dropped.append(DroppedShelf(shelf.shelf_id, kind, "below_minimum"))
            continue
        if b.model is not None and kind in ML_KINDS and not b.model.failed:
            meta["model"] = b.model.name
            meta["model_version"] = b.model.version
            meta["model_scores"] = [_rounded(b.model.scores.get(i)) for i in items]
        shelves.append(Shelf(shelf.shelf_id, kind, shelf.title, tuple(items), meta=meta))
        if kind != "FAVOURITE_CHANNELS":
            window = items[:visible]
            seen.update(window)
            blocked.update(window)
    return shelves, dropped


def _pumpkin(index: CatalogueIndex, audience: Audience, app_version: VersionKey | None, now: datetime, policy: ShowcasePolicy) -> Showcase:
    def build() -> Showcase:
        b = _Build(index=index, audience=audience, now=now, policy=policy, personal=False, ctr=index.stats.ctr)
        shelves, dropped = _build_shelves(b, index.placed(audience.kids, audience.device_type, app_version, place_in_template))
        alarms: tuple[Alarm, ...] = ()
        if not showcase_meets_minimum(len(shelves), policy):
            alarms = (
                Alarm(
                    "pumpkin_below_minimum",
                    f"default editorial showcase has {len(shelves)} shelves, minimum {policy.min_shelves}",
                    "critical",
                    {"device_type": audience.device_type, "audience": audience.label, "shelves": len(shelves)},
                ),
            )
        return Showcase(
            user_key=f"pumpkin:{audience.label}",
            device_type=audience.device_type,
            shelves=tuple(shelves),
            built_at=now,
            is_fallback=True,
            audience=audience.label,
            alarms=alarms,
            dropped=tuple(dropped),
        )

    if policy is index.policy:
        return index.cached_pumpkin(audience, app_version, now, build)
    return build()


def build_pumpkin(
    catalogue: CatalogueIndex | Iterable[Mapping[str, Any] | Title],
    shelves: Iterable[Mapping[str, Any] | ShelfDef] | None = None,
    device_type: str = "TV",
    *,
    variant: str = "adult",
    now: datetime,
    age_limit: int | None = None,
    app_version: str | None = None,
    stats: Stats | None = None,
    policy: ShowcasePolicy | None = None,
) -> Showcase:
    """The default editorial showcase: banner/VOD/auto/originals/super-shelves only, no personal shelves.
    ``variant`` adult | guest (no adult genre) | kids (kids template, kids titles only)."""
    if variant not in PUMPKIN_VARIANTS:
        raise ShowcaseInputError("invalid_field", f"variant must be one of {PUMPKIN_VARIANTS}", field="variant")
    if isinstance(catalogue, CatalogueIndex):
        index = catalogue
        if shelves is not None:
            index = CatalogueIndex.build(index.titles.values(), shelves, index.stats, now=now, policy=index.policy)
    else:
        index = CatalogueIndex.build(catalogue, shelves or (), stats, now=now, policy=policy or DEFAULT_POLICY)
    policy = policy or index.policy
    viewer = Viewer(
        user_id=None if variant == "guest" else "pumpkin",
        device_type=device_type,
        now=now,
        app_version=app_version,
        age_limit=age_limit,
        is_kids=variant == "kids",
    )
    return _pumpkin(index, audience_of(viewer, policy), viewer.app_version_key, now, policy)


def _fallback(
    index: CatalogueIndex, viewer: Viewer, policy: ShowcasePolicy, version: int, reason: str, alarm: Alarm
) -> Showcase:
    try:
        audience = audience_of(viewer, policy)
        pumpkin = _pumpkin(index, audience, viewer.app_version_key, viewer.now, policy)
        shelves, extra, dropped = pumpkin.shelves, pumpkin.alarms, pumpkin.dropped
    except Exception as err:  # the pumpkin itself failed: serve an empty fallback, never raise
        shelves, dropped = (), ()
        extra = (Alarm("pumpkin_failed", f"{type(err).__name__}: {err}"[:500], "critical"),)
        audience = None
    label = audience.label if audience is not None else ("guest" if viewer.is_guest else "adult")
    return Showcase(
        user_key=viewer.user_key,
        device_type=viewer.device_type,
        shelves=shelves,
        built_at=viewer.now,
        version=version,
        is_fallback=True,
        audience=label,
        fallback_reason=reason,
        alarms=(alarm, *extra),
        dropped=dropped,
    )


def assemble(
    index: CatalogueIndex,
    viewer: Viewer,
    history: UserHistory | None = None,
    *,
    similar: SimilarLists | None = None,
    ranking: Mapping[str, float] | None = None,
    ctr: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    policy: ShowcasePolicy | None = None,
    version: int = 1,
    run_checks: bool = False,
    model: ModelScores | None = None,
) -> Showcase:
    """Build one user's showcase for one device type. Failures give the pumpkin; only a wrong
    ``index``/``viewer`` type raises ShowcaseInputError (no device type to build a pumpkin for).

    index    pre-built CatalogueIndex (catalogue, shelf definitions, nightly fills, popularity/CTR)
    viewer   request context (user_id None = guest, device_type, app_version, age_limit, is_kids, now)
    history  the user's history (ignored for guests)
    similar  item -> [(item, score)] lists for the user's recent titles (default: index.similar)
    ranking  item -> ranking-model score for this user (optional)
    ctr      fresher item -> CTR than index.stats.ctr (optional, used by the boost guard)
    params   A/B parameters (see ShowcasePolicy.with_overrides); a bad value is ignored with an alarm
    model    the serving ranking model's scores of the ML candidates: "for you" and "watch also" are
             re-ranked by them (then MMR / business rules as without); None = today's order
    version  the per-user revision number to stamp on the result
    """
    if not isinstance(index, CatalogueIndex):
        raise ShowcaseInputError("invalid_index", f"index must be a CatalogueIndex, got {type(index).__name__}")
    if not isinstance(viewer, Viewer):
        raise ShowcaseInputError("invalid_viewer", f"viewer must be a Viewer, got {type(viewer).__name__}")
    policy = policy or index.policy
    pre_alarms: list[Alarm] = []
    try:
        policy = policy.with_overrides(params)
    except ShowcaseInputError as err:
        pre_alarms.append(Alarm("invalid_param", str(err), "warning", err.to_dict()))
    try:
        showcase = _assemble(index, viewer, history, similar, ranking, ctr, policy, version, model)
    except Exception as err:
        alarm = Alarm(
            "assembly_failed",
            f"{type(err).__name__}: {err}"[:500],
            "critical",
            {"user_key": viewer.user_key, "device_type": viewer.device_type},
        )
        showcase = _fallback(index, viewer, policy, version, "assembly_failed", alarm)
    alarms = list(pre_alarms)
    if run_checks:
        alarms.extend(daily_checks(showcase, index, policy))
    if alarms:
        showcase = replace(showcase, alarms=showcase.alarms + tuple(alarms))
    return showcase


def _hidden(history: UserHistory, index: CatalogueIndex, now: datetime, policy: ShowcasePolicy,
            model: ModelScores | None) -> frozenset[str] | set[str]:
    if history is EMPTY_HISTORY:
        return frozenset()
    found = _prepared(model, "hidden", _hidden_key(history, now, policy))
    return found if found is not None else hidden_titles(history, index, now, policy.series_return)


def _assemble(
    index: CatalogueIndex,
    viewer: Viewer,
    history: UserHistory | None,
    similar: SimilarLists | None,
    ranking: Mapping[str, float] | None,
    ctr: Mapping[str, float] | None,
    policy: ShowcasePolicy,
    version: int,
    model: ModelScores | None = None,
) -> Showcase:
    if history is not None and not isinstance(history, UserHistory):
        raise ShowcaseInputError("invalid_history", f"history must be a UserHistory, got {type(history).__name__}")
    audience = audience_of(viewer, policy)
    history = EMPTY_HISTORY if viewer.is_guest or history is None else history
    now = viewer.now
    defs = index.targeted(audience.kids, viewer.device_type, viewer.app_version_key)
    affinity = None
    if history.recent:
        profile = genre_profile(history.recent, index)
        if profile:
            signatures = index.shelf_genres
            affinity = {
                d.shelf_id: shelf_affinity(profile, signatures.get(d.shelf_id, {})) for d in defs if d.kind in _AFFINITY_KINDS
            }
    b = _Build(
        index=index,
        audience=audience,
        now=now,
        policy=policy,
        personal=True,
        history=history,
        similar=similar if similar is not None else index.similar,
        ranking=ranking or None,
        model=model if model is not None and (model.scores or model.scorer is not None) else None,
        ctr=ctr if ctr is not None else index.stats.ctr,
        hidden=_hidden(history, index, now, policy, model),
    )
    if affinity:
        ordered = place_in_template(defs, affinity)
    else:
        ordered = index.placed(audience.kids, viewer.device_type, viewer.app_version_key, place_in_template)
    shelves, dropped = _build_shelves(b, ordered)
    if not showcase_meets_minimum(len(shelves), policy):
        alarm = Alarm(
            "too_many_shelves_dropped",
            f"{len(shelves)} shelves left, minimum {policy.min_shelves}: serving the default editorial showcase",
            "critical",
            {
                "user_key": viewer.user_key,
                "device_type": viewer.device_type,
                "kept": len(shelves),
                "dropped": [d.shelf_id for d in dropped],
            },
        )
        return _fallback(index, viewer, policy, version, "too_many_shelves_dropped", alarm)
    return Showcase(
        user_key=viewer.user_key,
        device_type=viewer.device_type,
        shelves=tuple(shelves),
        built_at=now,
        version=version,
        is_fallback=False,
        audience=audience.label,
        dropped=tuple(dropped),
    )
