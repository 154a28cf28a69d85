"""Cold start: similar titles from catalogue metadata, blended with co-view lists.

Mail.Ru's "similar videos" fell back to search by title for new or rare videos.
Here the fallback is TF-IDF cosine over metadata tokens: title and original-title
words (``w:``), genres (``g:``), tags (``t:``), series (``s:``) and release decade
(``y:``). Field weights (``FIELD_WEIGHTS``) make a shared genre count more than a
shared common word.

``MetadataIndex`` is incremental: ``add(item_id, tokens)`` updates document
frequencies and an inverted index (token -> set of titles) in O(tokens). The idf is
the current one at query time, ``idf = ln((1 + N) / (1 + df)) + 1``. Document
norms depend on idf, so they are cached and recomputed once the catalogue size has
moved more than ``norm_refresh`` (5%) from the size they were computed at: a bounded
approximation that keeps queries at O(postings of the query's tokens).

The persistent per-title value is the token dict from ``title_tokens`` (small,
JSON-able; e.g. a Faust table keyed by item id); the postings, dfs and norms are
derived in memory and rebuilt from those dicts on start-up.

Mail.Ru's lesson: search by title returns *the same* video (re-uploads), not
similar ones, so candidates whose normalised title equals the query's are skipped.

Series order (``series_key``, ``series_first``): a title's own series comes first in its list.
The series is the catalogue's ``series_id`` when set, else derived from the title: the part before
a colon ("Star Wars: Episode V - ..." -> "star wars"), with a trailing sequel number, roman numeral
or "part N" dropped ("Toy Story 2" -> "toy story") and a trailing article moved back ("Lord of the
Rings, The" -> "lord of the rings"). ``series_first`` puts up to ``slots`` other titles of the
series at the head of the served list, nearest in release order first, the next two releases before
the previous one (the sequel follows its predecessor: IV -> V, VI; VI -> I, II, V); the rest of the
list keeps its order. The index keeps series -> titles incrementally, so this costs a dict lookup.

Children's titles (``is_kids``, ``kids_first``): the list of a children's title (catalogue flag
``kids``, or a genre Children / Kids / Family) holds at least ``KIDS_SHARE`` (half) children's titles
in every head of its first ``KIDS_HEAD`` (10) entries: walking the list, a non-children's title is
passed over (it moves down) while it would break that share, and the list's own children's titles,
then the metadata list's, fill the places. Autoplay after a cartoon should stay a cartoon.

``arrange`` applies both rules to a blended list: the served order.

Blend (``blend``): while co-view data accumulates, both lists are scaled to a top
score of 1 and mixed per candidate as

    score = a * coview + (1 - a) * metadata,   a = support / (support + prior)

with ``support`` the title's decayed view count. With no support the list is pure
metadata; at ``support == prior`` both weigh the same; the metadata share shrinks
as 1 / support afterwards. Default prior 5 (bench/coview_quality.py, MovieLens validation NDCG@10 with
series order and the children's rule: prior 2 0.0489, 5 0.0485, 20 0.0381; series order +0.0016 and the
children's rule +0.0003 over the plain blend; on test the served list reads 0.0437 vs co-view alone 0.0409).
"""
from __future__ import annotations

import heapq
import math
import re
import unicodedata
from typing import Any, Iterable, Mapping

__all__ = [
    "FIELD_WEIGHTS",
    "normalise_title",
    "title_tokens",
    "MetadataIndex",
    "blend",
    "blend_weight",
    "DEFAULT_BLEND_PRIOR",
    "series_key",
    "series_first",
    "SERIES_SLOTS",
    "KIDS_SHARE",
    "KIDS_HEAD",
    "is_kids",
    "kids_first",
    "arrange",
]

SERIES_SLOTS = 3  # other titles of a title's series placed at the head of its list
KIDS_SHARE = 0.5  # least share of children's titles in each head of a children's title's list
KIDS_HEAD = 10
_KIDS_GENRES = frozenset({"children", "kids", "family", "детские", "детский", "семейный", "семейные"})
DEFAULT_BLEND_PRIOR = 5.0  # see the module docstring: chosen on the MovieLens validation slice
FIELD_WEIGHTS = {"w": 1.0, "g": 1.5, "t": 1.0, "s": 3.0, "y": 0.5}
_WORD = re.compile(r"\w+", re.UNICODE)
# Words that say nothing about a title's content (English and Russian articles etc.).
_STOP_WORDS = frozenset(
    "a an the and or of in on at to for with from by is it la le les de der die das "
    "и в во на с со к по за из о об от до у не".split()
)


