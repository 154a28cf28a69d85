"""Table-driven tests, one table per named business rule (processors/showcase/rules.py)."""
from __future__ import annotations

import pytest

from processors.showcase import ShelfDef, ShowcaseInputError, ShowcasePolicy
from processors.showcase.model import Audience, ShelfLink, ShelfRule, Viewer
from processors.showcase.rules import (
    age_limit_allows,
    apply_boost,
    audience_of,
    auto_rule_matches,
    big_screen_only,
    content_key,
    dedupe_across_shelves,
    device_rights_allow,
    editorial_first,
    fill_auto_shelf,
    guest_allowed,
    kids_allowed,
    licence_active,
    link_valid,
    min_items,
    place_in_template,
    series_has_new_content,
    shelf_length,
    shelf_meets_minimum,
    shelf_targets,
    showcase_meets_minimum,
    sign_language_to_end,
    take_unseen,
    title_eligible,
    visible_items,
)
from processors.showcase.version import compare_versions, parse_version

from support.showcase import DAY, NOW, rule, shelf_dict, title

# -- device-dependent sizes and minimums --------------------------------------------------------

CUSTOM = ShowcasePolicy(shelf_length={"TV": 7, "MOBILE": 4, "TABLET": 5, "WEB": 9, "STB": 6})


@pytest.mark.parametrize(
    "policy, device, expected",
    [(ShowcasePolicy(), d, ShowcasePolicy().shelf_length[d]) for d in ("TV", "STB", "MOBILE", "TABLET", "WEB")]
    + [(CUSTOM, "TV", 7), (CUSTOM, "MOBILE", 4), (CUSTOM, "WEB", 9)],
)
def test_shelf_length_depends_on_device(policy, device, expected):
    assert shelf_length(device, policy) == expected


def test_default_lengths_differ_between_big_and_small_screens():
    policy = ShowcasePolicy()
    assert shelf_length("TV", policy) == shelf_length("STB", policy)
    assert shelf_length("MOBILE", policy) < shelf_length("TV", policy) < shelf_length("WEB", policy)
    for device in ("TV", "MOBILE", "WEB"):
        assert visible_items(device, policy) <= shelf_length(device, policy)


@pytest.mark.parametrize(
    "kind, count, ok",
    [
        ("VOD", 4, False), ("VOD", 5, True), ("AUTO", 0, False), ("ML_FOR_YOU", 5, True),
        ("BANNER_CAROUSEL", 2, False), ("BANNER_CAROUSEL", 3, True),
        ("CONTINUE_WATCHING", 0, False), ("CONTINUE_WATCHING", 1, True),
        ("FAVOURITE_CHANNELS", 1, True), ("SUPER_SHELF", 1, False), ("SUPER_SHELF", 2, True),
    ],
)
def test_shelf_minimum(kind, count, ok):
    assert shelf_meets_minimum(kind, count) is ok


def test_shelf_minimum_follows_policy():
    policy = ShowcasePolicy(min_titles_per_shelf=8)
    assert min_items("VOD", policy) == 8
    assert not shelf_meets_minimum("VOD", 7, policy)
    assert shelf_meets_minimum("CONTINUE_WATCHING", 1, policy)


@pytest.mark.parametrize("count, minimum, ok", [(3, 4, False), (4, 4, True), (0, 1, False), (10, 4, True)])
def test_showcase_minimum(count, minimum, ok):
    assert showcase_meets_minimum(count, ShowcasePolicy(min_shelves=minimum)) is ok


# -- app version compare and targeting ----------------------------------------------------------

@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("1.2", "1.2.0", 0), ("1.10", "1.9", 1), ("2.0.0", "10.0", -1), ("v2.0", "2.0.0", 0),
        ("3.1.0-beta", "3.1.0", -1), ("1.0.0-alpha", "1.0.0-alpha.1", -1), ("1.0.0-alpha.2", "1.0.0-alpha.10", -1),
        ("1.0.0-2", "1.0.0-alpha", -1), ("1.0.0+build.7", "1.0.0", 0), ("4", "3.99.99", 1),
    ],
)
def test_version_compare(a, b, expected):
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


