"""Sample world generator and the MovieLens loader."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from processors.showcase import CatalogueIndex, ShowcasePolicy, Title, UserHistory, Viewer, assemble
from processors.showcase.model import SHELF_KINDS
from demo.showcase_sample import generate_catalogue, load_movielens_stats, load_movielens_titles, sample_world

from support.showcase import NOW

MOVIELENS = Path("/work/shared/data/datasets/movielens-ml-latest-small")


@pytest.fixture(scope="module")
def world():
    return sample_world(1200, seed=3)


def test_sample_is_seeded():
    assert generate_catalogue(200, seed=1, now=NOW) == generate_catalogue(200, seed=1, now=NOW)
    assert generate_catalogue(200, seed=1, now=NOW) != generate_catalogue(200, seed=2, now=NOW)


def test_sample_catalogue_covers_the_rule_cases(world):
    titles = [Title.from_dict(t) for t in world.titles]  # every record parses
    flags = Counter()
    for t in titles:
        flags["kids"] += t.kids
        flags["adult"] += t.adult
        flags["paid"] += t.paid
        flags["boost"] += t.boost
        flags["sign"] += "sign language" in t.tags
        flags["educational"] += "educational" in t.tags
        flags["big_screen"] += t.device_rights == frozenset({"TV", "STB"})
        flags["expired"] += t.licence_end is not None and t.licence_end <= world.now
        flags["future"] += t.licence_start is not None and t.licence_start > world.now
        flags["episode"] += t.is_episode
        flags["series"] += t.is_series
    assert all(flags[k] > 0 for k in ("kids", "adult", "paid", "boost", "sign", "educational", "big_screen", "expired", "future", "episode", "series")), flags
    index = world.index()
    assert index.rejected == ()
    kinds = {d["kind"] for d in world.shelf_defs}
    assert kinds == set(SHELF_KINDS)
    assert any(d["kids"] for d in world.shelf_defs) and any(d["min_app_version"] for d in world.shelf_defs)
    assert all(index.auto_fills[d["shelf_id"]] for d in world.shelf_defs if d["kind"] == "AUTO" and d["shelf_id"] != "web_picks")


def test_sample_users_build_without_fallbacks(world):
    index = world.index()
    audiences = Counter()
    for viewer, history in world.users(120):
        showcase = assemble(index, viewer, history)
        assert not showcase.is_fallback, (viewer, showcase.alarms)
        audiences[showcase.audience] += 1
    assert set(audiences) == {"adult", "guest", "kids"}


@pytest.mark.skipif(not (MOVIELENS / "movies.csv").is_file(), reason="MovieLens data not present")
def test_movielens_titles():
    titles = load_movielens_titles(MOVIELENS / "movies.csv", now=NOW)
    assert len(titles) == 9742
    toy = next(t for t in titles if t["item_id"] == "ml1")
    assert toy["title"] == "Toy Story" and toy["release_year"] == 1995
    assert toy["genres"] == ["adventure", "animation", "children", "comedy", "fantasy"] and toy["kids"]
    assert all(t["genres"] != ["(no genres listed)"] for t in titles)
    stats = load_movielens_stats(MOVIELENS / "ratings.csv")
    assert sum(stats.popularity.values()) == 100836
    index = CatalogueIndex.build(
        titles,
        [
            {"shelf_id": "comedy", "kind": "AUTO", "rule": {"genres": ["comedy"], "sort": "POPULAR", "limit": 50}},
            {"shelf_id": "kids", "kind": "AUTO", "kids": True, "rule": {"kids_only": True, "limit": 50}},
            {"shelf_id": "drama", "kind": "AUTO", "rule": {"genres": ["drama"], "sort": "NEWEST", "limit": 50}},
            {"shelf_id": "classics", "kind": "AUTO", "rule": {"genres": ["film-noir", "western"], "limit": 50}},
        ],
        stats,
        now=NOW,
        policy=ShowcasePolicy(min_shelves=3),
    )
    assert index.rejected == ()
    assert index.auto_fills["comedy"][0] == max(
        (t["item_id"] for t in titles if "comedy" in t["genres"]), key=lambda i: stats.popularity.get(i, 0)
    )
    showcase = assemble(index, Viewer(user_id="u", device_type="WEB", now=NOW), UserHistory(watched=("ml1",)))
    assert not showcase.is_fallback
    assert [s.shelf_id for s in showcase.shelves] == ["comedy", "drama", "classics"]
    assert "ml1" not in showcase.shelves[0].items  # watched
    kid = assemble(index, Viewer(user_id="k", device_type="TV", now=NOW, age_limit=6, is_kids=True))
    assert kid.is_fallback  # one kids shelf is under the minimum of 3: the kids pumpkin
    assert [s.shelf_id for s in kid.shelves] == ["kids"] and all("children" in index.titles[i].genres for i in kid.shelves[0].items)


def test_movielens_loader_rejects_other_files(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    from processors.showcase import ShowcaseInputError

    with pytest.raises(ShowcaseInputError) as info:
        load_movielens_titles(bad, now=NOW)
    assert info.value.code == "invalid_file"
    with pytest.raises(ShowcaseInputError):
        load_movielens_titles(tmp_path / "missing.csv", now=NOW)
