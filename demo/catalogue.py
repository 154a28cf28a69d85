"""Catalogue titles as CatalogueTitle records: a seeded synthetic catalogue, and MovieLens movies.

The main job must run without external data, so it uses ``synthetic_titles``;
tests and benchmarks may load the real MovieLens ``movies.csv`` instead.
"""
from __future__ import annotations

import csv
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

GENRES = ("Drama", "Comedy", "Action", "Thriller", "Romance", "Sci-Fi", "Horror", "Documentary",
          "Animation", "Children", "Crime", "Adventure", "Fantasy", "Mystery")
WORDS = ("night", "city", "river", "last", "secret", "winter", "code", "garden", "storm", "road", "star",
         "house", "silent", "red", "island", "dream", "wolf", "glass", "summer", "empire")
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _title(item_id: str, name: str, genres: list[str], **overrides: object) -> dict:
    record = {
        "item_id": item_id, "title": name, "original_title": name, "description": "", "genres": genres,
        "tags": [], "age_rating": 0, "kids": False, "adult": False, "paid": False,
        "licence_start": None, "licence_end": None, "device_rights": [], "boost": False,
        "series_id": None, "season": None, "episode": None, "editorial_flags": [],
        "duration_ms": 90 * 60_000, "release_year": None, "rating": None, "updated_at": EPOCH,
    }
    record.update(overrides)
    return record


def synthetic_titles(n: int = 500, seed: int = 7) -> list[dict]:
    """Films plus a few series (seasons of episodes), with kids, adult, paid, licence and rights cases."""
    rng = random.Random(seed)
    titles: list[dict] = []
    series_count = max(1, n // 25)
    for s in range(series_count):
        genres = rng.sample(GENRES, 2)
        name = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}"
        for season in (1, 2):
            for episode in range(1, 7):
                titles.append(_title(f"s{s}e{season}{episode:02d}", f"{name} S{season}E{episode}", genres,
                                     series_id=f"series{s}", season=season, episode=episode,
                                     duration_ms=45 * 60_000, age_rating=rng.choice([12, 16]),
                                     rating=round(rng.uniform(5, 9), 1), release_year=2020 + season))
    for i in range(max(0, n - len(titles))):
        genres = rng.sample(GENRES, rng.randint(1, 3))
        kids = "Children" in genres or "Animation" in genres and rng.random() < 0.6
        adult = not kids and rng.random() < 0.03
        tags = []
        if rng.random() < 0.05:
            tags.append("sign language")
        if kids and rng.random() < 0.3:
            tags.append("educational")
        start = EPOCH - timedelta(days=rng.randint(0, 2000))
        expired = rng.random() < 0.03
        titles.append(_title(
            f"m{i}", f"The {rng.choice(WORDS).title()} {rng.choice(WORDS).title()} {i}", genres,
            description=f"A {genres[0].lower()} story about the {rng.choice(WORDS)} and the {rng.choice(WORDS)}.",
            tags=tags, kids=kids, adult=adult,
            age_rating=18 if adult else (0 if kids else rng.choice([6, 12, 16, 18])),
            paid=rng.random() < 0.2, boost=rng.random() < 0.03,
            licence_start=start, licence_end=start + timedelta(days=30) if expired else None,
            device_rights=["TV", "STB"] if rng.random() < 0.04 else [],
            duration_ms=rng.randint(70, 150) * 60_000, release_year=rng.randint(1970, 2026),
            rating=round(rng.uniform(3, 9.5), 1), editorial_flags=["original"] if rng.random() < 0.03 else [],
        ))
    return titles


_YEAR = re.compile(r"\((\d{4})\)\s*$")


def movielens_titles(movies_csv: Path) -> list[dict]:
    """MovieLens movies.csv rows -> titles (item id 'ml<movieId>', genres from the '|' list, year from the title)."""
    titles = []
    with open(movies_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            genres = [g for g in row["genres"].split("|") if g != "(no genres listed)"]
            year = _YEAR.search(row["title"])
            name = _YEAR.sub("", row["title"]).strip()
            kids = "Children" in genres
            titles.append(_title(f"ml{row['movieId']}", name, genres, kids=kids,
                                 age_rating=0 if kids else 12,
                                 release_year=int(year.group(1)) if year else None))
    return titles