@pytest.mark.parametrize("bad", ["", "abc", "1..2", "1.2.x", "1.2-", "-1.0"])
def test_bad_version_is_a_clear_error(bad):
    with pytest.raises(ShowcaseInputError) as info:
        parse_version(bad)
    assert info.value.code == "invalid_version"


def _targeted(**kw) -> ShelfDef:
    return ShelfDef.from_dict(shelf_dict("s", "VOD", **kw))


@pytest.mark.parametrize(
    "shelf, device, app, shown",
    [
        ({}, "TV", None, True),
        ({"device_types": ["TV", "STB"]}, "TV", "1.0", True),
        ({"device_types": ["TV", "STB"]}, "MOBILE", "1.0", False),
        ({"min_app_version": "3.2.0"}, "MOBILE", "3.2", True),
        ({"min_app_version": "3.2.0"}, "MOBILE", "3.1.9", False),
        ({"min_app_version": "3.2.0"}, "MOBILE", "3.2.0-rc.1", False),
        ({"max_app_version": "2.9.9"}, "WEB", "2.9.9", True),
        ({"max_app_version": "2.9.9"}, "WEB", "3.0", False),
        ({"min_app_version": "2.0", "max_app_version": "3.0"}, "TV", "2.5.1", True),
        ({"min_app_version": "3.2.0"}, "MOBILE", None, False),  # unknown client: no version-bound shelves
        ({"device_types": ["MOBILE"], "min_app_version": "3.2.0"}, "TV", "4.0", False),
    ],
)
def test_shelf_targeting(shelf, device, app, shown):
    key = parse_version(app) if app else None
    assert shelf_targets(_targeted(**shelf), device, key) is shown


# -- per-title eligibility ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "start, end, active",
    [
        (None, None, True), (NOW - DAY, None, True), (NOW + DAY, None, False), (None, NOW - DAY, False),
        (None, NOW, False), (NOW, None, True), (NOW - 2 * DAY, NOW + DAY, True),
    ],
)
def test_licence_window(start, end, active):
    assert licence_active(title("t", licence_start=start, licence_end=end), NOW) is active


@pytest.mark.parametrize(
    "rights, device, allowed, big_only",
    [
        ([], "MOBILE", True, False), (["TV", "STB"], "TV", True, True), (["TV", "STB"], "STB", True, True),
        (["TV", "STB"], "MOBILE", False, True), (["TV", "STB"], "WEB", False, True),
        (["MOBILE", "TABLET"], "TV", False, False), (["MOBILE", "TABLET"], "TABLET", True, False),
    ],
)
def test_device_rights(rights, device, allowed, big_only):
    t = title("t", device_rights=rights)
    assert device_rights_allow(t, device) is allowed
    assert big_screen_only(t) is big_only


@pytest.mark.parametrize(
    "adult, genres, guest, allowed",
    [
        (True, ["drama"], True, False), (True, ["drama"], False, True), (False, ["adult"], True, False),
        (False, ["Adult", "romance"], True, False), (False, ["drama"], True, True), (False, ["adult"], False, True),
    ],
)
def test_guest_adult_filter(adult, genres, guest, allowed):
    assert guest_allowed(title("t", adult=adult, genres=genres, age_rating=18), guest) is allowed


@pytest.mark.parametrize(
    "rating, limit, allowed", [(18, None, True), (18, 16, False), (16, 16, True), (0, 0, True), (6, 0, False), (12, 18, True)]
)
def test_request_age_limit(rating, limit, allowed):
    assert age_limit_allows(title("t", age_rating=rating), limit) is allowed


