"""Assembly of whole showcases: realistic sample world for the audiences, hand-made worlds per rule."""
from __future__ import annotations

import random
import pytest

from processors.showcase import (
    CatalogueIndex,
    ShowcaseInputError,
    ShowcasePolicy,
    Stats,
    UserHistory,
    Viewer,
    assemble,
    build_pumpkin,
    daily_checks,
)
from demo.showcase_sample import generate_history, sample_world

from support.showcase import DAY, NOW, ids, rule, shelf_dict, title_dict, vod_world

TITLE_KINDS = {"BANNER_CAROUSEL", "VOD", "AUTO", "ORIGINALS_BANNER", "ML_FOR_YOU", "ML_WATCH_ALSO"}


@pytest.fixture(scope="module")
def world():
    return sample_world(1500, seed=11)


@pytest.fixture(scope="module")
def index(world):
    return world.index()


@pytest.fixture(scope="module")
def raw(world):
    return {t["item_id"]: t for t in world.titles}


def _open(t: dict, now=NOW) -> bool:
    return (t["licence_start"] is None or t["licence_start"] <= now) and (t["licence_end"] is None or now < t["licence_end"])


def _title_shelves(showcase):
    return [s for s in showcase.shelves if s.kind in TITLE_KINDS]


def _visible_ids(showcase, window):
    out = []
    for s in showcase.shelves:
        if s.kind in TITLE_KINDS or s.kind == "CONTINUE_WATCHING":
            out.extend(s.items[:window])
    return out


def _adult_history(world, raw, seed=5) -> UserHistory:
    rng = random.Random(seed)
    grown = [t for t in world.titles if not t["kids"] and not t["adult"] and _open(t) and t["episode"] is None]
    chosen = rng.sample(grown, 18)
    return UserHistory(
        continue_watching=tuple(t["item_id"] for t in chosen[:3]),
        watched=tuple(t["item_id"] for t in chosen[3:]),
        favourite_channels=("ch001", "ch007"),
    )


# -- audiences on the sample world ----------------------------------------------------------------

def test_logged_in_adult_on_tv(world, index, raw):
    history = _adult_history(world, raw)
    viewer = Viewer(user_id="u1", device_type="TV", now=NOW, app_version="3.4.1", age_limit=None)
    showcase = assemble(index, viewer, history)
    policy = index.policy
    assert not showcase.is_fallback and showcase.audience == "adult"
    kinds = [s.kind for s in showcase.shelves]
    assert kinds[:3] == ["BANNER_CAROUSEL", "CONTINUE_WATCHING", "FAVOURITE_CHANNELS"]
    assert showcase.shelves[3].shelf_id == "originals_big"  # pinned to slot 4 on big screens
    assert showcase.shelves[1].items == history.continue_watching
    assert showcase.shelves[2].items == history.favourite_channels
    assert {"ML_FOR_YOU", "ML_WATCH_ALSO"} <= set(kinds)
    shelf_ids = {s.shelf_id for s in showcase.shelves}
    assert not shelf_ids & {"web_picks", "legacy_popular", "super_subscription_ab", "originals"}
    assert not any(s.shelf_id.startswith("kids_") for s in showcase.shelves)
    assert len(showcase.shelves) <= policy.max_shelves["TV"]
    seen_by_user = set(history.watched) | set(history.continue_watching)
    for shelf in _title_shelves(showcase):
        assert policy.min_titles_per_shelf <= len(shelf.items) <= policy.shelf_length["TV"] or (
            shelf.kind == "BANNER_CAROUSEL" and len(shelf.items) >= 3
        )
        for item in shelf.items:
            t = raw[item]
            assert _open(t), item
            assert not t["device_rights"] or "TV" in t["device_rights"], item
            assert t["episode"] is None
            assert item not in seen_by_user
    visible = _visible_ids(showcase, policy.visible_items["TV"])
    assert len(visible) == len(set(visible)), "a title is visible twice"


def test_guest_on_mobile_sees_no_adult_and_no_personal_shelves(world, index, raw):
    viewer = Viewer(user_id=None, device_type="MOBILE", now=NOW, app_version="3.2.0")
    showcase = assemble(index, viewer, _adult_history(world, raw))  # history of a guest is ignored
    assert not showcase.is_fallback and showcase.audience == "guest"
    kinds = {s.kind for s in showcase.shelves}
    assert not kinds & {"CONTINUE_WATCHING", "FAVOURITE_CHANNELS", "ML_FOR_YOU", "ML_WATCH_ALSO"}
    assert "super_subscription_ab" in {s.shelf_id for s in showcase.shelves}  # MOBILE >= 3.2.0 A/B shelf
    adult_in_catalogue = [i for i, t in raw.items() if t["adult"] and _open(t)]
    assert adult_in_catalogue, "sample world must contain adult titles for this test to mean anything"
    for shelf in _title_shelves(showcase):
        assert len(shelf.items) <= index.policy.shelf_length["MOBILE"]
        for item in shelf.items:
            t = raw[item]
            assert not t["adult"] and "adult" not in t["genres"], item
            assert t["device_rights"] != ["TV", "STB"], item
    old_client = assemble(index, Viewer(user_id=None, device_type="MOBILE", now=NOW, app_version="3.0.1"))
    assert "super_subscription_ab" not in {s.shelf_id for s in old_client.shelves}


