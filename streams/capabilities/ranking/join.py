"""Stream shell of the label join: one LabelJoiner per partition, watermarks, durable state.

Both inputs (ranking.impressions, playback) are keyed by viewer with the same partition
count, so partition N of each holds the same viewers and one joiner per partition sees
everything it needs. Two agents (one per input) share this object; they run on one event
loop and never await while mutating it.

Watermark of a partition = min over the two inputs of the latest event time seen there,
minus the allowed lateness: an input that lags behind (its consumer is still catching up)
holds the watermark back, so a replay labels like the live stream did.

Durability (how the state survives a restart or a rebalance): after every batch, each
(viewer, item) key the joiner touched is written to a changelog-backed Faust table as its
``LabelJoiner.key_state`` snapshot (deleted once settled), together with one entry per
partition holding the per-input max event times and the last applied offsets. On the first
event of a partition after start-up or assignment the joiner is rebuilt from those entries.
Events the restored state already contains (offset <= the applied offset: redelivered after
a crash before the offset commit) are skipped. Labelled samples are sent before the table
write of the same batch, so a crash in between can repeat a sample (at-least-once); the
trainer drops repeated impression ids.
"""
from __future__ import annotations

from collections.abc import MutableMapping
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
        rebuilt: dict[int, PartitionJoin] = {}
        for key, value in list(self.table.items()):
            if not isinstance(value, dict) or value.get("p") in self.partitions:
                continue
            partition = int(value["p"])
            join = rebuilt.get(partition) or rebuilt.setdefault(partition, PartitionJoin(partition, self.config))
            if key.startswith(_WATERMARK_PREFIX):
                join.max_time = {k: datetime.fromisoformat(v) for k, v in value.get("max_time", {}).items()}
                join.applied = {k: int(v) for k, v in value.get("applied", {}).items()}
            else:
                viewer, _, item = key.partition(_SEP)
                join.joiner.restore_key((viewer, item), value["state"])
        for partition, join in rebuilt.items():
            join.joiner.take_dirty_keys()
            self.partitions[partition] = join
        self._restored = True

    def forget(self, partitions: set[int]) -> None:
        """A rebalance: drop revoked partitions; the next event rebuilds what this worker holds from the table."""
        for partition in partitions:
            self.partitions.pop(partition, None)
        self._restored = False

    def add(self, kind: str, partition: int, offset: int, event: dict) -> bool:
        """Feed one decoded event; False if the restored state already holds it. Raises RankingInputError."""
        join = self.partition(partition)
        if offset <= join.applied.get(kind, -1):
            return False
        if kind == "impression":
            join.joiner.add_impression(event)
        else:
            join.joiner.add_playback(event)
        event_time = event["event_time"]
        if kind not in join.max_time or event_time > join.max_time[kind]:
            join.max_time[kind] = event_time
        return True

    def mark_applied(self, kind: str, partition: int, offset: int) -> None:
        join = self.partition(partition)
        join.applied[kind] = max(offset, join.applied.get(kind, -1))

    def expire(self, partition: int) -> list[LabelledSample]:
        join = self.partition(partition)
        watermark = join.watermark(self.lateness)
        return [] if watermark is None else join.joiner.expire(watermark)

    def persist(self, partition: int) -> int:
        """Write the changed keys and the progress of ``partition`` to the table; returns keys written.

        The caller binds an event of this partition first (Faust writes the changelog of the
        current event's partition).
        """
        join = self.partition(partition)
        written = 0
        for key in join.joiner.take_dirty_keys():
            name = state_key(key)
            state = join.joiner.key_state(key)
            if state is None:
                if name in self.table:
                    del self.table[name]
            else:
                self.table[name] = {"p": partition, "state": state}
            written += 1
        self.table[watermark_key(partition)] = join.progress()
        return written
