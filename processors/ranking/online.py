"""Per-version online metrics from labelled impressions of vitrina's own pages (pure).

A labelled sample (``ranking.samples``) whose impression was served by a model version
(``model_version``, with the served final score ``model_score``) adds counters:

* ``{v}|n``: impressions; ``{v}|{task}``: positives of each task -> the online rates
  evr/lvr/svr/fpr (share of impressions with the label);
* ``{v}|{task}|{0|1}|{bin}``: a histogram of the served score per label value, ``SCORE_BINS``
  equal bins over ``SCORE_RANGE`` (the final score's range with the default weights) -> AUC of the
  served score against each live label (ties inside a bin count one half; resolution 1/SCORE_BINS).

The counters are plain integer increments, so workers add them into one shared hash in any order
(Redis HINCRBY) and ``summarize`` reads the totals. ``compare_versions`` is a one-sided two-proportion
z-test of a candidate's rate against Production's (normal approximation).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from processors.ranking.registry import Decision, TaskCheck
from processors.ranking.tasks import TASKS

SCORE_RANGE = (-1.0, 2.0)
SCORE_BINS = 300
GOOD_TASKS = ("evr", "lvr", "fpr")  # higher is better; svr (abandoned < 3 s) is lower-better


def score_bin(score: float) -> int:
    low, high = SCORE_RANGE
    position = (float(score) - low) / (high - low)
    return min(SCORE_BINS - 1, max(0, int(position * SCORE_BINS)))


def sample_increments(sample: Mapping[str, Any]) -> dict[str, int]:
    """Counter increments of one labelled sample; {} when it was not served by a model version."""
    version = sample.get("model_version")
    labels = sample.get("labels")
    if not version or not isinstance(labels, Mapping):
        return {}
    out: dict[str, int] = {f"{version}|n": 1}
    score = sample.get("model_score")
    bin_ = score_bin(score) if isinstance(score, (int, float)) and math.isfinite(score) else None
    for task in TASKS:
        positive = bool(labels.get(task))
        if positive:
            out[f"{version}|{task}"] = 1
        if bin_ is not None:
            out[f"{version}|{task}|{int(positive)}|{bin_}"] = 1
    return out


def merge_increments(samples: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for sample in samples:
        for key, value in sample_increments(sample).items():
            total[key] += value
    return dict(total)


def histogram_auc(positives: list[int], negatives: list[int]) -> float | None:
    """AUC from score histograms (ascending bins): P(score+ > score-) + 0.5 P(same bin)."""
    n_pos, n_neg = sum(positives), sum(negatives)
    if n_pos == 0 or n_neg == 0:
        return None
    below = 0
    wins = 0.0
    for pos, neg in zip(positives, negatives, strict=True):
        wins += pos * (below + 0.5 * neg)
        below += neg
    return wins / (n_pos * n_neg)


def summarize(counters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """version -> {impressions, evr..fpr rates, auc_evr..auc_fpr} from the shared counters."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    hist: dict[tuple[str, str, int], list[int]] = {}
    for raw_key, raw_value in counters.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        value = int(raw_value)
        parts = key.split("|")
        if len(parts) == 2:
            counts[parts[0]][parts[1]] = value
        elif len(parts) == 4 and parts[1] in TASKS:
            bins = hist.setdefault((parts[0], parts[1], int(parts[2])), [0] * SCORE_BINS)
            index = int(parts[3])
            if 0 <= index < SCORE_BINS:
                bins[index] += value
    out: dict[str, dict[str, Any]] = {}
    for version, found in counts.items():
        n = found.get("n", 0)
        entry: dict[str, Any] = {"impressions": n}
        for task in TASKS:
            entry[task] = round(found.get(task, 0) / n, 5) if n else None
            auc = histogram_auc(hist.get((version, task, 1), [0] * SCORE_BINS),
                                hist.get((version, task, 0), [0] * SCORE_BINS))
            entry[f"auc_{task}"] = None if auc is None else round(auc, 5)
        out[version] = entry
    return out


def two_proportion_p(success_a: int, n_a: int, success_b: int, n_b: int) -> tuple[float, float]:
    """(z, one-sided p) for H1: rate a > rate b (pooled normal approximation)."""
    if n_a == 0 or n_b == 0:
        return 0.0, 1.0
    p_a, p_b = success_a / n_a, success_b / n_b
    pooled = (success_a + success_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0
    z = (p_a - p_b) / se
    return z, 0.5 * math.erfc(z / math.sqrt(2))


def compare_versions(candidate: Mapping[str, Any], production: Mapping[str, Any], *, task: str = "evr",
                     alpha: float = 0.05, min_impressions: int = 1000) -> Decision:
    """Promote when the candidate's ``task`` rate is significantly higher than Production's (one-sided
    z-test at ``alpha``) and its svr rate is not significantly higher (no more early abandons)."""
    n_c, n_p = int(candidate.get("impressions") or 0), int(production.get("impressions") or 0)
    if min(n_c, n_p) < min_impressions:
        return Decision(False, (f"too_few_impressions {n_c}/{n_p} < {min_impressions}",))

    def successes(entry: Mapping[str, Any], name: str, n: int) -> int:
        return round(float(entry.get(name) or 0.0) * n)

    z, p = two_proportion_p(successes(candidate, task, n_c), n_c, successes(production, task, n_p), n_p)
    better = p < alpha
    z_svr, p_svr = two_proportion_p(successes(candidate, "svr", n_c), n_c, successes(production, "svr", n_p), n_p)
    worse_svr = p_svr < alpha
    reasons = (f"{task} {candidate.get(task)} vs {production.get(task)}: z={z:.2f} p={p:.4f}",
               f"svr {candidate.get('svr')} vs {production.get('svr')}: z={z_svr:.2f} p={p_svr:.4f}")
    checks = {task: TaskCheck(candidate.get(task), production.get(task), better),
              "svr": TaskCheck(candidate.get("svr"), production.get("svr"), not worse_svr)}
    return Decision(better and not worse_svr, reasons, checks)