def normalise_title(text: str) -> str:
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD.findall(text))


_SEQUEL = re.compile(r"(?:\s+(?:part|chapter|episode|vol|volume))?\s+(?:\d{1,2}|[ivx]{1,4})$")
_ARTICLE = re.compile(r"^(.*?)\s+(the|a|an|la|le|les|l|el|il|der|die|das)$")


def series_key(title: Mapping[str, Any]) -> str:
    """The title's series: ``series_id`` if given, else derived from its name ("" when there is none)."""
    series = title.get("series_id")
    if series:
        return "id:" + str(series)
    name = title.get("title")
    if not isinstance(name, str) or not name.strip():
        return ""
    text = unicodedata.normalize("NFKC", name).casefold()
    text = re.sub(r"\([^)]*\)", " ", text)  # alternative titles and years in brackets
    if ":" in text:
        text = text.split(":", 1)[0]
    elif " - " in text:
        text = text.split(" - ", 1)[0]
    text = " ".join(_WORD.findall(text.replace("'", "")))
    moved = _ARTICLE.match(text)  # "lord of the rings the" (from ", The") -> "lord of the rings"
    if moved:
        text = moved.group(1)
    for _ in range(2):
        text = _SEQUEL.sub("", text).strip()
    return "t:" + text if text else ""


def is_kids(title: Mapping[str, Any]) -> bool:
    """A children's title: the catalogue's ``kids`` flag, or a children's / family genre."""
    if title.get("kids") is True:
        return True
    genres = title.get("genres")
    return any(normalise_title(g) in _KIDS_GENRES for g in genres if isinstance(g, str)) \
        if isinstance(genres, (list, tuple)) else False


def _words(text: str | None) -> Iterable[str]:
    if not isinstance(text, str):
        return
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold()):
        if len(word) > 1 and word not in _STOP_WORDS and not word.isdigit():
            yield word


def title_tokens(title: Mapping[str, Any]) -> dict[str, float]:
    """Weighted tokens of a catalogue title record (the contract's dict)."""
    tokens: dict[str, float] = {}

    def add(token: str, weight: float) -> None:
        tokens[token] = tokens.get(token, 0.0) + weight

    seen_words: set[str] = set()
    for field in ("title", "original_title"):
        for word in _words(title.get(field)):
            if word not in seen_words:  # original title often repeats the title
                seen_words.add(word)
                add("w:" + word, FIELD_WEIGHTS["w"])
    genres, tags = title.get("genres"), title.get("tags")
    for genre in genres if isinstance(genres, (list, tuple)) else ():
        name = normalise_title(genre)
        if name:
            tokens["g:" + name] = FIELD_WEIGHTS["g"]
    for tag in tags if isinstance(tags, (list, tuple)) else ():
        name = normalise_title(tag)
        if name:
            tokens["t:" + name] = FIELD_WEIGHTS["t"]
    series = title.get("series_id")
    if series:
        tokens["s:" + str(series)] = FIELD_WEIGHTS["s"]
    year = title.get("release_year")
    if isinstance(year, int) and year > 0:
        tokens[f"y:{year // 10}"] = FIELD_WEIGHTS["y"]
    return tokens