@pytest.mark.parametrize(
    "kids_mode, is_kids_title, tags, drop_educational, allowed",
    [
        (False, False, [], False, True),
        (True, False, [], False, False),  # a 0+ documentary is not a kids title
        (True, True, [], True, True),
        (True, True, ["educational"], False, True),  # 0+ viewer keeps educational titles
        (True, True, ["educational"], True, False),  # above 0+ they go
        (True, True, ["Развивающие"], True, False),
        (False, True, ["educational"], True, True),  # adult showcase is not touched
    ],
)
def test_kids_rules(kids_mode, is_kids_title, tags, drop_educational, allowed):
    t = title("t", kids=is_kids_title, tags=tags, age_rating=0)
    assert kids_allowed(t, kids_mode, drop_educational) is allowed


@pytest.mark.parametrize(
    "user, kids, limit, expected",
    [
        ("u1", False, None, ("adult", False, None, False)),
        (None, False, 18, ("guest", True, None, False)),
        ("u1", False, 14, ("adult", False, 12, False)),
        ("u1", True, 3, ("kids", False, 0, False)),
        ("u1", True, 0, ("kids", False, 0, False)),
        ("u1", True, 6, ("kids", False, 6, True)),
        ("u1", True, None, ("kids", False, ShowcasePolicy().kids_default_age_limit, True)),
    ],
)
def test_audience_of_viewer(user, kids, limit, expected):
    audience = audience_of(Viewer(user_id=user, device_type="TV", now=NOW, age_limit=limit, is_kids=kids))
    assert (audience.label, audience.guest, audience.age_limit, audience.drop_educational) == expected


@pytest.mark.parametrize(
    "overrides, audience, eligible",
    [
        ({}, Audience("TV", False, None, False, False), True),
        ({"licence_end": NOW - DAY}, Audience("TV", False, None, False, False), False),
        ({"device_rights": ["TV"]}, Audience("MOBILE", False, None, False, False), False),
        ({"adult": True, "age_rating": 18}, Audience("TV", True, None, False, False), False),
        ({"age_rating": 16}, Audience("TV", False, 12, False, False), False),
        ({"kids": True, "age_rating": 6}, Audience("TV", False, 6, True, True), True),
        ({"kids": True, "age_rating": 12}, Audience("TV", False, 6, True, True), False),
    ],
)
def test_title_eligibility_composes_the_filters(overrides, audience, eligible):
    assert title_eligible(title("t", **overrides), audience, NOW) is eligible


# -- shelf content rules ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "picks, ml, expected",
    [
        (["a", "b"], ["c", "d"], ("a", "b", "c", "d")),
        (["a", "b"], ["b", "c", "a"], ("a", "b", "c")),
        ([], ["c", "d"], ("c", "d")),
        (["x"], [], ("x",)),
    ],
)
def test_editorial_picks_first(picks, ml, expected):
    assert editorial_first(picks, ml) == expected


@pytest.mark.parametrize(
    "items, blocked, limit, expected",
    [
        (["a", "b", "c"], set(), 2, ["a", "b"]),
        (["a", "b", "c", "d"], {"a", "c"}, 5, ["b", "d"]),
        (["a"], set(), 0, []),
    ],
)
def test_take_unseen(items, blocked, limit, expected):
    assert take_unseen(items, blocked, limit) == expected


@pytest.mark.parametrize(
    "shelves, visible, expected",
    [
        ([["a", "b", "c", "d"], ["b", "e", "a", "f"]], 2, [["a", "b", "c", "d"], ["e", "f"]]),
        ([["a", "b", "c", "d"], ["b", "e", "a", "f"]], 1, [["a", "b", "c", "d"], ["b", "e", "f"]]),
        # c is outside the upper visible area, so the lower shelf may show it
        ([["a", "b", "c"], ["c", "d"]], 2, [["a", "b", "c"], ["c", "d"]]),
        # the lower shelf's visible area is computed after hiding: e moves into view and blocks shelf 3
        ([["a", "b"], ["a", "e", "x"], ["e", "y"]], 2, [["a", "b"], ["e", "x"], ["y"]]),
    ],
)
def test_cross_shelf_dedupe_in_visible_area(shelves, visible, expected):
    assert dedupe_across_shelves(shelves, visible) == expected


