"""Data, splits and the next-item protocol of the fair co-view quality bench.

Sessions
    A session is the time-ordered list of its events ``(item, time_ms)``; events that share a
    timestamp are sorted by item id (never by file order). Two datasets:

    * MovieLens ml-latest-small: ratings become views and go through vitrina's sessionizer
      (30-min inactivity gap); sessions starting in the last 20 % of the time range are the test
      slice, the last 30 % (by count) of the earlier sessions the validation slice. Models for the
      test slice see every view before the test instant; models for validation every view before
      the validation instant.
    * RSC15-100k (session-rec's prepared split): fit on ``train_tr``, validate on ``train_valid``;
      fit on ``train_full``, test on ``test``.

Targets (same-second ties are unordered)
    Events of a session are grouped by timestamp. Each group after the first is one target: the
    prediction is made from the earlier groups only and counts as a hit at the best rank reached
    by ANY title of the group (a group of titles rated in the same second has no order between
    them). Titles already seen earlier in the session are removed from the group and from the
    candidates (a "similar" list never repeats a title); a group left empty is dropped.

Ranking
    Every method returns a score for every title of the catalogue (the titles seen in the fit
    data, ordered by fit popularity); titles already in the session are excluded; equal scores
    (the unscored tail included) are broken by fit popularity, the same rule for every method.
    A target title outside the catalogue is a miss for every method.

Metrics
    NDCG@10 and HitRate@10 per target (micro average) and per session (mean over sessions of the
    session's mean); a paired bootstrap over sessions gives the 95 % interval of a difference.
"""
from __future__ import annotations

import csv
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

TOP = 10


@dataclass
class Session:
    sid: str
    user: str
    items: list[str]
    times: list[int]  # ms, non-decreasing


@dataclass
class Prefix:
    """What a method sees before one target."""

    seq: list[int]  # catalogue indices of the earlier events in order (repeats kept, unknown titles dropped)
    recent: list[tuple[int, int]]  # (catalogue index, distance) distinct titles newest first; ties share a distance
    seen: list[int]  # catalogue indices already in the session (excluded)
    time_ms: int


@dataclass
class Target:
    session: int  # index of the session in the slice
    prefix: Prefix
    wanted: list[int]  # catalogue indices of the group's titles (-1: not in the catalogue)


