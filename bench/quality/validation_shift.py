"""Does the MovieLens validation slice predict the test slice? Validation scores only (issue 17).

On the recorded bench (``bench/results/coview_quality.json``) the served list leads EASE by 0.0135
NDCG@10 on validation and by 0.0017 on test. This script checks, without scoring any test session,
the explanations a next attempt would act on:

* **the validation window**: the bench validates on sessions from the 70th percentile of the earlier
  sessions' starts to the test cut (2008-06 .. 2014-03). A rolling origin (a window as long as the test
  window, ending at the test cut) and a window half that long are built the same way (fit on every view
  before the window, evaluate the sessions starting in it);
* **session length**: the served list against EASE by how many titles the session already holds (long
  sessions deplete the per-title lists of unseen titles; EASE scores the whole catalogue);
* **how long the sessions are** when a title is predicted, in each window and in the test slice
  (counts of targets by titles already seen: what a method sees, nothing scored);
* **the fit data's density** before each cut: views in the last 180 / 365 / 730 / 1460 days, and the
  co-view counts' decayed mass with the served half-life (``CoviewConfig.half_life_ms``). This looks
  at fit data only (what a model has at the cut), never at the sessions evaluated after it;
* **which part of the served list** carries each bucket (session 14): the served list's components
  scored alone on every window, co-view only and the item model's per-title list only (K = 200, and
  K = 1000 over every title seen once), beside EASE scoring whole rows;
* **how fast titles follow each other** within a session (``rating_pace``: the share of consecutive
  views of a session at most 5 s apart, and the median gap) in the fit data before the bench's cut, in
  each window, and in the test window: timestamps only, nothing scored.

Both methods run with the configurations the bench recorded (no tuning here). Writes
``bench/results/coview_validation_shift.json``.

    .venv/bin/python -m bench.quality.validation_shift      (about 10 minutes on one core)
"""
from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import time
from datetime import datetime, timezone

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from bench.quality.protocol import Slice, movielens_window, paired_bootstrap, target_gains
from processors.coview.cooccurrence import DAY_MS, CoviewConfig

PREFIX_BUCKETS = ((0, 10), (10, 30), (30, 100), (100, None))  # titles already in the session
DENSITY_DAYS = (180, 365, 730, 1460)
QUICK_GAP_MS = 5000
# the served list's parts scored alone (changes to the recorded served configuration): no metadata, and
# co-view only or the item model's per-title list only (K = 200 as served; K = 1000 over every title seen)
COMPONENTS = {
    "coview_only": {"prior": None, "model_weight": 0.0},
    "model_list_only": {"prior": None, "model_weight": 1.0},
    "model_list_only_k1000_all_titles": {"prior": None, "model_weight": 1.0, "k": 1000, "model_min_sessions": 1},
}


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).date().isoformat()


def per_target(method, data: Slice) -> list[tuple[int, int, float]]:
    """(session index, titles already seen, NDCG@10 gain) per target, as ``protocol.evaluate`` scores them."""
    return [(target.session, len(target.prefix.seen), gain) for target, gain in target_gains(method, data)]


def mean_ndcg(gains: list[tuple[int, int, float]]) -> float:
    return round(float(np.mean([g for *_, g in gains])), 4)


def by_session(gains: list[tuple[int, int, float]]) -> list[list[float]]:
    sessions: dict[int, list[float]] = {}
    for session, _, gain in gains:
        sessions.setdefault(session, []).append(gain)
    return [sessions[s] for s in sorted(sessions)]


def buckets(gains: list[tuple[int, int, float]]) -> list[dict]:
    out = []
    for lo, hi in PREFIX_BUCKETS:
        chosen = [g for _, seen, g in gains if seen >= lo and (hi is None or seen < hi)]
        out.append({"seen": f"{lo}-{hi - 1}" if hi else f">={lo}", "targets": len(chosen),
                    "ndcg10": round(float(np.mean(chosen)), 4) if chosen else None})
    return out


def density(times: list[int], cut_ms: int, half_life_ms: int | None) -> dict:
    """Fit views before ``cut_ms``: how many in the last N days, and their decayed mass."""
    before = bisect.bisect_left(times, cut_ms)
    out = {"views": before}
    for days in DENSITY_DAYS:
        out[f"last_{days}_days"] = before - bisect.bisect_left(times, cut_ms - days * DAY_MS)
    if half_life_ms:
        out["decayed_mass"] = round(sum(math.pow(2.0, (t - cut_ms) / half_life_ms) for t in times[:before]))
    return out