@pytest.mark.parametrize(
    "items, boosted, ctr, expected_items, on, off",
    [
        (["a", "b", "c"], set(), {}, ["a", "b", "c"], (), ()),
        # new boosted title without CTR: moves first
        (["a", "b", "n"], {"n"}, {"a": 0.5, "b": 0.5}, ["n", "a", "b"], ("n",), ()),
        # CTR at the guard threshold (mean 0.5 - delta 0.25) keeps the boost
        (["a", "b", "n"], {"n"}, {"a": 0.5, "b": 0.5, "n": 0.25}, ["n", "a", "b"], ("n",), ()),
        # CTR below mean - delta: boost switched off, order untouched
        (["a", "b", "n"], {"n"}, {"a": 0.5, "b": 0.5, "n": 0.2}, ["a", "b", "n"], (), ("n",)),
        # only the visible window counts for the mean (c is outside the window of 2)
        (["a", "b", "c", "n"], {"n"}, {"a": 0.25, "b": 0.25, "c": 1.0, "n": 0.125}, ["n", "a", "b", "c"], ("n",), ()),
        # two boosted: relative order kept, each judged alone
        (["a", "m", "b", "n"], {"m", "n"}, {"a": 0.5, "b": 0.5, "m": 0.0}, ["n", "a", "m", "b"], ("n",), ("m",)),
        # no CTR data at all: boost stays on
        (["a", "b", "n", "m"], {"n", "m"}, {}, ["n", "m", "a", "b"], ("n", "m"), ()),
    ],
)
def test_boost_with_ctr_guard(items, boosted, ctr, expected_items, on, off):
    result, applied, switched_off = apply_boost(items, boosted, ctr, visible=2, delta=0.25)
    assert (result, applied, switched_off) == (expected_items, on, off)


_SL_KEYS = {"a": "k1", "a-sl": "k1", "b": "k2", "c-sl": "k3", "d-sl": "k4", "d2-sl": "k4"}


@pytest.mark.parametrize(
    "items, expected",
    [
        (["a-sl", "b", "a"], ["b", "a", "a-sl"]),  # duplicate of a: to the end
        (["a", "a-sl", "b"], ["a", "b", "a-sl"]),
        (["c-sl", "a", "b"], ["c-sl", "a", "b"]),  # no other version in the shelf: stays
        (["d-sl", "a", "d2-sl", "b"], ["d-sl", "a", "b", "d2-sl"]),  # second sign-language copy moves
        (["a", "b"], ["a", "b"]),
    ],
)
def test_sign_language_duplicates_go_to_the_end(items, expected):
    assert sign_language_to_end(items, {"a-sl", "c-sl", "d-sl", "d2-sl"}, _SL_KEYS.__getitem__) == expected


def test_content_key_matches_sign_language_version():
    original = title("m1", title="The Hidden River", original_title="The Hidden River", release_year=2011)
    signed = title("m1-sl", title="The Hidden River (sign language)", original_title="The Hidden River", release_year=2011, tags=["sign language"])
    renamed = title("m2", title="The Hidden River (сурдоперевод)", original_title="", release_year=2011)
    remake = title("m3", title="The Hidden River", original_title="The Hidden River", release_year=2023)
    assert content_key(original) == content_key(signed) == content_key(renamed)
    assert content_key(remake) != content_key(original)


@pytest.mark.parametrize(
    "last, latest, mode, back",
    [
        ((1, 5), (1, 5), "NEW_EPISODE", False),
        ((1, 5), (1, 6), "NEW_EPISODE", True),
        ((1, 5), (2, 1), "NEW_EPISODE", True),
        ((1, 5), (1, 6), "NEW_SEASON", False),
        ((1, 5), (2, 1), "NEW_SEASON", True),
        ((2, 3), (1, 9), "NEW_EPISODE", False),
        ((1, 1), None, "NEW_EPISODE", False),
    ],
)
def test_series_come_back_with_new_content(last, latest, mode, back):
    assert series_has_new_content(last, latest, mode) is back


