"""Fair next-item quality bench of the served co-view "similar" lists (issue 17).

Two real datasets, each with its own validation and test slices (``bench/quality/protocol.py``
states the split, the same-second tie rule, the ranking and the metrics):

* MovieLens ml-latest-small: ratings become playback events (a rating = the title was viewed:
  START then COMPLETE at 50 % of an 8 s duration, at the rating time) and go through the agents'
  sessionizer (30-min gap); the test slice is the sessions starting in the last 20 % of the time range.
* RSC15-100k (RecSys Challenge 2015 clicks, session-rec's prepared split): tune on train_tr/train_valid,
  test on test after fitting on train_full. Clicks go through the same sessionizer (viewer = session).

Methods (every one tuned on the validation slice, budgets in the result's ``tuning`` entries, the
test slice read once per reported configuration, each read logged in ``test_reads``):
vitrina's served list (co-view counts from the agents' code, ``top_similar`` K = 50, blended with
the metadata list where a catalogue exists, and with the closed-form item model of the stream's sessions
when that wins validation: ``coview_item_model_blend``, processors/coview/item_model.py), popularity, item-kNN, EASE, SAR and V-SKNN
(``bench/quality/baselines.py``, whole-catalogue scores) and GRU4Rec in TensorFlow
(``bench/quality/sequential.py``, early-stopped on validation).

Run from the repo root:  .venv/bin/python -m bench.coview_quality   (about 20-30 min on 1-2 cores)
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.quality import baselines as bl
from bench.quality.protocol import (
    RSC_DATA,
    Session,
    Slice,
    TestLog,
    evaluate,
    movielens_slices,
    paired_bootstrap,
    rounded,
    tie_stats,
)
from bench.quality.served import IndexCache, MetaCache, ModelCache, Served
from processors.coview.coldstart import MetadataIndex, blend
from processors.coview.cooccurrence import DAY_MS, CoviewConfig
from processors.coview.item_model import ItemModelConfig
from processors.coview.memory import CoviewIndex, SessionStore
from processors.coview.sessionize import SessionConfig, ViewCompleted
from processors.coview.similarity import SimilarityConfig

DATA = Path("/work/shared/data/datasets/movielens-ml-latest-small")
RESULT = ROOT / "bench" / "results" / "coview_quality.json"
CITATION = (
    'F. Maxwell Harper and Joseph A. Konstan, 2015, "The MovieLens Datasets: History and Context", '
    "ACM Transactions on Interactive Intelligent Systems (TiiS) 5(4)"
)
RSC_CITATION = ('D. Ben-Shimon et al., "RecSys Challenge 2015 and the YOOCHOOSE Dataset", RecSys 2015; '
                'split from session-rec (Ludewig and Jannach, UMUAI 28, 2018)')
OFFLINE_BROKER = "none: an offline bench (the pure co-view processors and the baselines on the dataset files)"
K = 50
GRU_GRID = [{"hidden": 100, "lr": 5e-3}, {"hidden": 200, "lr": 5e-3, "dropout": 0.25},
            {"hidden": 100, "lr": 1e-2, "dropout": 0.1}]
# what the streaming worker serves (streams/agents/coview.py): co-view, blended with the metadata list, and (since
# --add-served-blend) with the item model the worker refits from its sessions (processors/coview/item_model.py)
SERVED = ("coview", "coview_metadata_blend", "coview_item_model_blend")
CANDIDATES: tuple[str, ...] = ()  # measured like the served variants, but not served (none now)
# the item model of the served blend: EASE on the stream's sessions, bounded to the MODEL_ITEMS titles seen in
# the most sessions (processors/coview/item_model.py); tuned: ridge x blend weight, on top of the best
# co-view (+ metadata) configuration found on validation
MODEL_ITEMS = 8000
MODEL_L2 = [50.0, 200.0, 1000.0]
MODEL_WEIGHTS = [0.1, 0.25, 0.5]
CONTEXTS = [3, 10, 30]  # recent titles of the session a prefix is scored from (context 1 lost everywhere in a first run)


# ----------------------------------------------------------------------------- data


def load_ratings(data: Path) -> list[tuple[str, str, int]]:
    with open(data / "ratings.csv", newline="") as fh:
        return [(r["userId"], r["movieId"], int(r["timestamp"]) * 1000) for r in csv.DictReader(fh)]


def load_titles(data: Path, tags_before_ms: int) -> dict[str, dict]:
    """Catalogue-title-like records from movies.csv (+ tags known before the cut-off)."""
    year_re = re.compile(r"\((\d{4})\)\s*$")
    titles: dict[str, dict] = {}
    with open(data / "movies.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            match = year_re.search(row["title"])
            genres = [] if row["genres"] == "(no genres listed)" else row["genres"].split("|")
            titles[row["movieId"]] = {
                "item_id": row["movieId"],
                "title": year_re.sub("", row["title"]).strip(),
                "genres": genres,
                "tags": [],
                "release_year": int(match.group(1)) if match else None,
            }
    with open(data / "tags.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if int(row["timestamp"]) * 1000 < tags_before_ms and row["movieId"] in titles:
                tags = titles[row["movieId"]]["tags"]
                if row["tag"] not in tags:
                    tags.append(row["tag"])
    return titles


def rating_events(ratings: list[tuple[str, str, int]], as_datetime: bool = False) -> Iterable[dict]:
    """Playback events for ratings in time order: START at 0, COMPLETE at 4 s of 8 s."""
    order = sorted(range(len(ratings)), key=lambda i: (ratings[i][2], i))
    for i in order:
        user, movie, t = ratings[i]
        base = {"session_id": f"ml-{user}", "user_id": user, "device_id": f"ml-device-{user}",
                "device_type": "WEB", "os": "web", "app_version": "1.0.0", "item_id": movie,
                "duration_ms": 8000, "network_kbps": None, "buffered_ratio": None, "stall_ms": 0,
                "bitrate_kbps": None}
        start, end = t, t + 4000
        if as_datetime:
            start = datetime.fromtimestamp(start / 1000, timezone.utc)
            end = datetime.fromtimestamp(end / 1000, timezone.utc)
        yield {**base, "event_id": f"r{i}-start", "event_type": "START", "position_ms": 0, "event_time": start}
        yield {**base, "event_id": f"r{i}-complete", "event_type": "COMPLETE", "position_ms": 4000, "event_time": end}


def sessionize(ratings: list[tuple[str, str, int]]) -> list[ViewCompleted]:
    store = SessionStore(SessionConfig())
    views: list[ViewCompleted] = []
    for event in rating_events(ratings):
        for out in store.feed(event):
            if type(out) is ViewCompleted:
                views.append(out)
    return views



def views_of_sessions(sessions: list[Session]) -> list[ViewCompleted]:
    """RSC15 clicks through the sessionizer: the viewer is the session, a click a 4 s view of 8 s."""
    rows = sorted(((s.sid, item, t) for s in sessions for item, t in zip(s.items, s.times)),
                  key=lambda r: (r[2], r[0], r[1]))
    return sessionize(rows)


# ----------------------------------------------------------------------------- tuning


def tune(name: str, candidates: Iterable[dict], build: Callable[[dict], object], val: Slice,
         log: Callable[[str], None]) -> tuple[dict, float, list]:
    """Evaluate every candidate on validation; returns (best params, its NDCG@10, trace)."""
    best, best_params, trace = -1.0, {}, []
    for params in candidates:
        began = time.perf_counter()
        ndcg = evaluate(build(params), val)["ndcg10"]
        trace.append({"params": params, "val_ndcg10": round(ndcg, 4)})
        log(f"  {name} {params}: val ndcg10 {ndcg:.4f} ({time.perf_counter() - began:.1f} s)")
        if ndcg > best + 1e-9:
            best, best_params = ndcg, params
    return best_params, best, trace


def grid(**axes) -> list[dict]:
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


class Cached:
    """Caches item x item matrices by the parameters that decide them."""

    def __init__(self) -> None:
        self.key = None
        self.value = None

    def get(self, key, make):
        if key != self.key:
            self.value = None
            self.value = make()
            self.key = key
        return self.value


def baseline_builders(data: Slice, has_users: bool) -> dict[str, tuple[list[dict], Callable[[dict], object]]]:
    rows = ["session", "user"] if has_users else ["session"]
    cache = {"cooc": Cached(), "ease": Cached()}

    def cooc(params: dict) -> np.ndarray:
        return cache["cooc"].get((params["rows"], params.get("half_life_days")), lambda: bl.cooccurrence(
            bl.fit_matrix(data, params["rows"], params.get("half_life_days"))))

    def itemknn(params):
        return bl.ItemItem(bl.cosine_matrix(cooc(params), params["alpha"]), params["context"])

    def sar(params):
        return bl.ItemItem(bl.sar_matrix(cooc(params), params["similarity"]), params["context"])

    def ease(params):
        matrix = cache["ease"].get((params["rows"], params["lambda"]),
                                   lambda: bl.ease_matrix(bl.fit_matrix(data, params["rows"]), params["lambda"]))
        return bl.ItemItem(matrix, params["context"])

    ends = bl.session_ends(data)
    session_matrix = bl.fit_matrix(data, "session")
    span_days = (data.cut_ms - min(s.times[0] for s in data.fit)) / DAY_MS
    half_lives = [None, round(span_days / 4, 2)]

    def sknn(params):
        return bl.SessionKNN(session_matrix, ends, params["k"], params["sample"], params["similarity"])

    contexts = CONTEXTS
    lambdas = [10.0, 50.0, 200.0, 1000.0]
    return {
        "itemknn": (grid(rows=rows, alpha=[0.5, 0.75, 0.9], context=contexts), itemknn),
        "ease": (grid(rows=rows, **{"lambda": lambdas}, context=contexts), ease),
        "sar": (grid(rows=rows, half_life_days=half_lives, similarity=["jaccard", "lift", "counts"],
                     context=contexts), sar),
        "sknn": (grid(k=[100, 200, 500], sample=[1000, 5000], similarity=["dot", "cosine"]), sknn),
    }


def served_candidates() -> list[dict]:
    # window 20 is the most the sessionizer carries (SessionConfig.recent_views); backward_factor 1.0 beat 0.25
    # on both validation slices in a first run and is fixed here
    return grid(measure=["cosine", "jaccard", "asymmetric"], window=[5, 20], min_support=[0.5, 1.0],
                context=CONTEXTS)


def item_model_candidates(base: dict) -> list[dict]:
    return [dict(base, model_l2=l2, model_weight=w) for l2 in MODEL_L2 for w in MODEL_WEIGHTS]


# --add-served-blend: the item-model blend with the served list's length (K, the worker's VITRINA_COVIEW_K) and
# the prefix context as tuning axes (l2 fixed at the 200 the first item-model grid chose on both datasets)
BLEND_KS = [50, 200]
BLEND_WEIGHTS = [0.1, 0.25, 0.4]
BLEND_CONTEXTS = [10, 20, 30]


def served_blend_candidates(base: dict) -> list[dict]:
    return [dict(base, model_l2=200.0, model_weight=w, k=k, context=c)
            for k in BLEND_KS for w in BLEND_WEIGHTS for c in BLEND_CONTEXTS]


# the baselines' extra grid beside it (contexts 20 and 50 around the chosen 30, lambdas around 200)
def extra_baseline_candidates(method: str, has_users: bool, data: Slice) -> list[dict]:
    rows = ["session", "user"] if has_users else ["session"]
    if method == "ease":
        return grid(rows=rows, **{"lambda": [100.0, 200.0, 500.0]}, context=[20, 50])
    if method == "sar":
        span_days = (data.cut_ms - min(s.times[0] for s in data.fit)) / DAY_MS
        return grid(rows=rows, half_life_days=[None, round(span_days / 4, 2)], similarity=["jaccard", "counts"],
                    context=[20, 50])
    return []


def served_builder(data: Slice, views: list[ViewCompleted], metadata: MetadataIndex | None):
    cache = IndexCache(views)
    meta = MetaCache(metadata) if metadata is not None else None
    models = ModelCache(data)

    def build(params: dict) -> Served:
        config = CoviewConfig(window=params["window"])
        k = params.get("k", K)
        similarity = SimilarityConfig(measure=params["measure"], k=k, min_support=params["min_support"])
        model = None
        if params.get("model_weight"):
            min_sessions = params.get("model_min_sessions", ItemModelConfig.min_sessions)
            model = models.get(ItemModelConfig(max_items=MODEL_ITEMS, l2=params["model_l2"], k=k, min_sessions=min_sessions))
        return Served(data, cache.get(config), similarity, params["context"], meta, params.get("prior"),
                      series_slots=params.get("series_slots", 0), kids_share=params.get("kids_share", 0.0),
                      item_model=model, model_weight=params.get("model_weight", 0.0), k=k)

    return build


# ----------------------------------------------------------------------------- one dataset


def run_dataset(name: str, val: Slice, test: Slice, val_views, test_views, val_meta, test_meta,
                has_users: bool, tests: TestLog, log: Callable[[str], None], skip: set[str],
                gru_grid: list[dict], gru_epochs: int, gru_budget_s: float) -> dict:
    log(f"[{name}] validation: {len(val.fit)} fit sessions, {len(val.targets)} targets, {val.n_items} titles; "
        f"test: {len(test.fit)} fit sessions, {len(test.targets)} targets in {len(test.evaluate)} sessions")
    methods: dict[str, dict] = {}
    gains: dict[str, list] = {}

    def report(method: str, params: dict, val_ndcg: float, candidates: int, model_for_test: Callable[[], object],
               extra: dict | None = None) -> None:
        result = tests.read(name, method, params, lambda: evaluate(model_for_test(), test))
        gains[method] = result["gains"]
        methods[method] = {**rounded(result), "val_ndcg10": round(val_ndcg, 4), "params": params,
                           "configurations_tuned": candidates, **(extra or {})}
        log(f"[{name}] {method}: test ndcg10 {result['ndcg10']:.4f} hr10 {result['hr10']:.4f} "
            f"per-session ndcg10 {result['ndcg10_per_session']:.4f}  ({params})")

    # --- vitrina's served list
    build_val = served_builder(val, val_views, None)
    build_test = served_builder(test, test_views, None)
    log(f"[{name}] tuning served co-view lists")
    params, val_ndcg, trace = tune("coview", served_candidates(), build_val, val, log)
    per_measure = {}
    for entry in trace:
        measure = entry["params"]["measure"]
        if measure not in per_measure or entry["val_ndcg10"] > per_measure[measure]["val_ndcg10"]:
            per_measure[measure] = entry
    n_candidates = len(served_candidates())
    coview_params = params
    report("coview", params, val_ndcg, n_candidates, lambda: build_test(params))
    served_name, served_params = "coview", params
    if val_meta is not None:
        build_val_m = served_builder(val, val_views, val_meta)
        build_test_m = served_builder(test, test_views, test_meta)
        priors = [dict(params, prior=p, series_slots=s, kids_share=c) for p in (2.0, 5.0, 20.0) for s in (0, 3)
                  for c in (0.0, 0.5)]
        params_b, val_b, _ = tune("coview+metadata", priors, build_val_m, val, log)
        n_candidates += len(priors)
        if val_b > val_ndcg:
            report("coview_metadata_blend", params_b, val_b, n_candidates, lambda: build_test_m(params_b))
            served_name, served_params, val_ndcg = "coview_metadata_blend", params_b, val_b
    else:
        build_val_m, build_test_m = build_val, build_test
    tune_item_model_blend(name, served_name, served_params, val_ndcg, n_candidates, build_val_m, build_test_m, val,
                          log, report)
    served_name = max((m for m in SERVED if m in methods), key=lambda m: methods[m]["val_ndcg10"])
    served_params = methods[served_name]["params"]

    # --- baselines
    report("popularity", {}, evaluate(bl.Popularity(val), val)["ndcg10"], 1, lambda: bl.Popularity(test))
    val_builders = baseline_builders(val, has_users)
    test_builders = baseline_builders(test, has_users)
    for method, (candidates, build) in val_builders.items():
        if method in skip:
            continue
        log(f"[{name}] tuning {method} ({len(candidates)} configurations)")
        params, val_ndcg, _ = tune(method, candidates, build, val, log)
        report(method, params, val_ndcg, len(candidates), lambda m=method, p=params: test_builders[m][1](p))
    if "sequential" not in skip:
        from bench.quality import sequential

        log(f"[{name}] tuning GRU4Rec ({len(gru_grid)} configurations, early stopping)")
        params, val_ndcg, trace = sequential.tune(val, gru_grid, gru_epochs, 3, log, gru_budget_s)
        report("sequential", params, val_ndcg, len(gru_grid), lambda p=params: sequential.fit_for_test(test, p),
               {"model": "GRU4Rec (TensorFlow, full softmax)", "epoch_trace": trace})

    return compare(methods, gains, served_name, served_params, coview_params, per_measure, val, test)


def tune_item_model_blend(name, served_name, served_params, served_val, n_candidates, build_val, build_test, val,
                          log, report) -> None:
    """Co-view (+ metadata) blended with the closed-form item model the worker refits from its sessions,
    tuned on validation on top of the served configuration (ridge x weight, then list length x weight x
    context: ``served_blend_candidates``), its test slice read once. Served when it beats the other served
    variants on validation (``run_dataset``)."""
    candidates = item_model_candidates(served_params) + served_blend_candidates(served_params)
    log(f"[{name}] tuning the item-model blend ({len(candidates)} configurations)")
    params_m, val_m, _ = tune("coview+item_model", candidates, build_val, val, log)
    report("coview_item_model_blend", params_m, val_m, n_candidates + len(candidates), lambda: build_test(params_m),
           {"item_model": f"EASE on the fit sessions, <= {MODEL_ITEMS} titles (most sessions), top k per title",
            "served": True, "better_than_served_on_validation": val_m > served_val})


def compare(methods, gains, served_name, served_params, coview_params, per_measure, val, test) -> dict:
    baselines = {m: r for m, r in methods.items() if m not in SERVED and m not in CANDIDATES}
    best = max(baselines, key=lambda m: baselines[m]["ndcg10"])
    versus = {f"served_vs_{m}": paired_bootstrap(gains[served_name], gains[m]) for m in baselines}
    versus.update({f"{c}_vs_{m}": paired_bootstrap(gains[c], gains[m]) for c in CANDIDATES if c in gains
                   for m in baselines})
    if served_name != "coview":
        versus["coview_only_vs_best_baseline"] = paired_bootstrap(gains["coview"], gains[best])
    return {
        "served_list": served_name, "served_params": served_params, "coview_params": coview_params,
        "hr10": methods[served_name]["hr10"], "ndcg10": methods[served_name]["ndcg10"],
        "ndcg10_per_session": methods[served_name]["ndcg10_per_session"],
        "best_baseline": best, "best_baseline_ndcg10": baselines[best]["ndcg10"],
        "per_measure_validation": per_measure,
        "served": {m: methods[m] for m in SERVED if m in methods},
        "candidates": {m: methods[m] for m in CANDIDATES if m in methods},
        "baselines": baselines, "paired_bootstrap": versus,
        "split": {"validation_fit_sessions": len(val.fit), "validation_targets": len(val.targets),
                  "validation_sessions": len(val.evaluate), "test_fit_sessions": len(test.fit),
                  "test_sessions": len(test.evaluate), "test_targets": len(test.targets),
                  "catalogue_test": test.n_items,
                  "same_second_ties_test": tie_stats(test.evaluate),
                  "same_second_ties_fit": tie_stats(test.fit)},
    }


def _player_events(sample: list[tuple[str, str, int]]) -> list[dict]:
    """Player-shaped stream: per user, plays one after another, each START, a HEARTBEAT every
    30 s, a PAUSE and RESUME, COMPLETE at 210 s of a 20 min title (11 events, one view)."""
    next_start: dict[str, float] = {}
    events: list[dict] = []
    for n, (user, movie, t) in enumerate(sample):
        t0 = max(next_start.get(user, 0.0), t / 1000)
        next_start[user] = t0 + 400
        base = {"session_id": f"ml-{user}", "user_id": user, "device_id": f"ml-device-{user}",
                "device_type": "TV", "os": "tizen", "app_version": "1.0.0", "item_id": movie,
                "duration_ms": 20 * 60 * 1000, "network_kbps": 20000, "buffered_ratio": 0.4, "stall_ms": 0,
                "bitrate_kbps": 6000}
        steps = [("START", 0, 0)] + [("HEARTBEAT", 30 * k, 30 * k) for k in (1, 2, 3)] + [
            ("PAUSE", 100, 100), ("RESUME", 160, 100)] + [("HEARTBEAT", 100 + 30 * k, 160 + 30 * k) for k in (1, 2, 3)] + [
            ("COMPLETE", 210, 270)]
        for step, (kind, position, offset) in enumerate(steps):
            events.append({**base, "event_id": f"p{n}-{step}", "event_type": kind, "position_ms": position * 1000,
                           "event_time": datetime.fromtimestamp(t0 + offset, timezone.utc)})
    events.sort(key=lambda e: e["event_time"])
    return events


def _rate(events: list[dict]) -> dict[str, float]:
    store = SessionStore()
    began = time.perf_counter()
    views = [out for event in events for out in store.feed(event) if type(out) is ViewCompleted]
    sessionize_s = time.perf_counter() - began
    index = CoviewIndex(CoviewConfig())
    began = time.perf_counter()
    for view in views:
        index.add_view(view)
    coview_s = time.perf_counter() - began
    return {"events": len(events), "views": len(views),
            "events_per_s": round(len(events) / (sessionize_s + coview_s)),
            "sessionize_events_per_s": round(len(events) / sessionize_s),
            "coview_views_per_s": round(len(views) / coview_s)}


def throughput(ratings: list[tuple[str, str, int]], limit: int) -> dict[str, dict]:
    """Events/s of sessionize.apply + co-occurrence updates in one loop, aware datetimes as decoded."""
    sample = sorted(ratings, key=lambda r: r[2])[:limit]
    return {"movielens_2_events_per_view": _rate(list(rating_events(sample, as_datetime=True))),
            "player_11_events_per_view": _rate(_player_events(sample)),
            "load_average_1m_after": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count()}


# ----------------------------------------------------------------------------- main



# ----------------------------------------------------------------------------- main

PROTOCOL = (
    "next-item on held-out sessions; one target per timestamp group after the first (same-second events are "
    "unordered: a hit at the best rank of ANY title of the group), titles already in the session removed from "
    "the group and the candidates (empty groups dropped); every method scores the whole catalogue (titles of the "
    "fit data) from the session prefix only, ties broken by fit popularity; NDCG@10/HR@10 per target (micro) and "
    "per session (mean of session means); every method tuned on the validation slice, the test slice read once per "
    "reported method (test_reads); paired bootstrap over test sessions (2000 resamples, seeded)")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rsc", type=Path, default=RSC_DATA)
    parser.add_argument("--datasets", default="movielens,rsc15")
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out (quick runs only)")
    parser.add_argument("--gru-epochs", type=int, default=30)
    parser.add_argument("--gru-budget-s", type=float, default=420.0, help="per GRU4Rec configuration")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--only-throughput", action="store_true",
                        help="re-measure events/s only and update that key of an existing result file")
    parser.add_argument("--served-default", action="store_true",
                        help="with --add-item-model: the served list of every dataset is the worker's one "
                             "configuration (served_default_params); a dataset whose recorded blend differs reads "
                             "the test slice once for it")
    parser.add_argument("--note", action="append", default=[],
                        help="with --add-item-model: a line added to the result's notes (what was tried and why)")
    parser.add_argument("--merge", nargs="+", type=Path, help="combine per-dataset result files into --out")
    parser.add_argument("--add-item-model", action="store_true",
                        help="add the item-model blend (and the sequential model of the current GRU_GRID when its "
                             "tuning is cached) to the existing result in --out, other methods kept (add_item_model)")
    parser.add_argument("--add-served-blend", action="store_true",
                        help="with --add-item-model: tune the served item-model blend (list length, weight, context) "
                             "and the extra EASE/SAR grids, reading the test slice once per new configuration")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out, args.data, argv)
    if args.add_item_model:
        return add_item_model(args, argv)
    log = lambda message: print(message, flush=True)
    began = time.perf_counter()
    ratings = load_ratings(args.data)
    if args.only_throughput:
        result = json.loads(args.out.read_text())
        result["throughput"] = throughput(ratings, 20_000)
        result["defaults"] = defaults()
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return result
    skip = {s for s in args.skip.split(",") if s}
    tests = TestLog()
    datasets: dict[str, dict] = {}
    iso = lambda ms: datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()
    wanted = args.datasets.split(",")
    for name in ("movielens", "rsc15"):
        if name not in wanted:
            continue
        *slices, cuts = setup_dataset(name, args.data, args.rsc, ratings)
        out = run_dataset(name, *slices, tests, log, skip, GRU_GRID, args.gru_epochs, args.gru_budget_s)
        if cuts:
            out["split"].update({"validation_from": iso(cuts["validation_from_ms"]),
                                 "test_from": iso(cuts["test_from_ms"])})
        out["dataset"] = (
            {"name": "MovieLens ml-latest-small (GroupLens, 2018 build)", "citation": CITATION, "path": str(args.data)}
            if name == "movielens" else
            {"name": "RSC15-100k (YooChoose clicks, session-rec prepared split)", "citation": RSC_CITATION,
             "path": str(args.rsc)})
        datasets[name] = out
    result = assemble(datasets, tests.reads, ratings, skip, argv, began)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {args.out}")
    return result


def setup_dataset(name: str, data: Path, rsc: Path, ratings: list[tuple[str, str, int]] | None = None) -> tuple:
    """(val, test, val_views, test_views, val_meta, test_meta, has_users, extra split info). MovieLens
    ``ratings`` already loaded from ``data`` are sorted in place (time, user, title) and used."""
    if name == "rsc15":
        val, test = bench_rsc(rsc)
        return val, test, views_of_sessions(val.fit), views_of_sessions(test.fit), None, None, False, {}
    ratings = load_ratings(data) if ratings is None else ratings
    ratings.sort(key=lambda r: (r[2], r[0], r[1]))
    views = sessionize(ratings)
    val, test, cuts = movielens_slices(views)
    metas = [metadata_before(data, cut) for cut in (cuts["validation_from_ms"], cuts["test_from_ms"])]
    return (val, test, [v for v in views if v.at_ms < cuts["validation_from_ms"]],
            [v for v in views if v.at_ms < cuts["test_from_ms"]], metas[0], metas[1], True, cuts)


def metadata_before(data: Path, cut_ms: int) -> MetadataIndex:
    """The catalogue's metadata index as of ``cut_ms`` (tags added before it)."""
    metadata = MetadataIndex()
    for title in load_titles(data, cut_ms).values():
        metadata.add_title(title)
    return metadata


