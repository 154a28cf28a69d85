"""Columnar view routing (processors/coview/routing.py) gives each title partition exactly the updates
``contributions_for_view`` makes, and ``apply_contributions`` equals one ``apply_contribution`` per update."""
from __future__ import annotations

import random
import zlib

import pytest

from processors.coview.cooccurrence import Contribution, CoviewConfig, apply_contribution, apply_contributions, contributions_for_view
from processors.coview.routing import pack_views, unpack, unpack_by_title
from processors.coview.sessionize import ViewCompleted
from streams.kafka.codec import default_codec
from streams.kafka.topics import spec

T0 = 1_700_000_000_000


def partition_of(title: str, partitions: int = 6) -> int:
    return zlib.crc32(title.encode()) % partitions


def random_views(rng: random.Random, count: int, titles: int = 40) -> list[tuple[ViewCompleted, int]]:
    views = []
    for n in range(count):
        previous = tuple(f"t{rng.randrange(titles)}" for _ in range(rng.randrange(0, 25)))  # repeats on purpose
        views.append((ViewCompleted("u:1", "u:1@0", f"t{rng.randrange(titles)}", n + 1, 200_000, 0, T0 + n * 1000,
                                    previous), 100 + 3 * n))
    return views


@pytest.mark.parametrize("config", [CoviewConfig(), CoviewConfig(window=3, weighting="inverse", backward_factor=0.5),
                                    CoviewConfig(backward_factor=0.0)])
def test_every_partition_gets_exactly_the_updates_of_its_titles_in_view_order(config):
    views = random_views(random.Random(7), 300)
    expected: dict[int, list[tuple[int, Contribution]]] = {}
    for view, offset in views:
        for contribution in contributions_for_view(view, config):
            expected.setdefault(partition_of(contribution.title), []).append((offset, contribution))
    codec = default_codec()
    schema = spec("coview.contributions").schema
    batches = pack_views(views, 3, T0, partition_of, config)
    assert set(batches) == set(expected)
    for partition, record in batches.items():
        record = codec.decode(codec.encode(schema, record), schema)  # through the wire format
        assert record["origin"] == 3 and record["produced_ms"] == T0
        got = [(offset, Contribution(*c)) for offset, c in unpack(record, config)]
        assert got == expected[partition]
        grouped = unpack_by_title(record, config)
        assert sum(len(v) for v in grouped.values()) == len(got)
        for title, updates in grouped.items():
            assert [o for o, _ in updates] == sorted(o for o, _ in updates)


def test_a_view_without_earlier_titles_only_counts_itself():
    view = ViewCompleted("u:1", "s", "solo", 1, 200_000, 0, T0, ())
    [(partition, record)] = pack_views([(view, 5)], 0, T0, partition_of, CoviewConfig()).items()
    assert partition == partition_of("solo")
    assert list(unpack(record, CoviewConfig())) == [(5, ("solo", 1.0, (), T0))]


@pytest.mark.parametrize("config", [CoviewConfig(), CoviewConfig(max_neighbours=5, prune_slack=2),
                                    CoviewConfig(half_life_ms=None, max_neighbours=3, prune_slack=0),
                                    CoviewConfig(half_life_ms=1000)])  # forces landmark rebasing
def test_apply_contributions_equals_one_call_per_contribution(config):
    rng = random.Random(11)
    contributions = [Contribution("a", rng.choice([0.0, 1.0]),
                                  tuple((f"n{rng.randrange(30)}", rng.random()) for _ in range(rng.randrange(0, 4))),
                                  T0 + rng.randrange(0, 10**6)) for _ in range(500)]
    one_by_one = None
    for contribution in contributions:
        one_by_one = apply_contribution(one_by_one, contribution, config)
    batched = apply_contributions(None, contributions, config)
    assert batched["nb"].keys() == one_by_one["nb"].keys()
    for key in ("L", "t"):
        assert batched[key] == one_by_one[key]
    for key in ("n", "err"):
        assert batched[key] == pytest.approx(one_by_one[key], rel=1e-12, abs=1e-12)
    for key, value in one_by_one["nb"].items():
        assert batched["nb"][key] == pytest.approx(value, rel=1e-12)