@pytest.mark.parametrize(
    "link, valid",
    [
        (ShelfLink("COLLECTION", "big"), True),
        (ShelfLink("COLLECTION", "small"), False),
        (ShelfLink("COLLECTION", "missing"), False),
        (ShelfLink("TITLE", "ok"), True),
        (ShelfLink("TITLE", "expired"), False),
        (ShelfLink("WEB", "https://example.org/subscribe"), True),
        (ShelfLink("PODCAST", "x"), False),
    ],
)
def test_super_shelf_cover_validity(link, valid):
    sizes = {"big": 12, "small": 2}
    assert link_valid(link, lambda s: sizes.get(s, 0), lambda i: i == "ok", minimum=5) is valid


# -- auto-shelves ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "rule, overrides, matches",
    [
        (ShelfRule(), {}, True),
        (ShelfRule(genres=frozenset({"comedy"})), {"genres": ["Drama", "Comedy"]}, True),
        (ShelfRule(genres=frozenset({"comedy"})), {"genres": ["drama"]}, False),
        (ShelfRule(tags=frozenset({"4k"})), {"tags": ["4K", "hdr"]}, True),
        (ShelfRule(tags=frozenset({"4k"})), {"tags": []}, False),
        (ShelfRule(min_year=2020), {"release_year": 2019}, False),
        (ShelfRule(min_year=2020), {"release_year": None}, False),
        (ShelfRule(min_year=2020), {"release_year": 2020}, True),
        (ShelfRule(max_age_rating=12), {"age_rating": 16}, False),
        (ShelfRule(kids_only=True), {"kids": False}, False),
        (ShelfRule(kids_only=True), {"kids": True, "age_rating": 0}, True),
    ],
)
def test_auto_rule_filter(rule, overrides, matches):
    assert auto_rule_matches(title("t", **overrides), rule) is matches


def test_auto_fill_sorts_limits_and_skips_episodes_and_dead_licences():
    titles = [
        title("old", release_year=1990, rating=9.0),
        title("new", release_year=2024, rating=5.0),
        title("mid", release_year=2010, rating=None),
        title("gone", release_year=2024, licence_end=NOW - DAY),
        title("later", release_year=2024, licence_start=NOW + DAY),
        title("ep", release_year=2024, series_id="s", season=1, episode=1),
    ]
    popularity = {"old": 1.0, "new": 3.0, "mid": 2.0, "gone": 100.0, "ep": 100.0}
    assert fill_auto_shelf(ShelfRule(sort="POPULAR"), titles, popularity, NOW) == ("new", "mid", "old")
    assert fill_auto_shelf(ShelfRule(sort="NEWEST"), titles, popularity, NOW) == ("new", "mid", "old")
    assert fill_auto_shelf(ShelfRule(sort="RATING"), titles, popularity, NOW) == ("old", "new", "mid")
    assert fill_auto_shelf(ShelfRule(sort="RATING", limit=1), titles, popularity, NOW) == ("old",)


# -- template placement ---------------------------------------------------------------------------

def _defs(*specs: tuple) -> list[ShelfDef]:
    return [
        ShelfDef.from_dict(shelf_dict(sid, kind, template_slot=slot, item_ids=["x"], rule={} if kind == "AUTO" else None))
        for sid, kind, slot in specs
    ]


