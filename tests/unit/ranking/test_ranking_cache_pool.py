"""GRF's device cache-pool policy (pure)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from processors.ranking.cache_pool import add_to_pool, capacity, plan_pool, return_choppy
from processors.ranking.errors import RankingInputError

NOW = datetime(2025, 3, 8, 20, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def _plays(per_day: dict[int, int]) -> list[datetime]:
    return [NOW - back * DAY - timedelta(minutes=i) for back, n in per_day.items() for i in range(n)]


def test_capacity_is_the_busiest_day_of_the_last_week():
    assert capacity(_plays({0: 3, 2: 9, 6: 5}), NOW) == 9
    assert capacity(_plays({7: 40, 1: 6}), NOW) == 6  # eight days ago is outside the window
    assert capacity([], NOW) == 4  # a new device still caches a few


def _pool(ages_days: list[float]) -> list[dict]:
    return [{"item_id": f"i{n}", "cached_at": NOW - timedelta(days=a)} for n, a in enumerate(ages_days)]


def test_replenish_below_three_quarters_and_evict_after_two_weeks():
    plays = _plays({1: 8})
    full = plan_pool(_pool([1, 2, 3, 4, 5, 6]), plays, NOW)  # 6 of 8 = 0.75: enough
    assert full.capacity == 8 and full.replenish == 0 and not full.evicted
    low = plan_pool(_pool([1, 2, 15, 20, 3]), plays, NOW)
    assert low.evicted == ["i2", "i3"] and [e["item_id"] for e in low.keep] == ["i0", "i1", "i4"]
    assert low.replenish == 5
    over = plan_pool(_pool([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), plays, NOW)
    assert over.evicted == ["i8", "i9"] and len(over.keep) == 8
    with pytest.raises(RankingInputError):
        plan_pool([{"item_id": "x", "cached_at": "yesterday"}], plays, NOW)


def test_replenished_and_choppy_titles_join_the_pool():
    pool = _pool([1, 2])
    grown = add_to_pool(pool, [{"item_id": "n1"}, {"item_id": "i0"}], NOW, capacity_=3)
    assert {e["item_id"] for e in grown[:2]} == {"n1", "i0"} and grown[2]["item_id"] == "i1"
    assert all(e["cached_at"] == NOW for e in grown[:2])
    back = return_choppy(grown, {"item_id": "chop"}, NOW + timedelta(minutes=1), capacity_=3)
    assert back[0]["item_id"] == "chop" and len(back) == 3 and "i1" not in {e["item_id"] for e in back}
