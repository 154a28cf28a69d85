"""Seeded sample data so the showcase job runs without external data, plus a MovieLens loader.

``sample_world(n_titles, seed=..., now=...)`` gives catalogue title dicts (the catalogue-title event
contract), shelf definition dicts for every kind and device targeting, popularity/CTR stats, similar
lists and sample viewers with histories. Same seed -> same world.
"""
from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from processors.showcase.catalogue import CatalogueIndex
from processors.showcase.config import DEFAULT_POLICY, DEVICE_TYPES, ShowcasePolicy
from processors.showcase.errors import ShowcaseInputError
from processors.showcase.model import Stats, UserHistory, Viewer

GENRES = (
    "drama", "comedy", "action", "thriller", "crime", "sci-fi", "fantasy", "horror", "romance", "documentary",
    "adventure", "detective", "history", "music", "sport", "war", "western", "biography", "mystery", "melodrama",
)
KIDS_GENRES = ("animation", "family", "adventure", "fairy tale", "comedy", "musical")
TAGS = ("4k", "hdr", "exclusive", "based on a book", "award winner", "dolby atmos", "russian", "festival")
_ADJ = (
    "Silent", "Red", "Last", "Hidden", "Broken", "Golden", "Dark", "Lost", "Wild", "Frozen", "Secret", "Northern",
    "Burning", "Quiet", "Endless", "Little", "Iron", "Paper", "Glass", "Midnight", "Blue", "Electric", "Brave",
)
_NOUN = (
    "River", "City", "Winter", "Code", "Road", "Garden", "Dream", "Island", "Signal", "Empire", "Harbour", "Forest",
    "Station", "Letter", "Mountain", "Orchestra", "Detective", "Kingdom", "Summer", "Bridge", "Planet", "Engine",
)
_KIDS_NOUN = ("Bunny", "Dragon", "Robot", "Kitten", "Fox", "Bear", "Penguin", "Train", "Fairy", "Dino")
CHANNELS = tuple(f"ch{i:03d}" for i in range(1, 61))
APP_VERSIONS = ("2.8.0", "2.9.5", "3.0.1", "3.2.0", "3.4.1")


def _utc(now: datetime | None) -> datetime:
    return now if now is not None else datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


def _name(rng: random.Random, kids: bool) -> str:
    noun = rng.choice(_KIDS_NOUN if kids else _NOUN)
    name = f"The {rng.choice(_ADJ)} {noun}"
    return name + (f" {rng.randint(2, 4)}" if rng.random() < 0.1 else "")


def _licence(rng: random.Random, now: datetime) -> tuple[datetime | None, datetime | None]:
    r = rng.random()
    if r < 0.05:  # expired
        return now - timedelta(days=rng.randint(400, 1500)), now - timedelta(days=rng.randint(1, 300))
    if r < 0.08:  # not started yet
        return now + timedelta(days=rng.randint(1, 60)), None
    if r < 0.15:  # ends soon
        return now - timedelta(days=rng.randint(30, 900)), now + timedelta(days=rng.randint(1, 90))
    return now - timedelta(days=rng.randint(1, 2000)), None


