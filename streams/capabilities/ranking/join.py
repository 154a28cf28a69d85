"""Durable state of the label join: one LabelJoiner per partition, watermarks, persisted entries.

Both inputs (ranking.impressions, playback) are keyed by viewer with the same partition
count, so partition N of each holds the same viewers and one joiner per partition sees
everything it needs. The engine processor ``ranking-label-join`` (streams/agents/ranking.py)
reads both as co-partitioned sources into one store per partition.

Watermark of a partition = min over the two inputs of the latest event time seen there,
minus the allowed lateness: an input that lags behind (its consumer is still catching up)
holds the watermark back, so a replay labels like the live stream did.

Durability (how the state survives a restart or a rebalance): after every batch, each
(viewer, item) key the joiner touched is written to the partition's store (changelog-backed)
as its ``LabelJoiner.key_state`` snapshot (deleted once settled), together with one entry
holding the per-input max event times and the last applied offsets. When a partition is
assigned the joiner is rebuilt from those entries (``PartitionJoin.restore``). Events the
restored state already contains (offset <= the applied offset) are skipped. Labelled samples
are sent in the same checkpoint period as the state write of their batch, so a crash in
between can repeat a sample (at-least-once); the trainer drops repeated impression ids.
``LabelJoinState`` is the same over one mapping of every partition (the pure tests use it).
"""
from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from datetime import datetime, timedelta
from typing import Any

from processors.ranking.labels import JoinerConfig, LabelJoiner, LabelledSample

INPUTS = ("impression", "playback")
_SEP = "\x1f"
_WATERMARK_PREFIX = "\x00wm" + _SEP


def state_key(key: tuple[str, str]) -> str:
    return f"{key[0]}{_SEP}{key[1]}"


def watermark_key(partition: int) -> str:
    return f"{_WATERMARK_PREFIX}{partition}"


class PartitionJoin:
    def __init__(self, partition: int, config: JoinerConfig) -> None:
        self.partition = partition
        self.joiner = LabelJoiner(config)
        self.max_time: dict[str, datetime] = {}
        self.applied: dict[str, int] = {}

    def watermark(self, lateness: timedelta) -> datetime | None:
        if len(self.max_time) < len(INPUTS):
            return None
        return min(self.max_time.values()) - lateness

    def progress(self) -> dict[str, Any]:
        return {"p": self.partition, "max_time": {k: v.isoformat() for k, v in self.max_time.items()},
                "applied": dict(self.applied)}

    def load(self, key: str, value: Any) -> None:
        """One persisted entry (``persist``'s format) back into this partition's joiner."""
        if key.startswith(_WATERMARK_PREFIX):
            self.max_time = {k: datetime.fromisoformat(v) for k, v in value.get("max_time", {}).items()}
            self.applied = {k: int(v) for k, v in value.get("applied", {}).items()}
        else:
            viewer, _, item = key.partition(_SEP)
            self.joiner.restore_key((viewer, item), value["state"])

    @classmethod
    def restore(cls, partition: int, config: JoinerConfig, entries: Iterable[tuple[str, Any]]) -> "PartitionJoin":
        """The partition's join as persisted (entries of other partitions are ignored)."""
        join = cls(partition, config)
        for key, value in entries:
            if isinstance(value, dict) and value.get("p") == partition:
                join.load(key, value)
        join.joiner.take_dirty_keys()
        return join

    def add(self, kind: str, offset: int, event: dict) -> bool:
        """Feed one decoded event; False if the state already holds it. Raises RankingInputError."""
        if offset <= self.applied.get(kind, -1):
            return False
        if kind == "impression":
            self.joiner.add_impression(event)
        else:
            self.joiner.add_playback(event)
        event_time = event["event_time"]
        if kind not in self.max_time or event_time > self.max_time[kind]:
            self.max_time[kind] = event_time
        return True

    def mark_applied(self, kind: str, offset: int) -> None:
        self.applied[kind] = max(offset, self.applied.get(kind, -1))

    def expire(self, lateness: timedelta) -> list[LabelledSample]:
        watermark = self.watermark(lateness)
        return [] if watermark is None else self.joiner.expire(watermark)

    def persist(self, table: MutableMapping[str, Any]) -> int:
        """Write the changed keys and the progress to ``table`` (a partition's store); returns keys written."""
        written = 0
        for key in self.joiner.take_dirty_keys():
            name = state_key(key)
            state = self.joiner.key_state(key)
            if state is None:
                if name in table:
                    del table[name]
            else:
                table[name] = {"p": self.partition, "state": state}
            written += 1
        table[watermark_key(self.partition)] = self.progress()
        return written


class LabelJoinState:
    """``table``: a mapping persisted per partition (a Faust table; a dict in unit tests)."""

    def __init__(self, config: JoinerConfig, lateness: timedelta, table: MutableMapping[str, Any]) -> None:
        self.config = config
        self.lateness = lateness
        self.table = table
        self.partitions: dict[int, PartitionJoin] = {}
        self._restored = False

    def partition(self, partition: int) -> PartitionJoin:
        if not self._restored:
            self._restore()
        join = self.partitions.get(partition)
        if join is None:
            join = self.partitions[partition] = PartitionJoin(partition, self.config)
        return join

    def _restore(self) -> None:
        """One scan of the table (its assigned partitions) rebuilds every partition not in memory."""
        entries: dict[int, list[tuple[str, Any]]] = {}
        for key, value in list(self.table.items()):
            if isinstance(value, dict) and value.get("p") not in self.partitions:
                entries.setdefault(int(value["p"]), []).append((key, value))
        for partition, items in entries.items():
            self.partitions[partition] = PartitionJoin.restore(partition, self.config, items)
        self._restored = True

    def forget(self, partitions: set[int]) -> None:
        """A rebalance: drop revoked partitions; the next event rebuilds what this worker holds from the table."""
        for partition in partitions:
            self.partitions.pop(partition, None)
        self._restored = False

    def add(self, kind: str, partition: int, offset: int, event: dict) -> bool:
        """Feed one decoded event; False if the restored state already holds it. Raises RankingInputError."""
        return self.partition(partition).add(kind, offset, event)

    def mark_applied(self, kind: str, partition: int, offset: int) -> None:
        self.partition(partition).mark_applied(kind, offset)

    def expire(self, partition: int) -> list[LabelledSample]:
        return self.partition(partition).expire(self.lateness)

    def persist(self, partition: int) -> int:
        """Write the changed keys and the progress of ``partition`` to the table; returns keys written."""
        return self.partition(partition).persist(self.table)