def add_item_model(args, argv) -> dict:
    """Adds ``coview_item_model_blend`` to an existing result (``--out``) without re-tuning the other methods.

    Per dataset: the blend is tuned on validation on top of the recorded served configuration and reads the
    test slice once (``test_reads``); where the tuning of the current ``GRU_GRID`` is cached
    (``python -m bench.quality.sequential``), the sequential baseline is replaced by it (one test read). The
    served list becomes the blend if it is better on validation. Paired bootstraps that involve a changed
    method need per-session gains of the recorded methods: those are recomputed with the recorded
    configuration (deterministic; listed in ``recomputed_for_bootstrap`` with the recorded figure, not new
    test reads of a new configuration)."""
    from bench.quality import sequential

    log = lambda message: print(message, flush=True)
    began = time.perf_counter()
    result = json.loads(args.out.read_text())
    tests = TestLog()
    recomputed: list[dict] = []
    for name in args.datasets.split(","):
        old = result["datasets"][name]
        val, test, val_views, test_views, val_meta, test_meta, has_users, _ = setup_dataset(name, args.data, args.rsc)
        log(f"[{name}] add item-model blend: {len(val.targets)} validation targets, {len(test.targets)} test targets")
        methods = {**old["served"], **old["baselines"]}
        changed: set[str] = set()
        gains: dict[str, list] = {}
        builders = {None: (served_builder(val, val_views, None), served_builder(test, test_views, None))}
        if val_meta is not None:
            builders["meta"] = (served_builder(val, val_views, val_meta), served_builder(test, test_views, test_meta))
        build_val_m, build_test_m = builders["meta" if val_meta is not None else None]

        def report(method, params, val_ndcg, candidates, model_for_test, extra=None):
            got = tests.read(name, method, params, lambda: evaluate(model_for_test(), test))
            gains[method] = got["gains"]
            methods[method] = {**rounded(got), "val_ndcg10": round(val_ndcg, 4), "params": params,
                               "configurations_tuned": candidates, **(extra or {})}
            changed.add(method)
            log(f"[{name}] {method}: test ndcg10 {got['ndcg10']:.4f} per-session {got['ndcg10_per_session']:.4f} "
                f"({params})")

        served_name, served_params = old["served_list"], old["served_params"]
        methods.update(old.get("candidates") or {})
        if "coview_item_model_blend" not in methods:  # added once: a second run only updates the sequential model
            tune_item_model_blend(name, served_name, served_params, methods[served_name]["val_ndcg10"],
                                  methods[served_name]["configurations_tuned"], build_val_m, build_test_m, val, log,
                                  report)
        extras: dict[str, dict] = {}
        if getattr(args, "add_served_blend", False):
            served_name, served_params = add_served_blend(name, old, methods, val, test, has_users, build_val_m,
                                                          build_test_m, log, report, extras)
        if getattr(args, "served_default", False):
            served_name, served_params = use_served_default(name, old, methods, val, build_val_m, build_test_m, log,
                                                            report, extras)
        gru_cache = sequential.CACHE / f"gru-tune-{sequential.signature(val, [GRU_GRID, args.gru_epochs, 3])}.json"
        if gru_cache.exists() and methods["sequential"].get("configurations_tuned") != len(GRU_GRID):
            params, val_ndcg, trace = sequential.tune(val, GRU_GRID, args.gru_epochs, 3, log, args.gru_budget_s)
            report("sequential", params, val_ndcg, len(GRU_GRID), lambda p=params: sequential.fit_for_test(test, p),
                   {"model": "GRU4Rec (TensorFlow, full softmax)", "epoch_trace": trace})

        def gains_of(method: str) -> list:
            if method not in gains:
                params = methods[method]["params"]
                if method in SERVED or method in CANDIDATES:
                    build = builders["meta" if method != "coview" and "meta" in builders else None][1]
                    model = build(params)
                elif method == "popularity":
                    model = bl.Popularity(test)
                elif method == "sequential":
                    model = sequential.fit_for_test(test, params)
                else:
                    model = baseline_builders(test, has_users)[method][1](params)
                got = evaluate(model, test)
                gains[method] = got["gains"]
                recomputed.append({"dataset": name, "method": method, "params": params,
                                   "ndcg10": round(got["ndcg10"], 4), "recorded_ndcg10": methods[method]["ndcg10"]})
                log(f"[{name}] {method} recomputed for the bootstrap: {got['ndcg10']:.4f} "
                    f"(recorded {methods[method]['ndcg10']})")
            return gains[method]

        baselines = {m: r for m, r in methods.items() if m not in SERVED and m not in CANDIDATES}
        best = max(baselines, key=lambda m: baselines[m]["ndcg10"])
        versus = dict(old["paired_bootstrap"])
        # a candidate that became served: its recorded "<name>_vs_<baseline>" intervals (an earlier configuration)
        # are kept apart; the served list's are the served_vs_ ones
        stale = {k: versus.pop(k) for k in list(versus) if any(k.startswith(f"{m}_vs_") for m in SERVED)}
        if stale:
            old.setdefault("earlier_candidate_paired_bootstrap", {}).update(stale)
        served_changed = served_name != old["served_list"] or served_name in changed
        for m in baselines:
            if served_changed or m in changed or f"served_vs_{m}" not in versus:
                versus[f"served_vs_{m}"] = paired_bootstrap(gains_of(served_name), gains_of(m))
            for c in CANDIDATES:
                if c in methods and (c in changed or m in changed or f"{c}_vs_{m}" not in versus):
                    versus[f"{c}_vs_{m}"] = paired_bootstrap(gains_of(c), gains_of(m))
        if served_name != "coview" and (best != old["best_baseline"] or best in changed
                                         or "coview_only_vs_best_baseline" not in versus):
            versus["coview_only_vs_best_baseline"] = paired_bootstrap(gains_of("coview"), gains_of(best))
        old.update({
            "served_list": served_name, "served_params": served_params,
            "hr10": methods[served_name]["hr10"], "ndcg10": methods[served_name]["ndcg10"],
            "ndcg10_per_session": methods[served_name]["ndcg10_per_session"],
            "best_baseline": best, "best_baseline_ndcg10": baselines[best]["ndcg10"],
            "served": {m: methods[m] for m in SERVED if m in methods},
            "candidates": {m: methods[m] for m in CANDIDATES if m in methods}, "baselines": baselines,
            "paired_bootstrap": versus, **extras})
    datasets = result["datasets"]
    first = datasets.get("movielens") or next(iter(datasets.values()))
    result.update({
        "hr10": first["hr10"], "ndcg10": first["ndcg10"], "measure": first["served_params"]["measure"],
        "served_list": first["served_list"], "params": first["served_params"],
        "best_baseline": first["best_baseline"], "best_baseline_ndcg10": first["best_baseline_ndcg10"],
        "baselines": first["baselines"], "paired_bootstrap": first["paired_bootstrap"],
        "blend": first["served"].get("coview_metadata_blend"),
        "item_model_blend": (first.get("candidates") or {}).get("coview_item_model_blend"),
        "goal_met": {name: all(c["ci95"][0] > 0 for key, c in d["paired_bootstrap"].items()
                               if key.startswith("served_vs_")) for name, d in datasets.items()},
        "broker": OFFLINE_BROKER,
        "test_reads": result["test_reads"] + tests.reads,
        "recomputed_for_bootstrap": result.get("recomputed_for_bootstrap", []) + recomputed,
        "commands": result.get("commands", []) + [
            ".venv/bin/python -m bench.coview_quality " + " ".join(argv if argv is not None else sys.argv[1:])],
        "seconds": round(result.get("seconds", 0.0) + time.perf_counter() - began, 1),
    })
    if getattr(args, "note", None):
        result["notes"] = result.get("notes", []) + list(args.note)
    print_table(result)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {args.out}")
    return result