@pytest.mark.parametrize(
    "specs, affinity, expected",
    [
        # fixed slots 1-3 whatever the input order; ML before VOD; super-shelves last
        (
            [("sup", "SUPER_SHELF", None), ("v1", "VOD", None), ("fav", "FAVOURITE_CHANNELS", None),
             ("ml", "ML_FOR_YOU", None), ("cw", "CONTINUE_WATCHING", None), ("ban", "BANNER_CAROUSEL", None)],
            None,
            ["ban", "cw", "fav", "ml", "v1", "sup"],
        ),
        # editor pin at slot 2 pushes continue watching down one slot
        (
            [("ban", "BANNER_CAROUSEL", None), ("cw", "CONTINUE_WATCHING", None), ("pin", "VOD", 2), ("v1", "VOD", None)],
            None,
            ["ban", "pin", "cw", "v1"],
        ),
        # free VOD shelves follow the user's affinity; ties keep editorial order
        (
            [("v1", "VOD", None), ("v2", "AUTO", None), ("v3", "VOD", None), ("ml", "ML_WATCH_ALSO", None)],
            {"v3": 0.9, "v2": 0.1},
            ["ml", "v3", "v2", "v1"],
        ),
        # a pin far beyond the end lands after everything else
        ([("v1", "VOD", None), ("late", "VOD", 40)], None, ["v1", "late"]),
        # a pin in the middle keeps its slot between free shelves
        ([("v1", "VOD", None), ("v2", "VOD", None), ("v3", "VOD", None), ("p", "ORIGINALS_BANNER", 2)], None, ["v1", "p", "v2", "v3"]),
    ],
)
def test_template_placement(specs, affinity, expected):
    assert [d.shelf_id for d in place_in_template(_defs(*specs), affinity)] == expected


def test_nightly_fill_of_600_auto_shelves_out_of_1000():
    import random

    from processors.showcase import fill_auto_shelves
    from demo.showcase_sample import GENRES, TAGS, generate_catalogue, generate_stats

    raw = generate_catalogue(1500, seed=5, now=NOW)
    titles = [title(t["item_id"], **{k: v for k, v in t.items() if k != "item_id"}) for t in raw]
    popularity = generate_stats(raw, seed=5).popularity
    rng = random.Random(5)
    defs = []
    for n in range(1000):
        if n % 5 < 3:
            spec = rule(
                genres=rng.sample(GENRES, rng.randint(0, 2)), tags=rng.sample(TAGS, rng.randint(0, 1)),
                min_year=rng.choice([None, 2000, 2015]), max_age_rating=rng.choice([None, 12, 16]),
                sort=rng.choice(["POPULAR", "NEWEST", "RATING"]), limit=rng.choice([20, 60, 100]),
            )
            defs.append(ShelfDef.from_dict(shelf_dict(f"auto{n}", "AUTO", rule=spec)))
        else:
            defs.append(ShelfDef.from_dict(shelf_dict(f"ed{n}", "VOD", item_ids=[raw[n]["item_id"]])))
    fills = fill_auto_shelves(defs, titles, popularity, NOW)
    assert len(fills) == 600 and all(k.startswith("auto") for k in fills)
    by_id = {t["item_id"]: t for t in raw}
    for shelf in defs[:50]:
        if shelf.rule is None:
            continue
        r = shelf.rule
        expected = [
            t for t in raw
            if t["episode"] is None
            and (t["licence_start"] is None or t["licence_start"] <= NOW)
            and (t["licence_end"] is None or NOW < t["licence_end"])
            and (not r.genres or r.genres & set(t["genres"]))
            and (not r.tags or r.tags & set(t["tags"]))
            and (r.min_year is None or (t["release_year"] or 0) >= r.min_year)
            and (r.max_age_rating is None or t["age_rating"] <= r.max_age_rating)
        ]
        got = fills[shelf.shelf_id]
        assert len(got) == min(r.limit, len(expected))
        assert set(got) <= {t["item_id"] for t in expected}
        if r.sort == "POPULAR":
            values = [popularity.get(i, 0.0) for i in got]
            assert values == sorted(values, reverse=True)
        elif r.sort == "NEWEST":
            years = [by_id[i]["release_year"] for i in got]
            assert years == sorted(years, reverse=True)