class MetadataIndex:
    """Incremental TF-IDF cosine index over title tokens."""

    def __init__(self, norm_refresh: float = 0.05) -> None:
        self.docs: dict[str, dict[str, float]] = {}
        self.names: dict[str, str] = {}
        self._postings: dict[str, set[str]] = {}
        self._norms: dict[str, tuple[int, float]] = {}
        self._norm_refresh = norm_refresh
        self.series: dict[str, set[str]] = {}  # series key -> titles
        self.series_of: dict[str, tuple[str, int]] = {}  # title -> (series key, release year or 0)
        self.kids: set[str] = set()  # children's titles (``is_kids``)

    def __len__(self) -> int:
        return len(self.docs)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.docs

    def add(self, item_id: str, tokens: Mapping[str, float], name: str = "") -> None:
        """Add or replace a title."""
        if item_id in self.docs:
            self.remove(item_id)
        doc = {token: float(weight) for token, weight in tokens.items() if weight > 0}
        self.docs[item_id] = doc
        self.names[item_id] = normalise_title(name)
        for token in doc:
            self._postings.setdefault(token, set()).add(item_id)

    def add_title(self, title: Mapping[str, Any]) -> None:
        item_id = str(title["item_id"])
        self.add(item_id, title_tokens(title), title.get("title") or "")
        if is_kids(title):
            self.kids.add(item_id)
        key = series_key(title)
        if key:
            year = title.get("release_year")
            self.series_of[item_id] = (key, year if isinstance(year, int) else 0)
            self.series.setdefault(key, set()).add(item_id)

    def series_members(self, item_id: str) -> list[str]:
        """Other titles of the item's series in release distance, the next two releases before the previous
        one (IV -> V, VI, I; VI -> I, II, V, III, IV; Fellowship -> Two Towers, Return of the King, the 1978
        film); ties by title id."""
        found = self.series_of.get(item_id)
        if found is None:
            return []
        key, year = found
        name = self.names.get(item_id, "")
        # a title of the same name is a remake or a re-upload, not an instalment (see the Mail.Ru lesson)
        others = [(self.series_of[o][1], o) for o in self.series.get(key, ())
                  if o != item_id and (not name or self.names.get(o) != name)]
        later = sorted((y, o) for y, o in others if (y, o) > (year, item_id))
        earlier = sorted(((y, o) for y, o in others if (y, o) < (year, item_id)), reverse=True)
        out = []
        for step in range(max((len(later) + 1) // 2, len(earlier))):  # two next releases, then the previous one
            out += [pair[1] for pair in (later[2 * step:2 * step + 2] + earlier[step:step + 1])]
        return out

    def remove(self, item_id: str) -> None:
        self.kids.discard(item_id)
        found = self.series_of.pop(item_id, None)
        if found is not None:
            members = self.series.get(found[0])
            if members is not None:
                members.discard(item_id)
                if not members:
                    del self.series[found[0]]
        doc = self.docs.pop(item_id, None)
        self.names.pop(item_id, None)
        self._norms.pop(item_id, None)
        if doc is None:
            return
        for token in doc:
            posting = self._postings.get(token)
            if posting is not None:
                posting.discard(item_id)
                if not posting:
                    del self._postings[token]

    def idf(self, token: str) -> float:
        df = len(self._postings.get(token, ()))
        return math.log((1 + len(self.docs)) / (1 + df)) + 1.0

    def _norm(self, item_id: str) -> float:
        size = len(self.docs)
        cached = self._norms.get(item_id)
        if cached is not None and abs(cached[0] - size) <= self._norm_refresh * size:
            return cached[1]
        norm = math.sqrt(sum((w * self.idf(t)) ** 2 for t, w in self.docs[item_id].items()))
        self._norms[item_id] = (size, norm)
        return norm

    def similar_to_tokens(
        self, tokens: Mapping[str, float], k: int = 50, exclude: Iterable[str] = (), name: str = ""
    ) -> list[tuple[str, float]]:
        """Titles most similar to a token dict (need not be in the index)."""
        query = {t: w * self.idf(t) for t, w in tokens.items() if w > 0 and t in self._postings}
        query_norm = math.sqrt(sum(v * v for v in query.values()))
        if query_norm == 0.0:
            return []
        dots: dict[str, float] = {}
        for token, q_weight in query.items():
            idf = self.idf(token)
            for other in self._postings[token]:
                dots[other] = dots.get(other, 0.0) + q_weight * self.docs[other][token] * idf
        skip = set(exclude)
        same_name = normalise_title(name)
        scored = []
        for other, dot in dots.items():
            if other in skip or (same_name and self.names.get(other) == same_name):
                continue
            scored.append((dot / (query_norm * self._norm(other)), other))
        return [(other, score) for score, other in heapq.nlargest(k, scored)]

    def similar(self, item_id: str, k: int = 50) -> list[tuple[str, float]]:
        doc = self.docs.get(item_id)
        if doc is None:
            return []
        return self.similar_to_tokens(doc, k, exclude=(item_id,), name=self.names.get(item_id, ""))


def blend_weight(support: float, prior: float) -> float:
    """Weight of the co-view list: support / (support + prior)."""
    if support <= 0.0:
        return 0.0
    return support / (support + prior) if prior > 0.0 else 1.0


def blend(
    coview: list[tuple[str, float]],
    metadata: list[tuple[str, float]],
    support: float,
    prior: float = DEFAULT_BLEND_PRIOR,
    k: int = 50,
) -> tuple[list[tuple[str, float]], str]:
    """Mix a co-view list and a metadata list; returns (list, source) with source
    "COVIEW", "METADATA" or "BLEND" (the ``SimilarListUpdated.source`` symbols)."""
    weight = blend_weight(support, prior) if coview else 0.0
    if weight >= 1.0 or not metadata:
        return coview[:k], "COVIEW"
    if weight <= 0.0:
        return metadata[:k], "METADATA"
    top_cv = coview[0][1] or 1.0
    top_md = metadata[0][1] or 1.0
    mixed: dict[str, float] = {}
    for item, score in coview:
        mixed[item] = weight * score / top_cv
    for item, score in metadata:
        mixed[item] = mixed.get(item, 0.0) + (1.0 - weight) * score / top_md
    best = heapq.nlargest(k, ((score, item) for item, score in mixed.items()))
    return [(item, score) for score, item in best], "BLEND"


def series_first(
    item_id: str,
    items: list[tuple[str, float]],
    metadata: MetadataIndex | None,
    k: int = 50,
    slots: int = SERIES_SLOTS,
) -> list[tuple[str, float]]:
    """``items`` with up to ``slots`` titles of ``item_id``'s series moved (or added) to the head, in the
    order of ``MetadataIndex.series_members``; their score becomes the list's top score (kept sorted)."""
    if metadata is None or slots <= 0:
        return items[:k]
    members = metadata.series_members(item_id)[:slots]
    if not members:
        return items[:k]
    top = items[0][1] if items else 1.0
    head = [(member, top) for member in members]
    chosen = set(members)
    return (head + [(o, s) for o, s in items if o not in chosen])[:k]


def kids_first(
    item_id: str,
    items: list[tuple[str, float]],
    metadata: MetadataIndex | None,
    fill: list[tuple[str, float]] = (),
    k: int = 50,
    share: float = KIDS_SHARE,
    head: int = KIDS_HEAD,
) -> list[tuple[str, float]]:
    """For a children's title: ``items`` reordered so that every head of the first ``head`` entries holds at
    least ``share`` children's titles, taken from ``items`` and then from ``fill`` (its metadata list);
    other titles keep their relative order and move down. Other titles' lists are returned unchanged."""
    if metadata is None or share <= 0.0 or item_id not in metadata.kids:
        return items[:k]
    kids = metadata.kids
    listed = {o for o, _ in items}
    spare = [(o, s) for o, s in items if o in kids] + [(o, s) for o, s in fill if o in kids and o not in listed
                                                        and o != item_id]
    out: list[tuple[str, float]] = []
    placed: set[str] = set()
    n_kids = 0
    waiting = list(items)
    position = 0
    while len(out) < head and (position < len(waiting) or spare):
        need = n_kids < math.floor(share * (len(out) + 1) + 1e-9)  # the next entry must be a children's title
        if need:
            while spare and spare[0][0] in placed:
                spare.pop(0)
            if not spare:
                need = False
            else:
                choice = spare.pop(0)
                out.append(choice)
                placed.add(choice[0])
                n_kids += 1
                continue
        while position < len(waiting) and waiting[position][0] in placed:
            position += 1
        if position >= len(waiting):
            break
        choice = waiting[position]
        position += 1
        out.append(choice)
        placed.add(choice[0])
        n_kids += choice[0] in kids
    out += [(o, s) for o, s in items if o not in placed]
    # scores follow the new order: the list's own scores, best first, by position (fills extend the last one)
    scores = sorted((s for _, s in items), reverse=True) or [1.0]
    scores += [scores[-1]] * (len(out) - len(scores))
    return [(o, scores[i]) for i, (o, _) in enumerate(out[:k])]


def arrange(
    item_id: str,
    items: list[tuple[str, float]],
    metadata: MetadataIndex | None,
    meta_list: list[tuple[str, float]] = (),
    k: int = 50,
    series_slots: int = SERIES_SLOTS,
    kids_share: float = KIDS_SHARE,
) -> list[tuple[str, float]]:
    """The served order of a blended list: the title's series first (``series_first``), then the children's
    rule (``kids_first``). Pure, deterministic, O(list) plus the series lookup."""
    items = series_first(item_id, items, metadata, k, series_slots)
    return kids_first(item_id, items, metadata, meta_list, k, kids_share)