def add_served_blend(name, old, methods, val, test, has_users, build_val, build_test, log, report,
                     extras: dict) -> tuple[str, dict]:
    """``--add-served-blend``: the item-model blend the worker now serves, tuned on validation over
    ``served_blend_candidates`` (list length K, weight, context) on top of the recorded served configuration;
    reads the test slice once if it beats the recorded blend on validation. EASE and SAR get an extra grid
    (``extra_baseline_candidates``) and read the test slice once if it beats their recorded validation figure.
    The served list is then the served variant best on validation. Returns (served name, its params)."""
    base = {k: v for k, v in old["served_params"].items() if k not in ("model_l2", "model_weight", "k")}
    candidates = served_blend_candidates(base)
    log(f"[{name}] tuning the served item-model blend ({len(candidates)} configurations)")
    params, val_ndcg, trace = tune("coview+item_model", candidates, build_val, val, log)
    recorded = methods.get("coview_item_model_blend")
    tuned_before = recorded["configurations_tuned"] if recorded else methods[old["served_list"]]["configurations_tuned"]
    extras["served_blend_validation_trace"] = trace
    if recorded is None or val_ndcg > recorded["val_ndcg10"] + 1e-9:
        report("coview_item_model_blend", params, val_ndcg, tuned_before + len(candidates), lambda: build_test(params),
               {"item_model": f"EASE on the fit sessions, <= {MODEL_ITEMS} titles (most sessions), top k per title",
                "served": True})
    else:
        recorded["configurations_tuned"] = tuned_before + len(candidates)
    val_builders, test_builders = baseline_builders(val, has_users), baseline_builders(test, has_users)
    for method in ("ease", "sar"):
        extra = extra_baseline_candidates(method, has_users, val)
        log(f"[{name}] extra grid for {method} ({len(extra)} configurations)")
        params_b, val_b, trace_b = tune(method, extra, val_builders[method][1], val, log)
        extras[f"{method}_extra_grid_validation_trace"] = trace_b
        total = methods[method]["configurations_tuned"] + len(extra)
        if val_b > methods[method]["val_ndcg10"] + 1e-9:
            report(method, params_b, val_b, total, lambda m=method, p=params_b: test_builders[m][1](p))
        else:
            methods[method]["configurations_tuned"] = total
    served = max((m for m in SERVED if m in methods), key=lambda m: methods[m]["val_ndcg10"])
    return served, methods[served]["params"]


