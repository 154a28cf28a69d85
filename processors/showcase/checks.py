"""Daily checks over built showcases: personalisation present, paid and boosted shares, daily novelty.
Each returns Alarm records; the caller logs them and counts a metric."""
from __future__ import annotations

from typing import TYPE_CHECKING, Collection, Iterable

from .config import DEFAULT_POLICY, ShowcasePolicy
from .model import Alarm, Shelf, Showcase
from .rules import TITLE_SHELF_KINDS, visible_items

if TYPE_CHECKING:
    from .catalogue import CatalogueIndex

ML_KINDS = frozenset({"ML_FOR_YOU", "ML_WATCH_ALSO"})


def visible_windows(showcase: Showcase, policy: ShowcasePolicy = DEFAULT_POLICY) -> list[tuple[Shelf, tuple[str, ...]]]:
    """(shelf, its visible titles) for every title shelf of the showcase."""
    window = visible_items(showcase.device_type, policy)
    return [(s, s.items[:window]) for s in showcase.shelves if s.kind in TITLE_SHELF_KINDS]


def check_personalisation(showcase: Showcase) -> Alarm | None:
    """A logged-in adult/kid showcase that is not a fallback must carry at least one non-empty ML shelf."""
    if showcase.audience == "guest" or showcase.is_fallback:
        return None
    if any(s.kind in ML_KINDS and s.items for s in showcase.shelves):
        return None
    return Alarm("no_personalisation", "showcase has no personal ML shelf", "warning", _who(showcase))


def paid_share(items: Iterable[str], paid_ids: Collection[str]) -> float:
    items = list(items)
    return sum(1 for i in items if i in paid_ids) / len(items) if items else 0.0


def check_paid(showcase: Showcase, paid_ids: Collection[str], policy: ShowcasePolicy = DEFAULT_POLICY) -> Alarm | None:
    visible = [i for _, window in visible_windows(showcase, policy) for i in window]
    share = paid_share(visible, paid_ids)
    if share <= policy.max_paid_share:
        return None
    return Alarm(
        "too_many_paid",
        f"paid titles are {share:.0%} of the visible area (limit {policy.max_paid_share:.0%})",
        "warning",
        {**_who(showcase), "share": round(share, 4), "limit": policy.max_paid_share},
    )


def check_boosted(showcase: Showcase, boost_ids: Collection[str], policy: ShowcasePolicy = DEFAULT_POLICY) -> list[Alarm]:
    alarms: list[Alarm] = []
    total = 0
    for shelf, window in visible_windows(showcase, policy):
        count = sum(1 for i in window if i in boost_ids)
        total += count
        if count > policy.max_boosted_per_shelf:
            alarms.append(
                Alarm(
                    "too_many_boosted_in_shelf",
                    f"shelf {shelf.shelf_id} shows {count} boosted titles (limit {policy.max_boosted_per_shelf})",
                    "warning",
                    {**_who(showcase), "shelf_id": shelf.shelf_id, "count": count, "limit": policy.max_boosted_per_shelf},
                )
            )
    if total > policy.max_boosted_per_showcase:
        alarms.append(
            Alarm(
                "too_many_boosted",
                f"showcase shows {total} boosted titles (limit {policy.max_boosted_per_showcase})",
                "warning",
                {**_who(showcase), "count": total, "limit": policy.max_boosted_per_showcase},
            )
        )
    return alarms


def check_daily_novelty(previous_hash: str | None, current_hash: str, showcase: Showcase) -> Alarm | None:
    """A personal showcase should differ from yesterday's; identical content for a logged-in user alarms."""
    if previous_hash is None or showcase.audience == "guest" or showcase.is_fallback:
        return None
    if previous_hash != current_hash:
        return None
    return Alarm("showcase_not_refreshed", "personal showcase is identical to the previous day's", "warning", _who(showcase))


def daily_checks(
    showcase: Showcase,
    index: "CatalogueIndex",
    policy: ShowcasePolicy | None = None,
    *,
    previous_hash: str | None = None,
) -> list[Alarm]:
    policy = policy or index.policy
    alarms: list[Alarm] = []
    for found in (check_personalisation(showcase), check_paid(showcase, index.paid_ids, policy)):
        if found is not None:
            alarms.append(found)
    alarms.extend(check_boosted(showcase, index.boost_ids, policy))
    if previous_hash is not None:
        from .view import content_hash

        found = check_daily_novelty(previous_hash, content_hash(showcase), showcase)
        if found is not None:
            alarms.append(found)
    return alarms


def _who(showcase: Showcase) -> dict[str, str]:
    return {"user_key": showcase.user_key, "device_type": showcase.device_type}
