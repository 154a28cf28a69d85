"""Personal ML shelves: "for you" (two-stage) and "watch also", plus the user's genre affinity.

"for you":
  stage 1, candidates: the heads (``weights.per_seed``) of the similar lists of the user's most recent
    titles (``weights.seeds``), each list
    weighted by seed recency (1 / (1 + 0.25 * rank)); scores of a candidate are summed; blocked (watched,
    already visible upper), not allowed, and seed titles are skipped; the best ``weights.candidates`` kept.
  stage 2, re-rank: relevance = similarity / max similarity, averaged with the min-max normalised
    ranking score when a ranking score is given for the candidate; with the serving model's scores
    (``model_scored``) relevance = model_share * normalised model score + (1 - model_share) * similarity
    relevance (``weights.model_share``, 1.0 by default: the model's order);
    base = relevance * w_rel + novelty * w_nov + rating * w_rat, with novelty = popularity rank
    percentile counted from the most popular (0) to the least (1) and rating = rating / 10 (0.5 when
    unknown); then MMR: pick greedily the candidate
    maximising lambda * base - (1 - lambda) * (max genre Jaccard with the already picked titles).
"watch also": the similar list of the last watched title, in similarity order, filtered the same way;
  with the serving model's scores, the first ``limit * slack`` allowed titles of that list are re-ordered
  by model score (unscored ones after, in similarity order).
"""
from __future__ import annotations

import heapq
from itertools import islice
from operator import itemgetter
from typing import Callable, Collection, Mapping, Sequence

from .catalogue import CatalogueIndex, SimilarLists
from .config import ForYouWeights


def _similar_of(item: str, similar: SimilarLists, canonical: Mapping[str, str]) -> Sequence[tuple[str, float]]:
    found = similar.get(item)
    if found is None:
        parent = canonical.get(item)
        found = similar.get(parent, ()) if parent is not None and parent != item else ()
    return found


def for_you_candidates(seeds: Sequence[str], similar: SimilarLists, blocked: Collection[str],
                       allowed: Collection[str], index: CatalogueIndex, weights: ForYouWeights) -> dict[str, float]:
    """Stage 1 of "for you": candidate -> summed, recency-weighted similarity (blocked, not allowed and
    seed titles skipped)."""
    canonical, parent = index.canonical, index.episode_parent
    recent = seeds[: weights.seeds]
    excluded = set(blocked)
    excluded.update(canonical.get(s, s) for s in recent)
    scores: dict[str, float] = {}
    get = scores.get
    per_seed = weights.per_seed
    for rank, seed in enumerate(recent):
        decay = 1.0 / (1.0 + 0.25 * rank)
        for candidate, score in islice(_similar_of(seed, similar, canonical), per_seed):
            if candidate not in allowed:
                candidate = parent.get(candidate)
                if candidate is None or candidate not in allowed:
                    continue
            if candidate not in excluded:
                scores[candidate] = get(candidate, 0.0) + decay * score
    return scores


def for_you_pool_size(limit: int, weights: ForYouWeights) -> int:
    """How many stage-1 candidates "for you" keeps (and the model scores) for ``limit`` titles."""
    return min(weights.candidates, max(3 * limit, limit + 10))


def for_you(
    seeds: Sequence[str],
    similar: SimilarLists,
    blocked: Collection[str],
    allowed: Collection[str],
    index: CatalogueIndex,
    limit: int,
    weights: ForYouWeights,
    ranking: Mapping[str, float] | None = None,
    *,
    score_pool: Callable[[Sequence[str]], Mapping[str, float]] | None = None,
    unblocked: Mapping[str, float] | None = None,
) -> list[str]:
    """``unblocked``: stage 1 computed ahead with nothing blocked (``for_you_candidates(..., blocked=())``
    with the same seeds, lists, allowed titles and weights); filtering it gives the same candidates,
    scores and order as computing stage 1 here (a candidate's score sums the same terms either way)."""
    if limit <= 0:
        return []
    if unblocked is not None:
        scores = {item: score for item, score in unblocked.items() if item not in blocked}
    else:
        scores = for_you_candidates(seeds, similar, blocked, allowed, index, weights)
    if not scores:
        return []
    pool = heapq.nlargest(for_you_pool_size(limit, weights), scores.items(), key=itemgetter(1))
    top_similarity = pool[0][1] or 1.0
    ranked: dict[str, float] = {}
    model_scored = False
    if score_pool is not None:
        ranked = dict(score_pool([item for item, _ in pool]))
        model_scored = bool(ranked)
    if not ranked and ranking:
        ranked = {item: ranking[item] for item, _ in pool if item in ranking}
    low, high = (min(ranked.values()), max(ranked.values())) if ranked else (0.0, 0.0)
    span = (high - low) or 1.0
    novelty, rating, masks = index.novelty, index.rating_norm, index.genre_mask
    w_rel, w_nov, w_rat = weights.relevance, weights.novelty, weights.rating
    items: list[str] = []
    base: list[float] = []
    share = weights.model_share if model_scored else 0.5
    for item, similarity in pool:
        relevance = similarity / top_similarity
        if ranked and item in ranked:
            relevance = (1.0 - share) * relevance + share * (ranked[item] - low) / span
        items.append(item)
        base.append(w_rel * relevance + w_nov * novelty.get(item, 0.5) + w_rat * rating.get(item, 0.5))
    return mmr_by_genre(items, base, [masks.get(i, 0) for i in items], limit, weights.mmr_lambda)


