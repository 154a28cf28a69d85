"""Viewer checks on the real MovieLens ml-latest-small log: the served list as a viewer reads it.

The served list is ``CoviewIndex.served`` with the default settings (co-view counts of every rating
through the agents' sessionizer and co-occurrence code, blended with the catalogue's metadata list,
put in served order by ``coldstart.arrange``). The rules checked:

1. Sequels: a title whose series (``coldstart.series_key``: the catalogue's series, else the name
   before a colon / without its sequel number) has later instalments lists the next one first and the
   later ones right after it (Star Wars IV -> V, VI; Toy Story -> Toy Story 2; Fellowship -> Two
   Towers, Return of the King); a later instalment lists its direct predecessor in its first 3 entries
   and the first one in its top 10 (Return of the Jedi -> Empire Strikes Back, A New Hope).
2. Children's titles: the first 10 entries of a children's title's list (genre Children) hold at
   least 5 children's titles, for each of the 20 most viewed children's titles.
3. Co-view still speaks beyond the series: Raiders of the Lost Ark is in Star Wars IV's top 10, and
   a list's non-series entries are not just the most viewed titles (it shares genres with its title
   more than the most viewed titles do).
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from processors.coview.coldstart import MetadataIndex
from processors.coview.memory import CoviewIndex, SessionStore
from processors.coview.sessionize import ViewCompleted

DATA = Path("/work/shared/data/datasets/movielens-ml-latest-small")
pytestmark = pytest.mark.skipif(not (DATA / "ratings.csv").exists(), reason="MovieLens data not present")

STAR_WARS_IV, EMPIRE, JEDI, PHANTOM = "260", "1196", "1210", "2628"
TOY_STORY, TOY_STORY_2, TOY_STORY_3 = "1", "3114", "78499"
FELLOWSHIP, TWO_TOWERS, RETURN_KING = "4993", "5952", "7153"
RAIDERS = "1198"


def _events(rows):
    for i, (user, movie, t) in enumerate(rows):
        base = {"session_id": f"ml-{user}", "user_id": user, "device_id": f"dev-{user}", "device_type": "WEB",
                "item_id": movie, "duration_ms": 8000}
        yield {**base, "event_id": f"{i}s", "event_type": "START", "position_ms": 0, "event_time": t}
        yield {**base, "event_id": f"{i}c", "event_type": "COMPLETE", "position_ms": 4000, "event_time": t + 4000}


@pytest.fixture(scope="module")
def served():
    with open(DATA / "ratings.csv", newline="") as fh:
        rows = sorted(((r["userId"], r["movieId"], int(r["timestamp"]) * 1000) for r in csv.DictReader(fh)),
                      key=lambda r: (r[2], r[0], r[1]))
    metadata = MetadataIndex()
    genres = {}
    year = re.compile(r"\((\d{4})\)\s*$")
    with open(DATA / "movies.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            match = year.search(r["title"])
            genres[r["movieId"]] = [] if r["genres"] == "(no genres listed)" else r["genres"].split("|")
            metadata.add_title({"item_id": r["movieId"], "title": year.sub("", r["title"]).strip(),
                                "genres": genres[r["movieId"]],
                                "release_year": int(match.group(1)) if match else None})
    store, index = SessionStore(), CoviewIndex()
    views = []
    for event in _events(rows):
        for out in store.feed(event):
            if type(out) is ViewCompleted:
                views.append(out)
                index.add_view(out)
    now = rows[-1][2] + 4000

    def top(item, n=10):
        return [other for other, _ in index.served(item, now, metadata)[0][:n]]

    popular = [item for item, _ in Counter(v.item_id for v in views).most_common()]
    return top, metadata, genres, popular


@pytest.mark.parametrize(
    "title, head",
    [
        (STAR_WARS_IV, [EMPIRE, JEDI]),
        (TOY_STORY, [TOY_STORY_2, TOY_STORY_3]),
        (FELLOWSHIP, [TWO_TOWERS, RETURN_KING]),
        (EMPIRE, [JEDI]),
    ],
)
def test_the_sequels_follow_their_predecessor(served, title, head):
    top, *_ = served
    assert top(title, len(head)) == head, top(title)


def test_a_later_instalment_lists_its_predecessors(served):
    top, *_ = served
    assert EMPIRE in top(JEDI, 3), top(JEDI)
    assert STAR_WARS_IV in top(JEDI, 10), top(JEDI)
    assert TWO_TOWERS in top(RETURN_KING, 3), top(RETURN_KING)


def test_childrens_titles_list_childrens_titles(served):
    top, metadata, _, popular = served
    kids = [item for item in popular if item in metadata.kids][:20]
    assert TOY_STORY in kids
    for title in kids:
        listed = top(title)
        assert len(listed) == 10
        assert sum(other in metadata.kids for other in listed) >= 5, (title, listed)


def test_co_view_neighbours_beyond_the_series(served):
    top, metadata, genres, popular = served
    assert RAIDERS in top(STAR_WARS_IV), top(STAR_WARS_IV)
    ours = theirs = 0.0
    pairs = 0
    for title in popular[:100]:
        series = set(metadata.series_members(title))
        listed = [o for o in top(title) if o not in series]
        baseline = [o for o in popular if o != title and o not in series][: len(listed)]
        jaccard = lambda a, b: len(set(genres[a]) & set(genres[b])) / max(len(set(genres[a]) | set(genres[b])), 1)
        ours += sum(jaccard(title, o) for o in listed)
        theirs += sum(jaccard(title, o) for o in baseline)
        pairs += len(listed)
    assert ours > 1.2 * theirs