@dataclass
class Slice:
    """One fit/evaluate pair (validation or test)."""

    name: str
    fit: list[Session]
    evaluate: list[Session]
    cut_ms: int  # "now" of the frozen models
    catalogue: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)

    def prepare(self) -> Slice:
        counts = Counter(item for s in self.fit for item in s.items)
        self.catalogue = [item for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        self.index = {item: i for i, item in enumerate(self.catalogue)}
        self.targets = list(targets_of(self.evaluate, self.index))
        return self

    @property
    def n_items(self) -> int:
        return len(self.catalogue)


def groups_of(session: Session) -> list[tuple[int, list[str]]]:
    out: list[tuple[int, list[str]]] = []
    for item, t in zip(session.items, session.times):
        if out and out[-1][0] == t:
            if item not in out[-1][1]:
                out[-1][1].append(item)
        else:
            out.append((t, [item]))
    return out


def targets_of(sessions: Sequence[Session], index: dict[str, int]):
    for s_i, session in enumerate(sessions):
        groups = groups_of(session)
        for g in range(1, len(groups)):
            seen_items = {item for _, members in groups[:g] for item in members}
            wanted = [m for m in groups[g][1] if m not in seen_items]
            if not wanted:
                continue
            seq = [index[item] for _, members in groups[:g] for item in sorted(members) if item in index]
            recent: list[tuple[int, int]] = []
            placed: set[str] = set()
            for distance, (_, members) in enumerate(reversed(groups[:g]), 1):
                for item in sorted(members):
                    if item not in placed:
                        placed.add(item)
                        if item in index:
                            recent.append((index[item], distance))
            yield Target(s_i, Prefix(seq, recent, [index[i] for i in seen_items if i in index], groups[g][0]),
                         [index.get(m, -1) for m in wanted])


# ----------------------------------------------------------------------------- scoring


class Method(Protocol):
    def scores(self, prefixes: Sequence[Prefix]) -> np.ndarray:  # (len(prefixes), n_items)
        ...


def _gain_of(row: np.ndarray, wanted: list[int]) -> float:
    best = TOP
    for w in wanted:
        if w < 0:
            continue
        value = row[w]
        if value == -np.inf:
            continue
        rank = int(np.count_nonzero(row > value)) + int(np.count_nonzero(row[:w] == value))
        best = min(best, rank)
    return 1.0 / math.log2(best + 2) if best < TOP else 0.0


def target_gains(method: Method, data: Slice, batch: int = 256):
    """(target, NDCG@10 gain) for every target of the slice, in order (titles already seen excluded)."""
    targets = data.targets
    for start in range(0, len(targets), batch):
        chunk = targets[start:start + batch]
        rows = np.asarray(method.scores([t.prefix for t in chunk]), dtype=np.float64)
        for row, target in zip(rows, chunk):
            row = row.copy()
            if target.prefix.seen:
                row[target.prefix.seen] = -np.inf
            yield target, _gain_of(row, target.wanted)


def evaluate(method: Method, data: Slice, batch: int = 256) -> dict:
    """Per-session NDCG@10 gains and the summary figures."""
    gains: list[list[float]] = [[] for _ in data.evaluate]
    for target, gain in target_gains(method, data, batch):
        gains[target.session].append(gain)
    return summary([g for g in gains if g])


def summary(gains: list[list[float]]) -> dict:
    flat = [g for s in gains for g in s]
    per_session = [sum(s) / len(s) for s in gains]
    return {"ndcg10": sum(flat) / len(flat), "hr10": sum(1 for g in flat if g > 0) / len(flat),
            "ndcg10_per_session": sum(per_session) / len(per_session),
            "hr10_per_session": sum(sum(1 for g in s if g > 0) / len(s) for s in gains) / len(gains),
            "targets": len(flat), "sessions": len(gains), "gains": gains}


def rounded(result: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k != "gains"}


def paired_bootstrap(ours: list[list[float]], theirs: list[list[float]], rounds: int = 2000) -> dict:
    """95 % interval of the NDCG@10 difference (per target and per session), resampling sessions (seeded)."""
    rng = np.random.default_rng(20240501)
    sums = np.array([sum(a) - sum(b) for a, b in zip(ours, theirs)])
    counts = np.array([len(a) for a in ours], dtype=np.float64)
    means = sums / counts
    picks = rng.integers(0, len(sums), size=(rounds, len(sums)))
    diffs = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    session_diffs = means[picks].mean(axis=1)
    return {"ndcg10_diff": round(float(sums.sum() / counts.sum()), 4),
            "ci95": [round(float(np.percentile(diffs, 2.5)), 4), round(float(np.percentile(diffs, 97.5)), 4)],
            "share_of_resamples_ours_better": round(float((diffs > 0).mean()), 3),
            "per_session_ndcg10_diff": round(float(means.mean()), 4),
            "per_session_ci95": [round(float(np.percentile(session_diffs, 2.5)), 4),
                                 round(float(np.percentile(session_diffs, 97.5)), 4)]}


class TestLog:
    """Every evaluation on a test slice, in order; a configuration may read the test slice once."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.reads: list[dict] = []

    def read(self, dataset: str, method: str, params: dict, run: Callable[[], dict]) -> dict:
        key = (dataset, method)
        if any((r["dataset"], r["method"]) == key for r in self.reads):
            raise RuntimeError(f"test slice of {dataset} already read for {method}")
        began = time.time()
        result = run()
        self.reads.append({"dataset": dataset, "method": method, "params": params,
                           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)),
                           "ndcg10": round(result["ndcg10"], 4)})
        return result


# ----------------------------------------------------------------------------- datasets

ML_DATA = Path("/work/shared/data/datasets/movielens-ml-latest-small")
RSC_DATA = Path("/work/shared/data/datasets/rsc15-100k")


def load_ratings(data: Path = ML_DATA) -> list[tuple[str, str, int]]:
    """(user, movie, ms) sorted by (time, user, movie): ties never follow file order."""
    with open(data / "ratings.csv", newline="") as fh:
        rows = [(r["userId"], r["movieId"], int(r["timestamp"]) * 1000) for r in csv.DictReader(fh)]
    rows.sort(key=lambda r: (r[2], r[0], r[1]))
    return rows


def sessions_from_views(views, cut_from: int, cut_before: int, before_ms: int | None = None) -> list[Session]:
    """Sessions (from sessionizer ``ViewCompleted``) whose first view is in [cut_from, cut_before); with
    ``before_ms`` every view before that instant instead (the fit data, sessions cut at the instant)."""
    by: dict[str, list] = defaultdict(list)
    for view in views:
        by[view.session_id].append(view)
    out = []
    for sid, items in by.items():
        items.sort(key=lambda v: v.position_in_session)
        if before_ms is not None:
            items = [v for v in items if v.at_ms < before_ms]
            if not items:
                continue
        elif not cut_from <= items[0].at_ms < cut_before:
            continue
        pairs = sorted(((v.at_ms - 4000, v.item_id) for v in items))
        out.append(Session(sid, items[0].viewer, [p[1] for p in pairs], [p[0] for p in pairs]))
    out.sort(key=lambda s: (s.times[0], s.sid))
    return out


def movielens_slices(views) -> tuple[Slice, Slice, dict]:
    starts: dict[str, int] = {}
    for v in views:
        if v.session_id not in starts or v.at_ms < starts[v.session_id]:
            starts[v.session_id] = v.at_ms
    t_min = min(v.at_ms for v in views) - 4000
    t_max = max(v.at_ms for v in views) - 4000
    t_test = int(t_min + 0.8 * (t_max - t_min))
    train_starts = sorted(t for t in starts.values() if t < t_test)
    t_val = train_starts[int(0.7 * len(train_starts))]
    val = movielens_window("validation", views, t_val, t_test)
    test = movielens_window("test", views, t_test, t_max + 10_000)
    return val, test, {"validation_from_ms": t_val, "test_from_ms": t_test}


def movielens_window(name: str, views, from_ms: int, before_ms: int) -> Slice:
    """Sessions of 2+ views starting in [from_ms, before_ms), fitted on every view before ``from_ms``."""
    return Slice(name, sessions_from_views(views, 0, 0, before_ms=from_ms),
                 [s for s in sessions_from_views(views, from_ms, before_ms) if len(s.items) >= 2], from_ms).prepare()


def load_rsc(path: Path) -> list[Session]:
    by: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with open(path) as fh:
        next(fh)
        for line in fh:
            sid, item, t = line.rstrip("\n").split("\t")
            by[sid].append((int(round(float(t) * 1000)), item))
    out = []
    for sid, events in by.items():
        events.sort()
        out.append(Session(sid, sid, [e[1] for e in events], [e[0] for e in events]))
    out.sort(key=lambda s: (s.times[0], s.sid))
    return out


def rsc_slices(data: Path = RSC_DATA) -> tuple[Slice, Slice]:
    prefix = "yoochoose-clicks-100k_"
    tr, valid = load_rsc(data / f"{prefix}train_tr.txt"), load_rsc(data / f"{prefix}train_valid.txt")
    full, test = load_rsc(data / f"{prefix}train_full.txt"), load_rsc(data / f"{prefix}test.txt")
    val = Slice("validation", tr, [s for s in valid if len(s.items) >= 2], max(s.times[-1] for s in tr))
    tst = Slice("test", full, [s for s in test if len(s.items) >= 2], max(s.times[-1] for s in full))
    return val.prepare(), tst.prepare()


def tie_stats(sessions: Sequence[Session]) -> dict:
    """Share of consecutive events of a session that share their timestamp."""
    pairs = same = 0
    for s in sessions:
        for a, b in zip(s.times, s.times[1:]):
            pairs += 1
            same += a == b
    return {"consecutive_pairs": pairs, "same_timestamp": same, "share": round(same / max(pairs, 1), 4)}