def rating_pace(views, start_ms: int | None, end_ms: int | None) -> dict:
    """Consecutive views of one session with the later one in [start_ms, end_ms): how many, the share at
    most ``QUICK_GAP_MS`` apart, the median gap in seconds. ``views`` are in time order."""
    last: dict[str, int] = {}
    gaps = []
    for view in views:
        before = last.get(view.session_id)
        last[view.session_id] = view.at_ms
        inside = (start_ms is None or view.at_ms >= start_ms) and (end_ms is None or view.at_ms < end_ms)
        if before is not None and inside:
            gaps.append(view.at_ms - before)
    if not gaps:
        return {"gaps": 0, "share_within_5s": None, "median_gap_s": None}
    return {"gaps": len(gaps), "share_within_5s": round(sum(g <= QUICK_GAP_MS for g in gaps) / len(gaps), 3),
            "median_gap_s": float(np.median(gaps)) / 1000}


def main(argv: list[str] | None = None) -> dict:
    from bench import coview_quality as cq

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(cq.RESULT.parent / "coview_validation_shift.json"))
    args = parser.parse_args(argv)
    began = time.perf_counter()
    recorded = json.loads(cq.RESULT.read_text())["datasets"]["movielens"]
    served_params = recorded["served_params"]
    ease_params = recorded["baselines"]["ease"]["params"]
    ratings = cq.load_ratings(cq.DATA)
    ratings.sort(key=lambda r: (r[2], r[0], r[1]))
    views = cq.sessionize(ratings)
    val, _test, cuts = cq.movielens_slices(views)  # the test slice is built but never scored
    t_test, t_val = cuts["test_from_ms"], cuts["validation_from_ms"]
    t_end = max(v.at_ms for v in views) - 4000
    test_days = (t_end - t_test) / DAY_MS
    times = sorted(v.at_ms for v in views)
    half_life = CoviewConfig().half_life_ms
    windows = {"bench": t_val, "rolling_origin": int(t_test - (t_end - t_test)),
               "rolling_origin_half": int(t_test - (t_end - t_test) / 2)}
    result: dict = {"command": "python -m bench.quality.validation_shift", "broker": cq.OFFLINE_BROKER,
                    "served_params": served_params,
                    "ease_params": ease_params, "test_cut": _date(t_test), "test_window_days": round(test_days),
                    "test_slice_scored": False, "windows": {},
                    "fit_density": {"test_cut": density(times, t_test, half_life)},
                    "half_life_days": half_life / DAY_MS if half_life else None}
    for name, cut in windows.items():
        data = val if name == "bench" else movielens_window(name, views, cut, t_test)
        build = cq.served_builder(data, [v for v in views if v.at_ms < cut], cq.metadata_before(cq.DATA, cut))
        served = per_target(build(served_params), data)
        ease = per_target(cq.baseline_builders(data, True)["ease"][1](ease_params), data)
        components = {}
        for label, change in COMPONENTS.items():
            gains = per_target(build(dict(served_params, **change)), data)
            components[label] = {"ndcg10": mean_ndcg(gains), "by_titles_seen": buckets(gains)}
        entry = {"from": _date(cut), "fit_sessions": len(data.fit), "sessions": len(data.evaluate),
                 "targets": len(data.targets),
                 "served_ndcg10": mean_ndcg(served), "ease_ndcg10": mean_ndcg(ease),
                 "served_vs_ease": paired_bootstrap(by_session(served), by_session(ease)),
                 "by_titles_seen": {"served": buckets(served), "ease": buckets(ease)},
                 "served_components": components, "rating_pace": rating_pace(views, cut, t_test)}
        result["windows"][name] = entry
        result["fit_density"][name] = density(times, cut, half_life)
        print(f"{name} (from {entry['from']}): served {entry['served_ndcg10']:.4f}, EASE {entry['ease_ndcg10']:.4f}, "
              f"{entry['targets']} targets", flush=True)
    # how long the test sessions are when a title is predicted: counts of targets only (the prefix a method
    # sees), nothing scored; beside the same counts of each validation window
    result["targets_by_titles_seen"] = {
        name: {b["seen"]: b["targets"] for b in entry["by_titles_seen"]["served"]}
        for name, entry in result["windows"].items()}
    result["targets_by_titles_seen"]["test"] = {
        b["seen"]: b["targets"] for b in buckets([(t.session, len(t.prefix.seen), 0.0) for t in _test.targets])}
    result["rating_pace"] = {"fit_before_bench_cut": rating_pace(views, None, t_val),
                             "test_window": rating_pace(views, t_test, None)}
    result["recorded_test"] = {"served_ndcg10": recorded["ndcg10"],
                               "ease_ndcg10": recorded["baselines"]["ease"]["ndcg10"],
                               "note": "the bench's own test read (coview_quality.json), not recomputed here"}
    result["seconds"] = round(time.perf_counter() - began, 1)
    with open(args.out, "w") as fh:
        fh.write(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["fit_density"], indent=1))
    return result


if __name__ == "__main__":
    main()