@pytest.mark.parametrize("age_limit", [0, 6, 12])
def test_kids_showcase_only_kids_titles(world, index, raw, age_limit):
    rng = random.Random(age_limit)
    history = generate_history(world.titles, rng, kids=True, size=8)
    viewer = Viewer(user_id="kid", device_type="TABLET", now=NOW, age_limit=age_limit, is_kids=True)
    showcase = assemble(index, viewer, history)
    assert not showcase.is_fallback and showcase.audience == "kids"
    assert showcase.shelves[0].shelf_id == "kids_banner"
    kids_defs = {d["shelf_id"] for d in world.shelf_defs if d["kids"]}
    assert {s.shelf_id for s in showcase.shelves} <= kids_defs
    items = [i for s in showcase.shelves for i in s.items]
    assert items
    educational = 0
    for item in items:
        t = raw[item]
        assert t["kids"], item
        assert t["age_rating"] <= age_limit, item
        educational += "educational" in t["tags"]
    if age_limit > 0:
        assert educational == 0
        assert "kids_little" not in {s.shelf_id for s in showcase.shelves}
    else:
        assert educational > 0  # 0+ viewers keep the educational titles


def test_age_limit_of_the_request_applies_to_adults(world, index, raw):
    showcase = assemble(index, Viewer(user_id="u2", device_type="WEB", now=NOW, age_limit=12), _adult_history(world, raw, 9))
    items = [i for s in _title_shelves(showcase) for i in s.items]
    assert items and all(raw[i]["age_rating"] <= 12 for i in items)


def test_same_inputs_same_showcase(world, index, raw):
    viewer = Viewer(user_id="u3", device_type="TV", now=NOW, app_version="3.4.1")
    history = _adult_history(world, raw, 3)
    a = assemble(index, viewer, history)
    b = assemble(world.index(ShowcasePolicy()), viewer, history)  # a freshly built index
    assert a.shelves == b.shelves


def test_daily_checks_on_sample_showcases(world, index, raw):
    viewer = Viewer(user_id="u4", device_type="TV", now=NOW, app_version="3.4.1")
    personal = assemble(index, viewer, _adult_history(world, raw, 4), run_checks=True)
    assert "no_personalisation" not in {a.code for a in personal.alarms}
    cold = assemble(index, viewer, UserHistory(), run_checks=True)
    assert "no_personalisation" in {a.code for a in cold.alarms}
    strict = ShowcasePolicy(max_paid_share=0.0, max_boosted_per_shelf=0, max_boosted_per_showcase=0)
    codes = {a.code for a in daily_checks(personal, index, strict)}
    assert "too_many_paid" in codes
    loose = ShowcasePolicy(max_paid_share=1.0)
    assert "too_many_paid" not in {a.code for a in daily_checks(personal, index, loose)}


# -- fallback ("pumpkin") ---------------------------------------------------------------------------

def _small_world() -> CatalogueIndex:
    titles = [title_dict(i, editorial_flags=["banner"]) for i in ids("b", 4)]
    titles += [title_dict(i) for i in ids("v", 8) + ids("c", 30)]
    defs = [
        shelf_dict("banner", "BANNER_CAROUSEL", item_ids=ids("b", 4)),
        shelf_dict("cw", "CONTINUE_WATCHING"),
        shelf_dict("fav", "FAVOURITE_CHANNELS"),
        shelf_dict("for_you", "ML_FOR_YOU"),
        shelf_dict("also", "ML_WATCH_ALSO"),
        shelf_dict("vod", "VOD", item_ids=ids("v", 8)),
    ]
    similar = {c: [(o, 1.0 / (1 + n)) for n, o in enumerate(ids("c", 30)) if o != c] for c in ids("c", 30)}
    return CatalogueIndex.build(titles, defs, Stats(), now=NOW, similar=similar)


