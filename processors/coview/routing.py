"""Route completed views to the title partitions they update, in a compact columnar batch.

A view of title X at session position p updates X (own count + backward neighbours) and every
earlier title of the window (X as a forward neighbour): ~2 * window + 1 weight updates that land on
almost every title partition. Sending them as one record per update made encoding and decoding the
repartition messages the pipeline's main cost (37 MB of nested Avro per 100k MovieLens events), so
a batch for one destination partition carries:

* ``names``: every title id used in the batch once; everything else refers to names by index;
* one row per view that touches the partition (``view_item``, ``view_at``, ``view_offset``; every
  column is a packed little-endian array in a bytes field, see ``COLUMNS``);
* for views whose title the partition owns: the window of earlier titles (``prev``, nearest first,
  ``view_prev_len`` per view; 0 for views the partition does not own, ``view_own`` says which);
* one row per forward update of an owned earlier title (``pair_view``, ``pair_title``,
  ``pair_distance``), in view order.

Weights are not sent: both sides derive them from the distance with the same ``CoviewConfig``.
``unpack`` yields exactly the ``Contribution`` records ``contributions_for_view`` makes for the
owned titles, in view (= origin offset) order, so per-title idempotence by offset still holds.
"""
from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterator, Sequence

from processors.coview.cooccurrence import Contribution, CoviewConfig, _distance_weights
from processors.coview.sessionize import ViewCompleted

PartitionOf = Callable[[str], int]


class _Batch:
    __slots__ = ("names", "index", "view_item", "view_at", "view_offset", "view_own", "view_prev_len", "prev",
                 "pair_view", "pair_title", "pair_distance")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.view_item: list[int] = []
        self.view_at: list[int] = []
        self.view_offset: list[int] = []
        self.view_own: list[bool] = []
        self.view_prev_len: list[int] = []
        self.prev: list[int] = []
        self.pair_view: list[int] = []
        self.pair_title: list[int] = []
        self.pair_distance: list[int] = []

    def name(self, title: str) -> int:
        found = self.index.get(title)
        if found is None:
            found = self.index[title] = len(self.names)
            self.names.append(title)
        return found

    def add_view(self, item: str, at: int, offset: int) -> int:
        self.view_item.append(self.name(item))
        self.view_at.append(at)
        self.view_offset.append(offset)
        self.view_own.append(False)
        self.view_prev_len.append(0)
        return len(self.view_item) - 1

    def record(self, origin: int, produced_ms: int) -> dict:
        return {"origin": origin, "produced_ms": produced_ms, "names": self.names,
                **{field: _pack(kind, getattr(self, field)) for field, kind in COLUMNS.items()}}


# Column -> array typecode. Columns travel as little-endian packed bytes: fastavro decodes an Avro
# array element by element, a bytes field in one copy (the per-title stage spent a fifth of its
# time decoding int arrays).
COLUMNS = {"view_item": "i", "view_at": "q", "view_offset": "q", "view_own": "b", "view_prev_len": "i",
           "prev": "i", "pair_view": "i", "pair_title": "i", "pair_distance": "i"}
_SWAP = sys.byteorder != "little"


def _pack(kind: str, values: list) -> bytes:
    packed = array(kind, values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def _unpack(kind: str, data: bytes) -> list:
    values = array(kind)
    values.frombytes(data)
    if _SWAP:
        values.byteswap()
    return values.tolist()


def columns(record: dict) -> dict:
    """A decoded batch record with its packed columns as lists (for tests and tools)."""
    return {**record, **{field: _unpack(kind, record[field]) for field, kind in COLUMNS.items()}}


def pack_views(views: Sequence[tuple[ViewCompleted, int]], origin: int, produced_ms: int,
               partition_of: PartitionOf, config: CoviewConfig) -> dict[int, dict]:
    """``(view, origin offset)`` pairs in offset order -> {destination partition: batch record}."""
    batches: dict[int, _Batch] = {}
    window = config.window
    for view, offset in views:
        item = view.item_id
        at = view.at_ms
        rows: dict[int, int] = {}  # destination -> this view's row there
        previous = view.previous[:window]
        home_partition = partition_of(item)
        home = batches.get(home_partition)
        if home is None:
            home = batches[home_partition] = _Batch()
        home_row = rows[home_partition] = home.add_view(item, at, offset)
        home.view_own[home_row] = True
        home.view_prev_len[home_row] = len(previous)
        name = home.name
        home.prev.extend([name(title) for title in previous])
        seen = {item}
        for distance, earlier in enumerate(previous, 1):
            if earlier in seen:
                continue
            seen.add(earlier)
            partition = partition_of(earlier)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = _Batch()
            view_row = rows.get(partition)
            if view_row is None:
                view_row = rows[partition] = batch.add_view(item, at, offset)
            batch.pair_view.append(view_row)
            batch.pair_title.append(batch.name(earlier))
            batch.pair_distance.append(distance)
    return {partition: batch.record(origin, produced_ms) for partition, batch in batches.items()}


def unpack_by_title(record: dict, config: CoviewConfig) -> dict[str, list[tuple[int, Contribution]]]:
    """title -> [(origin offset, contribution)] of a batch, each title's list in view order."""
    grouped: dict[str, list[tuple[int, Contribution]]] = {}
    for offset, contribution in unpack(record, config):
        updates = grouped.get(contribution[0])
        if updates is None:
            grouped[contribution[0]] = [(offset, contribution)]
        else:
            updates.append((offset, contribution))
    return grouped


def unpack(record: dict, config: CoviewConfig) -> Iterator[tuple[int, Contribution]]:
    """(origin offset, contribution) for every owned title update of a batch, in view order.

    Contributions are plain tuples laid out like ``Contribution`` (title, own, neighbours, at_ms):
    a NamedTuple's constructor was a tenth of the per-title stage."""
    names = record["names"]
    record = columns(record)
    weights = _distance_weights(config.weighting, config.window)
    backward = config.backward_factor
    prev, prev_at = record["prev"], 0
    pair_view, pair_title, pair_distance = record["pair_view"], record["pair_title"], record["pair_distance"]
    pairs, next_pair = len(pair_view), 0
    for row, (item_index, at, offset, own, prev_len) in enumerate(zip(
            record["view_item"], record["view_at"], record["view_offset"], record["view_own"],
            record["view_prev_len"])):
        item = names[item_index]
        if own:
            neighbours = []
            if backward > 0.0:
                seen = {item}
                for distance, title_index in enumerate(prev[prev_at:prev_at + prev_len], 1):
                    earlier = names[title_index]
                    if earlier in seen:
                        continue
                    seen.add(earlier)
                    neighbours.append((earlier, weights[distance - 1] * backward))
            prev_at += prev_len
            yield offset, (item, 1.0, tuple(neighbours), at)
        while next_pair < pairs and pair_view[next_pair] == row:
            yield offset, (names[pair_title[next_pair]], 0.0, ((item, weights[pair_distance[next_pair] - 1]),), at)
            next_pair += 1