# --served-default: what the worker serves on every stream (streams/agents/coview.py): the item model's ridge
# (its MODEL_CONFIG) and the prefix context the bench scores with (the MovieLens choice of --add-served-blend);
# list length and blend weight are the worker's settings (infra/settings.py VITRINA_COVIEW_K / _MODEL_WEIGHT)
SERVED_MODEL_L2 = 200.0
SERVED_CONTEXT = 20


def served_default_params(recorded: dict) -> dict:
    from infra.settings import Settings

    settings = Settings()  # the VITRINA_COVIEW_* variables, read once here as in the worker
    base = {k: v for k, v in recorded.items() if k not in ("model_l2", "model_weight", "k", "context")}
    return dict(base, context=SERVED_CONTEXT, model_l2=SERVED_MODEL_L2, model_weight=settings.coview_model_weight,
                k=settings.coview_k)


def use_served_default(name, old, methods, val, build_val, build_test, log, report, extras: dict) -> tuple[str, dict]:
    """``--served-default``: the served list of every dataset is the worker's one configuration
    (``served_default_params``), not a per-dataset choice. Where the recorded ``coview_item_model_blend``
    already has it, nothing is read; otherwise it is scored on validation and reads the test slice once, and
    the recorded per-dataset-tuned entry is kept beside it (``coview_item_model_blend_tuned_per_dataset``)."""
    recorded = methods["coview_item_model_blend"]
    params = served_default_params(recorded["params"])
    extras["served_default_params"] = params
    if recorded["params"] == params:
        log(f"[{name}] the recorded item-model blend is the served default: no new test read")
        return "coview_item_model_blend", params
    val_ndcg = evaluate(build_val(params), val)["ndcg10"]
    log(f"[{name}] served default {params}: val ndcg10 {val_ndcg:.4f} (per-dataset tuned: {recorded['val_ndcg10']})")
    extras["coview_item_model_blend_tuned_per_dataset"] = dict(recorded)
    report("coview_item_model_blend", params, val_ndcg, recorded["configurations_tuned"], lambda: build_test(params),
           {"item_model": recorded.get("item_model"), "served": True, "served_default": True})
    return "coview_item_model_blend", params