def test_user_with_too_little_data_gets_the_pumpkin():
    index = _small_world()
    viewer = Viewer(user_id="new", device_type="TV", now=NOW)
    showcase = assemble(index, viewer, UserHistory())
    assert showcase.is_fallback and showcase.fallback_reason == "too_many_shelves_dropped"
    assert showcase.user_key == "new"
    alarm = next(a for a in showcase.alarms if a.code == "too_many_shelves_dropped")
    assert alarm.severity == "critical" and alarm.details["kept"] < index.policy.min_shelves
    pumpkin = build_pumpkin(index, None, "TV", now=NOW)
    assert showcase.shelves == pumpkin.shelves
    assert [s.shelf_id for s in pumpkin.shelves] == ["banner", "vod"]


def test_user_with_enough_data_is_not_a_fallback():
    index = _small_world()
    history = UserHistory(continue_watching=("c00",), watched=("c01", "c02"), favourite_channels=("ch1",))
    showcase = assemble(index, Viewer(user_id="fan", device_type="TV", now=NOW), history)
    assert not showcase.is_fallback
    by_id = {s.shelf_id: s for s in showcase.shelves}
    assert [s.shelf_id for s in showcase.shelves][:3] == ["banner", "cw", "fav"]
    assert by_id["for_you"].items and not set(by_id["for_you"].items) & {"c00", "c01", "c02"}
    also = by_id["also"].items
    assert not set(also) & ({"c00", "c01", "c02"} | set(by_id["for_you"].items[:6]))
    assert list(also) == sorted(also)  # similarity order of the last played title c00 (list is id-ordered)


def test_any_failure_gives_the_pumpkin_with_an_alarm():
    index = _small_world()
    broken_similar = {"c00": [("c01",)]}  # malformed pairs: unpacking fails inside the ML shelf
    history = UserHistory(continue_watching=("c00",), favourite_channels=("ch1",))
    showcase = assemble(index, Viewer(user_id="u", device_type="TV", now=NOW), history, similar=broken_similar)
    assert showcase.is_fallback and showcase.fallback_reason == "assembly_failed"
    assert showcase.alarms[0].code == "assembly_failed" and showcase.alarms[0].severity == "critical"
    assert [s.shelf_id for s in showcase.shelves] == ["banner", "vod"]


def test_wrong_argument_types_are_clear_errors():
    index = _small_world()
    with pytest.raises(ShowcaseInputError) as info:
        assemble(index, {"user_id": "u", "device_type": "TV"})
    assert info.value.code == "invalid_viewer"


def test_bad_ab_param_is_ignored_with_an_alarm():
    index = _small_world()
    showcase = assemble(index, Viewer(user_id=None, device_type="TV", now=NOW), params={"boost_ctr_delta": "lots"})
    assert "invalid_param" in {a.code for a in showcase.alarms}


def test_pumpkin_variants(world, index, raw):
    guest = build_pumpkin(index, None, "MOBILE", variant="guest", now=NOW)
    kids = build_pumpkin(index, None, "TV", variant="kids", now=NOW, age_limit=6)
    adult = build_pumpkin(world.titles, world.shelf_defs, "TV", now=NOW, stats=world.stats)
    for pumpkin in (guest, kids, adult):
        assert pumpkin.is_fallback and pumpkin.shelves
        assert not {s.kind for s in pumpkin.shelves} & {"CONTINUE_WATCHING", "FAVOURITE_CHANNELS", "ML_FOR_YOU", "ML_WATCH_ALSO"}
    assert all(not raw[i]["adult"] for s in guest.shelves for i in s.items)
    assert all(raw[i]["kids"] and raw[i]["age_rating"] <= 6 for s in kids.shelves for i in s.items)
    assert adult.shelves == build_pumpkin(index, None, "TV", now=NOW).shelves
    with pytest.raises(ShowcaseInputError):
        build_pumpkin(index, None, "TV", variant="vip", now=NOW)


# -- rules inside the assembly, on hand-made worlds ------------------------------------------------

def _shelves(showcase):
    return {s.shelf_id: s.items for s in showcase.shelves}


def test_cross_shelf_dedupe_keeps_upper_occurrence():
    a, b = ids("a", 12), ids("b", 12)
    index = vod_world({"s1": a, "s2": [a[1], a[2], a[9]] + b, "s3": a[:6], "s4": b[:6] + ids("z", 6)}, min_shelves=1)
    shown = _shelves(assemble(index, Viewer(user_id=None, device_type="TV", now=NOW)))
    window = index.policy.visible_items["TV"]
    assert shown["s1"] == tuple(a)
    assert a[1] not in shown["s2"] and a[2] not in shown["s2"]
    assert shown["s2"][0] == a[9]  # outside s1's visible area: allowed
    assert "s3" not in shown  # everything was visible above: shelf fell under the minimum
    assert not set(shown["s4"][:window]) & set(shown["s2"][:window])
    assert set(shown["s4"]) >= set(ids("z", 6))


