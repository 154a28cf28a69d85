from __future__ import annotations

import pytest

from processors.coview.coldstart import MetadataIndex, blend, blend_weight, normalise_title, title_tokens
from processors.coview.memory import CoviewIndex
from processors.coview.sessionize import ViewCompleted


def title(item_id, name, genres=(), tags=(), year=None, series=None, original=""):
    return {"item_id": item_id, "title": name, "original_title": original, "description": "",
            "genres": list(genres), "tags": list(tags), "release_year": year, "series_id": series}


CATALOGUE = [
    title("sw1", "Звёздные войны: Новая надежда", ["фантастика", "приключения"], ["космос"], 1977,
          original="Star Wars: A New Hope"),
    title("sw2", "Звёздные войны: Империя наносит ответный удар", ["фантастика", "приключения"], ["космос"], 1980,
          original="Star Wars: The Empire Strikes Back"),
    title("alien", "Чужой", ["фантастика", "ужасы"], ["космос"], 1979, original="Alien"),
    title("rom", "Римские каникулы", ["мелодрама", "комедия"], [], 1953, original="Roman Holiday"),
    title("com", "Один дома", ["комедия", "семейный"], ["новый год"], 1990, original="Home Alone"),
    title("com2", "Один дома 2", ["комедия", "семейный"], ["новый год"], 1992, original="Home Alone 2"),
    title("dup", "Чужой", ["фантастика", "ужасы"], ["космос"], 1979, original="Alien"),  # a re-upload
]


@pytest.fixture()
def index():
    built = MetadataIndex()
    for record in CATALOGUE:
        built.add_title(record)
    return built


def test_tokens_cover_fields_with_weights():
    tokens = title_tokens(CATALOGUE[0])
    assert tokens["w:звёздные"] == 1.0 and tokens["w:star"] == 1.0
    assert tokens["g:фантастика"] == 1.5 and tokens["t:космос"] == 1.0 and tokens["y:197"] == 0.5
    assert "w:a" not in tokens  # one-letter words and stop words carry nothing


# (new title with no co-view data, expected best match)
COLD_CASES = [
    (title("sw3", "Звёздные войны: Возвращение джедая", ["фантастика", "приключения"], [], 1983,
           original="Star Wars: Return of the Jedi"), {"sw1", "sw2"}),
    (title("com3", "Один дома 3", ["комедия", "семейный"], [], 1997, original="Home Alone 3"), {"com", "com2"}),
    (title("x", "Aliens", ["фантастика", "ужасы"], ["космос"], 1986), {"alien", "dup"}),
]


@pytest.mark.parametrize("new, expected", COLD_CASES)
def test_cold_title_gets_metadata_neighbours(index, new, expected):
    index.add_title(new)
    got = index.similar(new["item_id"], k=3)
    assert got, "a title with no co-view data must still get a list"
    assert {i for i, _ in got[: len(expected)]} == expected
    assert all(0.0 < s <= 1.0 + 1e-9 for _, s in got)
    assert new["item_id"] not in [i for i, _ in got]


def test_same_title_reuploads_are_not_offered_as_similar(index):
    got = [i for i, _ in index.similar("alien", k=5)]
    assert "dup" not in got and got  # Mail.Ru: search by name returned copies, not similar videos


def test_incremental_add_update_and_remove(index):
    before = index.idf("g:фантастика")
    index.add_title(title("sf", "Солярис", ["фантастика"], [], 1972))
    assert index.idf("g:фантастика") < before  # more titles share the genre: it says less
    index.add_title(title("sf", "Солярис", ["драма"], [], 2002))  # replace
    assert "sf" not in [i for i, _ in index.similar("alien", k=10)]
    index.remove("sf")
    assert "sf" not in index and len(index) == len(CATALOGUE)


def test_unknown_title_has_no_metadata_list(index):
    assert index.similar("nope") == []
    assert index.similar_to_tokens({"w:nothing": 1.0}) == []


@pytest.mark.parametrize(
    "support, prior, expected",
    [(0.0, 5.0, 0.0), (5.0, 5.0, 0.5), (15.0, 5.0, 0.75), (95.0, 5.0, 0.95), (3.0, 0.0, 1.0)],
)
def test_blend_weight(support, prior, expected):
    assert blend_weight(support, prior) == pytest.approx(expected)


def test_blend_moves_from_metadata_to_coview_as_support_grows():
    coview = [("c1", 0.8), ("c2", 0.4)]
    metadata = [("m1", 0.9), ("c2", 0.9)]
    assert blend(coview, metadata, 0.0, 5.0) == (metadata, "METADATA")
    assert blend([], metadata, 50.0, 5.0) == (metadata, "METADATA")
    assert blend(coview, [], 1.0, 5.0) == (coview, "COVIEW")
    mixed, source = blend(coview, metadata, 5.0, 5.0)  # equal weights
    assert source == "BLEND"
    scores = dict(mixed)
    assert scores["c2"] == pytest.approx(0.5 * 0.4 / 0.8 + 0.5 * 1.0)
    assert scores["c1"] == pytest.approx(0.5) and scores["m1"] == pytest.approx(0.5)
    assert mixed[0][0] == "c2"
    late, _ = blend(coview, metadata, 500.0, 5.0)
    assert [i for i, _ in late][:2] == ["c1", "c2"]


def test_served_list_for_a_title_without_co_views_is_metadata(index):
    coview = CoviewIndex()
    view = ViewCompleted("u:1", "s", "sw1", 1, 1, 1, 1_700_000_000_000, ())
    coview.add_view(view)
    served, source = coview.served("sw1", 1_700_000_000_000, index)
    assert source == "METADATA" and served[0][0] == "sw2"


def test_normalise_title():
    assert normalise_title("  Один  ДОМА-2 ") == "один дома 2"


def test_malformed_metadata_fields_are_skipped():
    tokens = title_tokens({"item_id": "x", "title": None, "genres": "Drama", "tags": [None, "space"],
                           "release_year": "1999"})
    assert tokens == {"t:space": 1.0}
