"""Served order of a similar list (pure): series first, the children's rule, the asymmetric measure."""
from __future__ import annotations

import pytest

from processors.coview.coldstart import (
    MetadataIndex,
    arrange,
    is_kids,
    kids_first,
    series_first,
    series_key,
)
from processors.coview.similarity import SimilarityConfig, pair_score, top_similar


@pytest.mark.parametrize(
    "title, key",
    [
        ("Star Wars: Episode V - The Empire Strikes Back", "t:star wars"),
        ("Toy Story 2", "t:toy story"),
        ("Toy Story", "t:toy story"),
        ("Lord of the Rings: The Two Towers, The", "t:lord of the rings"),
        ("Back to the Future Part III", "t:back to the future"),
        ("Godfather: Part II, The", "t:godfather"),
        ("Star Trek II: The Wrath of Khan", "t:star trek"),
        ("Raiders of the Lost Ark (Indiana Jones and the Raiders of the Lost Ark)", "t:raiders of the lost ark"),
        ("", ""),
    ],
)
def test_series_key_from_the_title(title, key):
    assert series_key({"title": title}) == key


def test_series_id_wins_over_the_title():
    assert series_key({"title": "Toy Story 2", "series_id": "s-9"}) == "id:s-9"


def _catalogue(*titles):
    index = MetadataIndex()
    for item_id, title, year, genres in titles:
        index.add_title({"item_id": item_id, "title": title, "release_year": year, "genres": genres})
    return index


SAGA = [("iv", "Star Wars: Episode IV - A New Hope", 1977, ["Sci-Fi"]),
        ("v", "Star Wars: Episode V - The Empire Strikes Back", 1980, ["Sci-Fi"]),
        ("vi", "Star Wars: Episode VI - Return of the Jedi", 1983, ["Sci-Fi"]),
        ("i", "Star Wars: Episode I - The Phantom Menace", 1999, ["Sci-Fi"]),
        ("x", "Raiders of the Lost Ark", 1981, ["Action"])]


def test_series_members_next_two_releases_then_the_previous_one():
    index = _catalogue(*SAGA)
    assert index.series_members("iv") == ["v", "vi", "i"]
    assert index.series_members("vi") == ["i", "v", "iv"]
    assert index.series_members("v") == ["vi", "i", "iv"]
    assert index.series_members("x") == []


def test_a_remake_of_the_same_name_is_not_an_instalment():
    index = _catalogue(("a", "Hamlet", 1990, []), ("b", "Hamlet", 1996, []), ("c", "Hamlet 2", 2008, []))
    assert index.series_members("a") == ["c"]


def test_series_first_puts_the_sequels_at_the_head_and_keeps_the_rest():
    index = _catalogue(*SAGA)
    items = [("x", 0.9), ("vi", 0.5), ("m", 0.4)]
    out = series_first("iv", items, index, k=10, slots=2)
    assert [o for o, _ in out] == ["v", "vi", "x", "m"]
    assert [s for _, s in out] == sorted((s for _, s in out), reverse=True)
    assert series_first("iv", items, None) == items
    assert series_first("iv", items, index, slots=0) == items


def test_series_members_follow_catalogue_removal():
    index = _catalogue(*SAGA)
    index.remove("v")
    assert index.series_members("iv") == ["vi", "i"]
    assert index.series_members("i") == ["vi", "iv"]


def test_is_kids():
    assert is_kids({"genres": ["Animation", "Children"]})
    assert is_kids({"kids": True, "genres": []})
    assert is_kids({"genres": ["Семейный"]})
    assert not is_kids({"genres": ["Animation", "Drama"]})
    assert not is_kids({"genres": None})


def _kids_catalogue():
    rows = [("k0", ["Children"]), ("a1", ["Drama"]), ("a2", ["Crime"]), ("k3", ["Children"]), ("a4", ["Drama"]),
            ("a5", ["Thriller"]), ("k6", ["Children", "Animation"]), ("k7", ["Children"])]
    return _catalogue(*[(i, f"T {i}", 2000, g) for i, g in rows])


def test_kids_first_holds_half_childrens_titles_in_every_head():
    index = _kids_catalogue()
    items = [("a1", 0.9), ("a2", 0.8), ("a4", 0.7), ("a5", 0.6), ("k3", 0.5)]
    out = kids_first("k0", items, index, fill=[("k6", 0.3), ("a1", 0.2), ("k7", 0.1)], k=10, head=6)
    names = [o for o, _ in out]
    for n in range(1, 7):
        assert sum(o in index.kids for o in names[:n]) >= n // 2, names
    assert set(names) == {"a1", "a2", "a4", "a5", "k3", "k6", "k7"}
    assert [o for o in names if not o.startswith("k")] == ["a1", "a2", "a4", "a5"]  # relative order kept
    assert [s for _, s in out] == sorted((s for _, s in out), reverse=True)


def test_kids_first_leaves_other_lists_alone():
    index = _kids_catalogue()
    items = [("a2", 0.9), ("a4", 0.8)]
    assert kids_first("a1", items, index, fill=[("k3", 1.0)]) == items
    assert kids_first("k0", items, index, share=0.0) == items


def test_arrange_is_deterministic_and_applies_both_rules():
    index = _catalogue(("t1", "Toy Story", 1995, ["Children"]), ("t2", "Toy Story 2", 1999, ["Children"]),
                       ("p", "Pulp Fiction", 1994, ["Crime"]), ("f", "Forrest Gump", 1994, ["Drama"]),
                       ("l", "Lion King, The", 1994, ["Children"]))
    items = [("p", 0.9), ("f", 0.8), ("l", 0.2)]
    out = arrange("t1", items, index, [("l", 0.5)], k=10)
    assert out[0][0] == "t2"
    assert [o for o, _ in out[:2]].count("p") + [o for o, _ in out[:2]].count("f") <= 1
    assert out == arrange("t1", list(items), index, [("l", 0.5)], k=10)


def test_asymmetric_measure():
    assert pair_score("asymmetric", 2.0, 4.0, 4.0, 0.0, alpha=0.5) == pytest.approx(pair_score("cosine", 2.0, 4.0, 4.0, 0.0))
    # alpha > 0.5: a popular neighbour is penalised less than by cosine
    popular = pair_score("asymmetric", 2.0, 4.0, 100.0, 0.0, alpha=0.75)
    assert popular == pytest.approx(2.0 / (4.0 ** 0.75 * 100.0 ** 0.25))
    assert popular > pair_score("cosine", 2.0, 4.0, 100.0, 0.0)
    assert pair_score("asymmetric", 0.0, 4.0, 4.0, 0.0) == 0.0
    with pytest.raises(ValueError):
        SimilarityConfig(measure="asymmetric", alpha=1.5)


def test_top_similar_with_the_asymmetric_measure_ranks_by_it():
    state = {"L": 0, "n": 4.0, "nb": {"pop": 2.0, "niche": 1.0}, "err": 0.0, "t": 0}
    counts = {"pop": 100.0, "niche": 1.0}
    config = SimilarityConfig(measure="asymmetric", alpha=0.75, min_support=0.5)
    ranked = top_similar(state, counts.get, 0.0, 0, None, config)
    assert [o for o, _ in ranked] == ["niche", "pop"]
    assert ranked[0][1] == pytest.approx(1.0 / (4.0 ** 0.75))