def test_shelf_cut_to_device_length():
    index = vod_world({"long": ids("t", 30)}, min_shelves=1)
    for device in ("TV", "MOBILE", "TABLET", "WEB", "STB"):
        shown = _shelves(assemble(index, Viewer(user_id=None, device_type=device, now=NOW)))
        assert shown["long"] == tuple(ids("t", 30))[: index.policy.shelf_length[device]]


def test_licence_and_big_screen_rights_can_drop_a_shelf():
    titles = [title_dict(i, device_rights=["TV", "STB"]) for i in ids("big", 4)]
    titles += [title_dict(i, licence_end=NOW + 2 * DAY) for i in ids("soon", 3)]
    shelf = ids("big", 4) + ids("soon", 3) + ids("ok", 2)
    index = vod_world({"mixed": shelf, "filler": ids("f", 6)}, titles, min_shelves=1)
    tv = _shelves(assemble(index, Viewer(user_id="u", device_type="TV", now=NOW)))
    assert tv["mixed"] == tuple(shelf)
    mobile = _shelves(assemble(index, Viewer(user_id="u", device_type="MOBILE", now=NOW)))
    assert mobile["mixed"] == tuple(ids("soon", 3) + ids("ok", 2))
    later = assemble(index, Viewer(user_id="u", device_type="MOBILE", now=NOW + 3 * DAY))  # licences ended
    assert "mixed" not in _shelves(later)
    assert ("mixed", "below_minimum") in {(d.shelf_id, d.reason) for d in later.dropped}
    back = _shelves(assemble(index, Viewer(user_id="u", device_type="TV", now=NOW)))  # caches follow the clock
    assert back["mixed"] == tuple(shelf)


def test_boost_moves_first_unless_ctr_guard_switches_it_off():
    shelf = ids("t", 8) + ["new"]
    titles = [title_dict("new", boost=True)]
    ctr = {i: 0.10 for i in ids("t", 8)}
    index = vod_world({"s": shelf}, titles, ctr=ctr, min_shelves=1)
    viewer = Viewer(user_id="u", device_type="TV", now=NOW)
    fresh = assemble(index, viewer)  # no CTR yet for the new title: boosted
    assert fresh.shelves[0].items[0] == "new" and fresh.shelves[0].meta["boosted"] == ("new",)
    weak = assemble(index, viewer, ctr={**ctr, "new": 0.05})  # 0.05 < 0.10 - 0.02
    assert weak.shelves[0].items[-1] == "new" and weak.shelves[0].meta["boost_off"] == ("new",)
    fine = assemble(index, viewer, ctr={**ctr, "new": 0.09})
    assert fine.shelves[0].items[0] == "new"
    lenient = assemble(index, viewer, ctr={**ctr, "new": 0.05}, params={"boost_ctr_delta": "0.06"})
    assert lenient.shelves[0].items[0] == "new"


def test_editorial_picks_first_then_ml_and_ranking():
    titles = [title_dict(i, genres=["comedy"]) for i in ids("c", 20)]
    titles += [title_dict("e1"), title_dict("e0")]
    defs = [shelf_dict("auto", "AUTO", item_ids=["e1", "e0"], rule=rule(genres=["comedy"]))]
    ranking = {"c07": 0.9, "c03": 0.8}
    index = vod_world({"picks": ids("p", 6)}, titles, extra_shelves=defs, min_shelves=1)
    viewer = Viewer(user_id="u", device_type="MOBILE", now=NOW)
    plain = _shelves(assemble(index, viewer))
    assert plain["auto"][:2] == ("e1", "e0")  # editorial picks first, then the nightly fill
    assert set(plain["auto"][2:]) <= set(ids("c", 20))
    ranked = _shelves(assemble(index, viewer, ranking=ranking))
    assert ranked["auto"][:4] == ("e1", "e0", "c07", "c03")


def test_ml_shelf_editorial_pick_before_model_results():
    titles = [title_dict(i) for i in ids("c", 12)]
    similar = {"c00": [(o, 1.0 - n / 20) for n, o in enumerate(ids("c", 12, 1))]}
    defs = [shelf_dict("for_you", "ML_FOR_YOU", item_ids=["orig"])]
    index = vod_world({"filler": ids("f", 6)}, titles + [title_dict("orig")], extra_shelves=defs, similar=similar, min_shelves=1)
    shown = _shelves(assemble(index, Viewer(user_id="u", device_type="TV", now=NOW), UserHistory(watched=("c00",))))
    assert shown["for_you"][0] == "orig"
    assert set(shown["for_you"][1:]) <= set(ids("c", 12, 1))
    assert "c00" not in shown["for_you"]