def mmr_by_genre(items: Sequence[str], base: Sequence[float], masks: Sequence[int], limit: int, lam: float) -> list[str]:
    """Greedy maximal marginal relevance: each step picks max lam * base - (1 - lam) * max Jaccard of its
    genre set with the already picked titles. Marginal values only fall as picks accumulate, so a lazy
    heap gives exactly the greedy result while re-scoring only the few titles that reach the top."""
    penalty = 1.0 - lam
    heap = [(-lam * b, i) for i, b in enumerate(base)]
    heapq.heapify(heap)
    picked_masks: list[int] = []
    max_sim = [0.0] * len(items)
    checked = [0] * len(items)  # how many picks max_sim[i] already accounts for
    chosen: list[str] = []
    while heap and len(chosen) < limit:
        _, idx = heapq.heappop(heap)
        if penalty > 0.0 and checked[idx] < len(picked_masks):
            mask, best = masks[idx], max_sim[idx]
            for other in picked_masks[checked[idx]:]:
                common = mask & other
                if common:
                    sim = common.bit_count() / (mask | other).bit_count()
                    if sim > best:
                        best = sim
            max_sim[idx], checked[idx] = best, len(picked_masks)
            value = lam * base[idx] - penalty * best
            if heap and value < -heap[0][0]:
                heapq.heappush(heap, (-value, idx))
                continue
        chosen.append(items[idx])
        picked_masks.append(masks[idx])
    return chosen


def watch_also(
    anchor: str | None,
    similar: SimilarLists,
    blocked: Collection[str],
    allowed: Collection[str],
    index: CatalogueIndex,
    limit: int,
    ranking: Mapping[str, float] | None = None,
    *,
    score_pool: Callable[[Sequence[str]], Mapping[str, float]] | None = None,
    slack: int = 3,
) -> list[str]:
    if anchor is None or limit <= 0:
        return []
    take = limit * max(1, slack) if ranking or score_pool is not None else limit
    out = watch_also_candidates(anchor, similar, blocked, allowed, index, take)
    if score_pool is not None:
        ranking = score_pool(out)
    if ranking:
        order = {item: i for i, item in enumerate(out)}
        out.sort(key=lambda i: (i not in ranking, -ranking.get(i, 0.0), order[i]))
    return out[:limit]


def watch_also_candidates(anchor: str, similar: SimilarLists, blocked: Collection[str], allowed: Collection[str],
                          index: CatalogueIndex, take: int) -> list[str]:
    """The first ``take`` allowed titles of the anchor's similar list, in similarity order (the anchor,
    blocked titles and duplicates skipped)."""
    canonical, parent = index.canonical, index.episode_parent
    own = canonical.get(anchor, anchor)
    ordered = sorted(_similar_of(anchor, similar, canonical), key=itemgetter(1), reverse=True)
    out: list[str] = []
    for candidate, _ in ordered:
        if candidate not in allowed:
            candidate = parent.get(candidate)
            if candidate is None or candidate not in allowed:
                continue
        if candidate == own or candidate in blocked or candidate in out:
            continue
        out.append(candidate)
        if len(out) >= take:
            break
    return out


def genre_profile(recent: Sequence[str], index: CatalogueIndex, depth: int = 20) -> dict[str, float]:
    """Recency-weighted genre shares of the user's recent titles (sums to 1)."""
    weights: dict[str, float] = {}
    for rank, item in enumerate(recent[:depth]):
        title = index.titles.get(index.canonical.get(item, item))
        if title is None or not title.genres:
            continue
        share = 1.0 / (1.0 + 0.1 * rank) / len(title.genres)
        for genre in title.genres:
            weights[genre] = weights.get(genre, 0.0) + share
    total = sum(weights.values())
    return {g: w / total for g, w in weights.items()} if total else {}


def shelf_affinity(profile: Mapping[str, float], signature: Mapping[str, float]) -> float:
    return sum(profile.get(g, 0.0) * w for g, w in signature.items())