def _base_title(rng: random.Random, item_id: str, now: datetime) -> dict[str, Any]:
    kids = rng.random() < 0.12
    adult = not kids and rng.random() < 0.02
    if kids:
        genres = rng.sample(KIDS_GENRES, rng.randint(1, 3))
        age = rng.choice((0, 0, 6, 6, 12))
    elif adult:
        genres = ["adult", rng.choice(("drama", "romance"))]
        age = 18
    else:
        genres = rng.sample(GENRES, rng.randint(1, 3))
        age = rng.choices((0, 6, 12, 16, 18), weights=(5, 10, 30, 35, 20))[0]
    tags = [t for t in TAGS if rng.random() < 0.08]
    if kids and age == 0 and rng.random() < 0.35:
        tags.append("educational")
    year = max(1930, now.year - int(abs(rng.gauss(0, 12))))
    boost = rng.random() < 0.012
    if boost:
        year = now.year
        tags.append("new")
    flags = []
    if rng.random() < (0.08 if kids else 0.04):
        flags.append("banner")
    if not adult and rng.random() < 0.02:
        flags.append("original")
        tags.append("exclusive")
    r = rng.random()
    rights = ["TV", "STB"] if r < 0.05 else (["MOBILE", "TABLET", "WEB"] if r < 0.07 else [])
    start, end = _licence(rng, now)
    name = _name(rng, kids)
    return {
        "item_id": item_id,
        "title": name,
        "original_title": name,
        "description": f"A {'/'.join(genres)} title.",
        "genres": genres,
        "tags": sorted(set(tags)),
        "age_rating": age,
        "kids": kids,
        "adult": adult,
        "paid": rng.random() < 0.25,
        "licence_start": start,
        "licence_end": end,
        "device_rights": rights,
        "boost": boost,
        "series_id": None,
        "season": None,
        "episode": None,
        "editorial_flags": flags,
        "duration_ms": rng.randint(80, 150) * 60_000,
        "release_year": year,
        "rating": None if rng.random() < 0.05 else round(min(10.0, max(1.0, rng.gauss(6.5, 1.4))), 1),
        "updated_at": now - timedelta(days=rng.randint(0, 30), minutes=rng.randint(0, 1440)),
    }