def test_watched_removed_and_series_return_on_new_episode():
    titles = [title_dict("ser", series_id="ser")]
    for ep in range(1, 5):
        start = NOW + 3 * DAY if ep == 4 else NOW - 30 * DAY
        titles.append(title_dict(f"ser-e{ep}", series_id="ser", season=1, episode=ep, licence_start=start))
    shelf = ["ser", "movie", "cw"] + ids("t", 6)
    index = vod_world({"s": shelf}, titles, min_shelves=1)
    history = UserHistory(continue_watching=("cw",), watched=("movie", "ser-e3"))
    now_items = _shelves(assemble(index, Viewer(user_id="u", device_type="TV", now=NOW), history))["s"]
    assert not {"ser", "movie", "cw"} & set(now_items)
    later = Viewer(user_id="u", device_type="TV", now=NOW + 4 * DAY)
    assert _shelves(assemble(index, later, history))["s"][0] == "ser"  # episode 4 is out: back
    season_mode = _shelves(assemble(index, later, history, params={"series_return": "NEW_SEASON"}))["s"]
    assert "ser" not in season_mode
    explicit = UserHistory(series_progress={"ser": (1, 4)})
    assert "ser" not in _shelves(assemble(index, later, explicit))["s"]


def test_sign_language_duplicate_goes_to_shelf_end():
    titles = [
        title_dict("film", title="Blue Harbour", original_title="Blue Harbour", release_year=2019),
        title_dict("film-sl", title="Blue Harbour (sign language)", original_title="Blue Harbour", release_year=2019, tags=["sign language"]),
        title_dict("solo-sl", title="Quiet Road", original_title="Quiet Road", tags=["sign language"]),
    ]
    index = vod_world({"s": ["film-sl", "solo-sl", "film"] + ids("t", 5)}, titles, min_shelves=1)
    items = _shelves(assemble(index, Viewer(user_id=None, device_type="WEB", now=NOW)))["s"]
    assert items[-1] == "film-sl" and items[0] == "solo-sl" and items.index("film") < items.index("film-sl")


def test_super_shelf_covers_checked():
    links = [
        {"kind": "COLLECTION", "target": "big", "cover": "1.jpg"},
        {"kind": "COLLECTION", "target": "tiny", "cover": "2.jpg"},
        {"kind": "TITLE", "target": "gone", "cover": "3.jpg"},
        {"kind": "WEB", "target": "https://example.org", "cover": "4.jpg"},
    ]
    titles = [title_dict("gone", licence_end=NOW - DAY)]
    extra = [shelf_dict("super", "SUPER_SHELF", links=links), shelf_dict("lonely", "SUPER_SHELF", links=links[1:3])]
    index = vod_world({"big": ids("b", 8), "tiny": ids("t", 2), "x": ["gone"]}, titles, extra_shelves=extra, min_shelves=1)
    showcase = assemble(index, Viewer(user_id=None, device_type="TV", now=NOW))
    shown = {s.shelf_id: s for s in showcase.shelves}
    assert [l.target for l in shown["super"].links] == ["big", "https://example.org"]
    assert "lonely" not in shown and "tiny" not in shown


def test_max_shelves_per_device():
    shelves = {f"s{n}": ids(f"s{n}x", 6) for n in range(8)}
    index = vod_world(shelves, min_shelves=1, max_shelves={"TV": 3, "STB": 3, "MOBILE": 5, "TABLET": 5, "WEB": 5})
    showcase = assemble(index, Viewer(user_id=None, device_type="TV", now=NOW))
    assert [s.shelf_id for s in showcase.shelves] == ["s0", "s1", "s2"]
    assert sum(d.reason == "max_shelves" for d in showcase.dropped) == 5


def test_daily_check_counts_boosted_titles():
    titles = [title_dict(i, boost=True) for i in ids("n", 6)]
    index = vod_world({"s": ids("n", 6) + ids("t", 6)}, titles, min_shelves=1)
    showcase = assemble(index, Viewer(user_id=None, device_type="TV", now=NOW))
    codes = [a.code for a in daily_checks(showcase, index, ShowcasePolicy(max_boosted_per_shelf=3, max_boosted_per_showcase=5))]
    assert codes == ["too_many_boosted_in_shelf", "too_many_boosted"]
    assert daily_checks(showcase, index, ShowcasePolicy(max_boosted_per_shelf=6, max_boosted_per_showcase=6)) == []
