"""Server-side re-ranking of the ML shelves by the serving model's scores, A/B parameters, and the
impression contract of served pages (pure: no model file here, scores are given)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from demo.showcase_sample import sample_world
from processors.showcase import ShowcaseInputError, UserHistory, Viewer, assemble, to_view
from processors.showcase.assemble import ModelScores
from processors.showcase.experiments import loads_params, parse_ab
from processors.showcase.impressions import autoplay_impression, page_impressions
from processors.showcase.personal import watch_also

NOW = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def world():
    return sample_world(1500, seed=5, now=NOW)


def _user(world, n: int = 6):
    index = world.index()
    grown = [t for t in world.titles if not t["adult"] and not t["kids"] and t["episode"] is None
             and t["item_id"] in world.similar and not t["device_rights"]]
    watched = tuple(t["item_id"] for t in grown[:n])
    return index, UserHistory(watched=watched)


def _shelf(showcase, kind):
    return next(s for s in showcase.shelves if s.kind == kind)


def test_without_a_model_the_order_is_todays(world):
    index, history = _user(world)
    viewer = Viewer(user_id="u1", device_type="WEB", now=NOW)
    plain = assemble(index, viewer, history)
    assert assemble(index, viewer, history, model=None) == plain
    assert assemble(index, viewer, history, model=ModelScores("ranking", "v1", {})) == plain
    assert all("model_version" not in s.meta for s in plain.shelves)


def test_watch_also_follows_the_model_scores_and_is_stamped(world):
    index, history = _user(world)
    viewer = Viewer(user_id="u1", device_type="WEB", now=NOW)
    plain = _shelf(assemble(index, viewer, history), "ML_WATCH_ALSO")
    anchor_list = [i for i, _ in world.similar[history.recent[0]]]
    # a model that prefers the tail of the similarity list: the shelf order must turn around
    scores = {item: float(rank) for rank, item in enumerate(anchor_list)}
    ranked = assemble(index, viewer, history, model=ModelScores("ranking", "v7", scores))
    shelf = _shelf(ranked, "ML_WATCH_ALSO")
    assert list(shelf.items) != list(plain.items)
    got = [scores[i] for i in shelf.items]
    boosted = set(shelf.meta.get("boosted", ())) | set(shelf.meta.get("boost_off", ()))
    unboosted = [scores[i] for i in shelf.items if i not in boosted]  # boosting (a business rule) moves the rest
    assert unboosted == sorted(unboosted, reverse=True)
    assert shelf.meta["model_version"] == "v7" and shelf.meta["model"] == "ranking"
    assert shelf.meta["model_scores"] == [round(s, 5) for s in got]
    # business rules still hold: nothing watched comes back
    assert not set(shelf.items) & set(history.watched)


def test_for_you_is_reranked_by_the_model_then_diversified(world):
    index, history = _user(world)
    viewer = Viewer(user_id="u1", device_type="WEB", now=NOW)
    plain = _shelf(assemble(index, viewer, history), "ML_FOR_YOU")
    pool = {i for seed in history.recent for i, _ in world.similar.get(seed, [])[:20]}
    scores = {item: (1.0 if item.endswith(("1", "3", "5", "7", "9")) else 0.0) for item in pool}
    shelf = _shelf(assemble(index, viewer, history, model=ModelScores("ranking", "v7", scores),
                           params={"for_you.mmr_lambda": "1.0", "for_you.novelty": "0", "for_you.rating": "0"}),
                   "ML_FOR_YOU")
    assert list(shelf.items) != list(plain.items)
    # no diversity penalty and relevance = model score only: every high-scored candidate comes first
    boosted = set(shelf.meta.get("boosted", ())) | set(shelf.meta.get("boost_off", ()))
    high = [scores.get(i, 0.0) for i in shelf.items if i not in boosted]
    assert high == sorted(high, reverse=True) and high[0] == 1.0
    # model_share 0 via an A/B parameter: back to similarity relevance
    back = _shelf(assemble(index, viewer, history, model=ModelScores("ranking", "v7", scores),
                           params={"for_you.model_share": "0"}), "ML_FOR_YOU")
    assert list(back.items) == list(plain.items)


def test_watch_also_unscored_candidates_follow_scored_ones_in_similarity_order(world):
    index = world.index()
    anchor = next(iter(world.similar))
    allowed = frozenset(index.titles)
    plain = watch_also(anchor, world.similar, set(), allowed, index, 10)
    ranked = watch_also(anchor, world.similar, set(), allowed, index, 10, {plain[5]: 0.9, plain[7]: 0.1})
    assert ranked[:2] == [plain[5], plain[7]]
    assert ranked[2:] == [i for i in plain if i not in (plain[5], plain[7])][:8]


def test_ab_parameters_from_query_and_header():
    params = parse_ab({"ab_for_you.mmr_lambda": "0.4", "device_type": "TV"},
                      "series_return=NEW_SEASON; for_you.mmr_lambda=0.9")
    assert params == {"for_you.mmr_lambda": "0.4", "series_return": "NEW_SEASON"}
    assert parse_ab({}, None) == {}
    with pytest.raises(ShowcaseInputError):
        parse_ab({"ab_nope": "1"}, None)
    with pytest.raises(ShowcaseInputError):
        parse_ab({"ab_for_you.mmr_lambda": "7"}, None)
    with pytest.raises(ShowcaseInputError):
        parse_ab({}, "garbage")
    assert loads_params('{"for_you.novelty":"0.2","evil":"x"}') == {"for_you.novelty": "0.2"}
    assert loads_params("not json") == {}


def test_page_impressions_carry_request_id_rows_positions_and_the_serving_version(world):
    index, history = _user(world)
    viewer = Viewer(user_id="u1", device_type="WEB", now=NOW)
    pairs = world.similar[history.recent[0]]
    showcase = assemble(index, viewer, history, model=ModelScores("ranking", "v7", {i: s for i, s in pairs}))
    response = {"request_id": "r1", "surface": "HOME", "showcase": to_view(showcase)}
    shown = page_impressions(response, user_id="u1", device_id="d1", device_type="WEB", shown_at=NOW, visible=3)
    assert shown and len({i["impression_id"] for i in shown}) == len(shown)
    rows = {s["row"]: s for s in response["showcase"]["shelves"]}
    for imp in shown:
        shelf = rows[imp["row"]]
        assert imp["request_id"] == "r1" and shelf["items"][imp["position"]] == imp["item_id"]
        assert imp["shelf_id"] == shelf["shelf_id"] and imp["position"] < 3
        if shelf["kind"] == "ML_WATCH_ALSO":
            assert imp["model_version"] == "v7" and imp["model_score"] == shelf["meta"]["model_scores"][imp["position"]]
        elif shelf["kind"] not in ("ML_FOR_YOU",):
            assert imp["model_version"] is None and imp["model_score"] is None
    auto = autoplay_impression({"request_id": "r2", "surface": "AUTOPLAY", "position": 0, "next": {"item_id": "x"}},
                               user_id=None, device_id="d9", device_type="TV", shown_at=NOW)
    assert auto["item_id"] == "x" and auto["surface"] == "AUTOPLAY" and auto["row"] == -1
    assert autoplay_impression({"request_id": "r3", "next": None}, user_id=None, device_id="d", device_type="TV",
                               shown_at=NOW) is None


def test_page_impressions_encode_with_the_impression_schema(world):
    from streams.kafka.codec import default_codec

    index, history = _user(world)
    showcase = assemble(index, Viewer(user_id="u1", device_type="WEB", now=NOW), history)
    response = {"request_id": "r1", "surface": "HOME", "showcase": to_view(showcase)}
    codec = default_codec()
    for imp in page_impressions(response, user_id="u1", device_id="d1", device_type="WEB", shown_at=NOW, visible=2):
        back = codec.decode(codec.encode("vitrina.RankingImpression", imp), "vitrina.RankingImpression")
        assert back["request_id"] == "r1" and back["row"] == imp["row"] and back["shelf_id"] == imp["shelf_id"]


def test_a_lazy_scorer_scores_only_the_shelf_pools_and_a_failing_one_keeps_todays_order(world):
    index, history = _user(world)
    viewer = Viewer(user_id="u1", device_type="WEB", now=NOW)
    plain = assemble(index, viewer, history)
    eager_scores = {item: float(rank) for rank, item in enumerate(world.similar[history.recent[0]])}
    asked: list[list[str]] = []

    def scorer(items):
        asked.append(list(items))
        return {i: eager_scores.get(i, -1.0) for i in items}

    lazy = ModelScores("ranking", "v7", scorer=scorer)
    ranked = assemble(index, viewer, history, model=lazy)
    assert asked and all(len(call) <= 60 for call in asked)  # each ML shelf's own pool, never the catalogue
    assert _shelf(ranked, "ML_WATCH_ALSO").meta["model_version"] == "v7"
    assert list(_shelf(ranked, "ML_WATCH_ALSO").items) != list(_shelf(plain, "ML_WATCH_ALSO").items)

    def broken(items):
        raise RuntimeError("LiteRT went away")

    failing = ModelScores("ranking", "v7", scorer=broken)
    kept = assemble(index, viewer, history, model=failing)
    assert failing.failed and not kept.is_fallback
    assert [s.items for s in kept.shelves] == [s.items for s in plain.shelves]
    assert all("model_version" not in s.meta for s in kept.shelves)