def assemble(datasets: dict, reads: list, ratings, skip: set, argv, began: float) -> dict:
    first = datasets.get("movielens") or next(iter(datasets.values()))
    result = {
        "hr10": first["hr10"], "ndcg10": first["ndcg10"],
        "measure": first["served_params"]["measure"], "served_list": first["served_list"],
        "params": first["served_params"], "best_baseline": first["best_baseline"],
        "best_baseline_ndcg10": first["best_baseline_ndcg10"], "baselines": first["baselines"],
        "paired_bootstrap": first["paired_bootstrap"],
        "per_measure": first["per_measure_validation"], "coview_only_best_measure": {k: first["served"]["coview"][k] for k in ("hr10", "ndcg10")},
        "blend": first["served"].get("coview_metadata_blend"),
        "streaming": None,
        "broker": OFFLINE_BROKER,
        "split": first["split"],
        "protocol": PROTOCOL,
        "datasets": datasets,
        "goal_met": {name: all(c["ci95"][0] > 0 for key, c in d["paired_bootstrap"].items()
                               if key.startswith("served_vs_")) for name, d in datasets.items()},
        "test_reads": reads,
        "throughput": throughput(ratings, 20_000) if "throughput" not in skip else None,
        "defaults": defaults(),
        "dataset": first["dataset"],
        "command": ".venv/bin/python -m bench.coview_quality " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - began, 1),
    }
    return result