def generate_catalogue(n_titles: int = 5000, *, seed: int = 7, now: datetime | None = None) -> list[dict[str, Any]]:
    """~85% movies, ~15% series (card + episodes; some seasons still releasing weekly), ~2.5% of movies
    with a "sign language" twin (same original title and year)."""
    now = _utc(now)
    rng = random.Random(seed)
    titles: list[dict[str, Any]] = []
    n_series = max(1, int(n_titles * 0.15))
    n_movies = max(1, n_titles - n_series)
    for i in range(n_movies):
        movie = _base_title(rng, f"m{i:05d}", now)
        titles.append(movie)
        if not movie["adult"] and rng.random() < 0.025:
            twin = dict(movie)
            twin.update(
                item_id=movie["item_id"] + "-sl",
                title=movie["title"] + " (sign language)",
                tags=sorted(set(movie["tags"]) | {"sign language"}),
                boost=False,
                editorial_flags=[],
            )
            titles.append(twin)
    for i in range(n_series):
        card = _base_title(rng, f"s{i:04d}", now)
        card.update(series_id=card["item_id"], duration_ms=0, licence_start=now - timedelta(days=rng.randint(200, 2000)), licence_end=None)
        titles.append(card)
        seasons = rng.randint(1, 3)
        releasing = rng.random() < 0.2  # the last season is released weekly around now
        for season in range(1, seasons + 1):
            episodes = rng.randint(4, 8)
            for episode in range(1, episodes + 1):
                if releasing and season == seasons:
                    start = now - timedelta(weeks=episodes // 2) + timedelta(weeks=episode - 1, hours=1)
                else:
                    start = card["licence_start"] + timedelta(days=30 * season + episode)
                titles.append(
                    {
                        **card,
                        "item_id": f"{card['item_id']}e{season:02d}{episode:02d}",
                        "title": f"{card['title']}: S{season}E{episode}",
                        "season": season,
                        "episode": episode,
                        "licence_start": start,
                        "boost": False,
                        "editorial_flags": [],
                        "duration_ms": rng.randint(25, 55) * 60_000,
                    }
                )
    return titles


def _showable(titles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in titles if t["episode"] is None]


def generate_shelf_defs(
    titles: list[dict[str, Any]], *, seed: int = 7, now: datetime | None = None, n_auto: int = 16
) -> list[dict[str, Any]]:
    """About 30 adult shelves (every kind, device pins, app-version A/B targeting) and 10 kids shelves."""
    now = _utc(now)
    rng = random.Random(seed + 1)
    showable = _showable(titles)
    open_now = [
        t for t in showable
        if (t["licence_start"] is None or t["licence_start"] <= now) and (t["licence_end"] is None or t["licence_end"] > now)
    ]
    grown = [t for t in open_now if not t["kids"] and not t["adult"]]
    kids = [t for t in open_now if t["kids"]]

    def ids(pool: list[dict[str, Any]], k: int) -> list[str]:
        return [t["item_id"] for t in rng.sample(pool, min(k, len(pool)))]

    def shelf(shelf_id: str, kind: str, title: str, **extra: Any) -> dict[str, Any]:
        base = {
            "shelf_id": shelf_id, "kind": kind, "title": title, "template_slot": None, "device_types": [],
            "min_app_version": None, "max_app_version": None, "item_ids": [], "rule": None, "links": [],
            "kids": False, "updated_at": now - timedelta(days=1),
        }
        base.update(extra)
        return base

    def rule(**extra: Any) -> dict[str, Any]:
        base = {"genres": [], "tags": [], "min_year": None, "max_age_rating": None, "kids_only": False, "sort": "POPULAR", "limit": 100}
        base.update(extra)
        return base

    banner = [t for t in grown if "banner" in t["editorial_flags"]]
    originals = [t for t in grown if "original" in t["editorial_flags"]]
    recent = [t for t in grown if (t["release_year"] or 0) >= now.year - 1]
    rated = sorted(grown, key=lambda t: -(t["rating"] or 0))[:200]
    defs = [
        shelf("banner_main", "BANNER_CAROUSEL", "Premieres", template_slot=1, item_ids=ids(banner, 5)),
        shelf("continue_watching", "CONTINUE_WATCHING", "Continue watching", template_slot=2),
        shelf("favourite_channels", "FAVOURITE_CHANNELS", "Your channels", template_slot=3, device_types=["TV", "STB", "MOBILE", "TABLET"]),
        shelf("for_you", "ML_FOR_YOU", "For you"),
        shelf("watch_also", "ML_WATCH_ALSO", "Because you watched"),
        shelf("originals_big", "ORIGINALS_BANNER", "KION Originals", template_slot=4, device_types=["TV", "STB"], item_ids=ids(originals, 3)),
        shelf("originals", "ORIGINALS_BANNER", "KION Originals", device_types=["MOBILE", "TABLET", "WEB"], item_ids=ids(originals, 3)),
        shelf("new_releases", "VOD", "New releases", item_ids=ids(recent, 5), rule=rule(min_year=now.year - 2, sort="NEWEST", limit=80)),
        shelf("editors_choice", "VOD", "Editors' choice", item_ids=ids(rated, 24)),
        shelf("top_rated", "AUTO", "Top rated", rule=rule(sort="RATING", limit=100)),
        shelf("popular_now", "AUTO", "Popular now", rule=rule(sort="POPULAR", limit=100)),
        shelf("in_4k", "AUTO", "In 4K", device_types=["TV", "STB"], rule=rule(tags=["4k"], limit=80)),
        shelf("web_picks", "AUTO", "Only on the web", device_types=["WEB"], rule=rule(genres=["documentary", "biography"], sort="RATING")),
        shelf("legacy_popular", "VOD", "Popular (classic app)", max_app_version="2.9.9", item_ids=ids(grown, 30)),
    ]
    genre_order = list(GENRES)
    rng.shuffle(genre_order)
    for g in genre_order[:n_auto]:
        extra: dict[str, Any] = {}
        if rng.random() < 0.3:
            extra["max_age_rating"] = 16
        if rng.random() < 0.2:
            extra["min_year"] = now.year - 15
        defs.append(shelf(f"auto_{g.replace(' ', '_')}", "AUTO", g.title(), rule=rule(genres=[g], sort=rng.choice(("POPULAR", "NEWEST", "RATING")), **extra)))
    collections = [d["shelf_id"] for d in defs if d["kind"] == "AUTO"][:4]
    defs.append(
        shelf(
            "super_collections", "SUPER_SHELF", "Collections",
            links=[{"kind": "COLLECTION", "target": c, "cover": f"covers/{c}.jpg"} for c in collections]
            + [{"kind": "TITLE", "target": ids(originals or grown, 1)[0], "cover": "covers/original.jpg"},
               {"kind": "COLLECTION", "target": "no_such_shelf", "cover": "covers/missing.jpg"}],
        )
    )
    defs.append(
        shelf(
            "super_subscription_ab", "SUPER_SHELF", "Subscribe", device_types=["MOBILE"], min_app_version="3.2.0",
            links=[{"kind": "WEB", "target": "https://kion.example/subscribe", "cover": "covers/sub.jpg"},
                   {"kind": "COLLECTION", "target": "top_rated", "cover": "covers/top.jpg"}],
        )
    )
    kids_banner = [t for t in kids if "banner" in t["editorial_flags"]] or kids
    defs += [
        shelf("kids_banner", "BANNER_CAROUSEL", "Cartoons premieres", template_slot=1, kids=True, item_ids=ids(kids_banner, 5)),
        shelf("kids_continue", "CONTINUE_WATCHING", "Continue watching", template_slot=2, kids=True),
        shelf("kids_for_you", "ML_FOR_YOU", "For you", kids=True),
        shelf("kids_animation", "AUTO", "Cartoons", kids=True, rule=rule(genres=["animation"], kids_only=True)),
        shelf("kids_family", "AUTO", "Family", kids=True, rule=rule(genres=["family"], kids_only=True, sort="RATING")),
        shelf("kids_adventure", "AUTO", "Adventures", kids=True, rule=rule(genres=["adventure"], kids_only=True, sort="NEWEST")),
        shelf("kids_fairy", "AUTO", "Fairy tales", kids=True, rule=rule(genres=["fairy tale"], kids_only=True)),
        shelf("kids_little", "AUTO", "For the little ones", kids=True, rule=rule(tags=["educational"], kids_only=True, max_age_rating=0)),
        shelf("kids_popular", "AUTO", "Popular with kids", kids=True, rule=rule(kids_only=True)),
        shelf(
            "kids_super", "SUPER_SHELF", "Kids collections", kids=True,
            links=[{"kind": "COLLECTION", "target": c, "cover": f"covers/{c}.jpg"} for c in ("kids_animation", "kids_family", "kids_fairy")],
        ),
    ]
    return defs


def generate_stats(titles: list[dict[str, Any]], *, seed: int = 7) -> Stats:
    """Zipf-like popularity; CTR grows with popularity; half of the boosted (new) titles have no CTR yet."""
    rng = random.Random(seed + 2)
    showable = [t["item_id"] for t in _showable(titles)]
    order = showable[:]
    rng.shuffle(order)
    popularity = {item: round(100_000 / (rank + 1) ** 0.8, 3) for rank, item in enumerate(order)}
    top = max(popularity.values())
    ctr: dict[str, float] = {}
    boosted = {t["item_id"] for t in titles if t["boost"]}
    for item, pop in popularity.items():
        if item in boosted and rng.random() < 0.5:
            continue
        ctr[item] = round(min(0.3, max(0.001, 0.02 + 0.06 * (pop / top) ** 0.3 + rng.gauss(0, 0.01))), 4)
    return Stats(popularity=popularity, ctr=ctr)


def generate_similar(titles: list[dict[str, Any]], *, seed: int = 7, k: int = 30) -> dict[str, list[tuple[str, float]]]:
    """Item-to-item lists: mostly titles sharing the primary genre (kids with kids), scored by genre
    Jaccard plus noise, best first."""
    rng = random.Random(seed + 3)
    showable = _showable(titles)
    buckets: dict[tuple[bool, str], list[dict[str, Any]]] = {}
    for t in showable:
        buckets.setdefault((t["kids"], t["genres"][0]), []).append(t)
    lists: dict[str, list[tuple[str, float]]] = {}
    for t in showable:
        bucket = buckets[(t["kids"], t["genres"][0])]
        picks = rng.sample(bucket, min(len(bucket), k)) + rng.sample(showable, 5)
        own = set(t["genres"])
        scored: dict[str, float] = {}
        for other in picks:
            if other["item_id"] == t["item_id"]:
                continue
            theirs = set(other["genres"])
            scored[other["item_id"]] = round(0.7 * len(own & theirs) / len(own | theirs) + 0.3 * rng.random(), 4)
        lists[t["item_id"]] = sorted(scored.items(), key=lambda kv: -kv[1])[:k]
    return lists


def generate_history(titles: list[dict[str, Any]], rng: random.Random, *, kids: bool = False, size: int | None = None) -> UserHistory:
    """A plausible history: recent titles (movies and episodes), 0-4 in progress, some series progress."""
    pool = [t for t in titles if t["kids"] == kids and not t["adult"]]
    size = rng.randint(0, 30) if size is None else size
    chosen = rng.sample(pool, min(size, len(pool)))
    in_progress = [t["item_id"] for t in chosen[: rng.randint(0, min(4, len(chosen)))]]
    finished = [t["item_id"] for t in chosen[len(in_progress):]]
    progress: dict[str, tuple[int, int]] = {}
    for t in chosen:
        if t["episode"] is not None:
            key = (t["season"], t["episode"])
            if key > progress.get(t["series_id"], (0, 0)):
                progress[t["series_id"]] = key
    return UserHistory(
        continue_watching=tuple(in_progress),
        watched=tuple(finished),
        series_progress=progress,
        favourite_channels=tuple(rng.sample(CHANNELS, rng.randint(0, 6))),
    )


@dataclass
class SampleWorld:
    now: datetime
    titles: list[dict[str, Any]]
    shelf_defs: list[dict[str, Any]]
    stats: Stats
    similar: dict[str, list[tuple[str, float]]]
    seed: int = 7
    _index: CatalogueIndex | None = field(default=None, repr=False)

    def index(self, policy: ShowcasePolicy = DEFAULT_POLICY) -> CatalogueIndex:
        if self._index is None or self._index.policy is not policy:
            self._index = CatalogueIndex.build(
                self.titles, self.shelf_defs, self.stats, now=self.now, policy=policy, similar=self.similar
            )
        return self._index

    def users(self, n: int, *, seed: int | None = None) -> Iterator[tuple[Viewer, UserHistory]]:
        """Viewers with histories: ~10% guests, ~8% kids (age limit 0/6/12), devices weighted to TV/mobile."""
        rng = random.Random(self.seed + 4 if seed is None else seed)
        for i in range(n):
            device = rng.choices(DEVICE_TYPES, weights=(35, 35, 10, 15, 5))[0]
            r = rng.random()
            guest, is_kids = r < 0.10, 0.10 <= r < 0.18
            viewer = Viewer(
                user_id=None if guest else f"u{i:06d}",
                device_type=device,
                now=self.now,
                app_version=rng.choice(APP_VERSIONS),
                age_limit=rng.choice((0, 6, 12)) if is_kids else rng.choice((None, None, 16, 18)),
                is_kids=is_kids,
            )
            yield viewer, (UserHistory() if guest else generate_history(self.titles, rng, kids=is_kids))


def sample_world(n_titles: int = 5000, *, seed: int = 7, now: datetime | None = None, n_auto: int = 16) -> SampleWorld:
    now = _utc(now)
    titles = generate_catalogue(n_titles, seed=seed, now=now)
    return SampleWorld(
        now=now,
        titles=titles,
        shelf_defs=generate_shelf_defs(titles, seed=seed, now=now, n_auto=n_auto),
        stats=generate_stats(titles, seed=seed),
        similar=generate_similar(titles, seed=seed),
        seed=seed,
    )


# -- MovieLens -------------------------------------------------------------------------------------

_YEAR_RE = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def load_movielens_titles(
    path: str | Path, *, now: datetime, seed: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """movies.csv (movieId,title,genres) -> catalogue title dicts. Genres from the '|' list (lower-case,
    "(no genres listed)" -> none), year from "Title (1995)"; "Children" titles are kids titles rated 0/6,
    "Horror" 18, others 12/16; paid, boost and editorial flags are seeded, licences open."""
    rng = random.Random(seed)
    path = Path(path)
    if not path.is_file():
        raise ShowcaseInputError("missing_file", f"{path} does not exist", field="path")
    titles: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"movieId", "title", "genres"} <= set(reader.fieldnames):
            raise ShowcaseInputError("invalid_file", f"{path} is not a MovieLens movies.csv", field="path")
        for row in reader:
            raw_title = (row.get("title") or "").strip()
            movie_id = (row.get("movieId") or "").strip()
            if not movie_id or not raw_title:
                continue
            match = _YEAR_RE.search(raw_title)
            year = int(match.group(1)) if match else None
            name = _YEAR_RE.sub("", raw_title) if match else raw_title
            genres = [g.strip().lower() for g in (row.get("genres") or "").split("|") if g.strip() and not g.startswith("(")]
            kids = "children" in genres
            age = rng.choice((0, 6)) if kids else (18 if "horror" in genres else rng.choice((12, 16)))
            titles.append(
                {
                    "item_id": f"ml{movie_id}", "title": name, "original_title": name, "description": "",
                    "genres": genres, "tags": [], "age_rating": age, "kids": kids, "adult": False,
                    "paid": rng.random() < 0.25, "licence_start": None, "licence_end": None, "device_rights": [],
                    "boost": year is not None and year >= 2018 and rng.random() < 0.1,
                    "series_id": None, "season": None, "episode": None,
                    "editorial_flags": ["banner"] if rng.random() < 0.03 else [],
                    "duration_ms": 0, "release_year": year, "rating": None, "updated_at": now,
                }
            )
            if limit is not None and len(titles) >= limit:
                break
    return titles


def load_movielens_stats(ratings_path: str | Path) -> Stats:
    """ratings.csv -> popularity = number of ratings per movie (item ids "ml<movieId>"). No CTR."""
    counts: dict[str, float] = {}
    with Path(ratings_path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            key = f"ml{row['movieId']}"
            counts[key] = counts.get(key, 0.0) + 1.0
    return Stats(popularity=counts, ctr={})


def shelves_for_catalogue(titles: list[dict[str, Any]], *, seed: int = 7, now: datetime | None = None) -> list[dict[str, Any]]:
    """Shelf definitions for any catalogue of title records (e.g. ``demo.catalogue.synthetic_titles``):
    ``generate_shelf_defs``, plus banner picks (best rated open titles) when no title carries the
    "banner" editorial flag, so the template's slot 1 is not empty."""
    now = _utc(now)
    defs = generate_shelf_defs(titles, seed=seed, now=now)
    if any("banner" in t["editorial_flags"] for t in titles):
        return defs
    open_now = [
        t for t in _showable(titles)
        if not t["kids"] and not t["adult"] and not t["device_rights"]
        and (t["licence_start"] is None or t["licence_start"] <= now) and (t["licence_end"] is None or t["licence_end"] > now)
    ]
    best = sorted(open_now, key=lambda t: (-(t["rating"] or 0.0), t["item_id"]))[:5]
    for shelf in defs:
        if shelf["shelf_id"] == "banner_main":
            shelf["item_ids"] = [t["item_id"] for t in best]
    return defs