def merge(paths: list[Path], out: Path, data: Path, argv) -> dict:
    """One result file from per-dataset runs (each ran in its own process)."""
    began = time.perf_counter()
    datasets, reads, seconds = {}, [], 0.0
    for path in paths:
        part = json.loads(path.read_text())
        datasets.update(part["datasets"])
        reads += part["test_reads"]
        seconds += part["seconds"]
    result = assemble(datasets, reads, load_ratings(data), set(), argv, began)
    result["seconds"] = round(seconds + result["seconds"], 1)
    result["merged_from"] = [str(p) for p in paths]
    print_table(result)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def bench_rsc(path: Path):
    from bench.quality.protocol import rsc_slices

    return rsc_slices(path)


def defaults() -> dict:
    import inspect

    prior = inspect.signature(blend).parameters["prior"].default
    return {"session": asdict(SessionConfig()), "coview": asdict(CoviewConfig()),
            "similarity": asdict(SimilarityConfig()), "blend_prior": prior}


def print_table(result: dict) -> None:
    for name, d in result["datasets"].items():
        print(f"\n{name}: method  NDCG@10  HR@10  NDCG@10/session")
        for method, r in {**d["served"], **d["baselines"]}.items():
            print(f"  {method:<24} {r['ndcg10']:.4f}  {r['hr10']:.4f}  {r['ndcg10_per_session']:.4f}")
        for key, c in d["paired_bootstrap"].items():
            print(f"  {key}: {c['ndcg10_diff']:+.4f} {c['ci95']}  per session {c['per_session_ndcg10_diff']:+.4f} "
                  f"{c['per_session_ci95']}")


if __name__ == "__main__":
    main()
