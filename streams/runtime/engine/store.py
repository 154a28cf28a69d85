"""In-memory partition state with a changelog: the engine's replacement for a Faust table partition.

One ``PartitionStore`` per assigned source partition holds key -> plain JSON-able value. Writes mark
keys dirty; at a checkpoint the runner sends every dirty key once to the changelog (a tombstone for a
deleted key) followed by one ``applied`` marker per source topic: the last offset of that topic's
partition folded into the state (a processor may read several co-partitioned topics into one state).
The changelog partition equals the source partition and Kafka keeps a partition's order, so a restored
marker is never ahead of the state records written before it: records at or below it are skipped on
redelivery, the rest are applied again (at-least-once input, exactly-once effect on state).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

APPLIED_PREFIX = b"\x00applied:"


class PartitionStore:
    __slots__ = ("partition", "data", "dirty", "applied", "marker_dirty", "changelog_end")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.data: dict[str, Any] = {}
        self.dirty: set[str] = set()
        self.applied: dict[str, int] = {}  # source topic -> last offset folded into the state
        self.marker_dirty: set[str] = set()
        self.changelog_end: int | None = None  # offset after our last changelog write (reuse after a rebalance)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty.add(key)

    def touch(self, key: str) -> None:
        """A value mutated in place: write it at the next checkpoint."""
        self.dirty.add(key)

    def delete(self, key: str) -> None:
        if self.data.pop(key, None) is not None:
            self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        """``del store[key]`` (a MutableMapping user such as the label join's ``persist``): a tombstone
        at the next checkpoint; an absent key is not an error here."""
        self.delete(key)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self.data.items())

    def applied_offset(self, topic: str) -> int:
        return self.applied.get(topic, -1)

    def mark_applied(self, topic: str, offset: int) -> None:
        if offset > self.applied.get(topic, -1):
            self.applied[topic] = offset
            self.marker_dirty.add(topic)

    def pending(self) -> bool:
        return bool(self.dirty) or bool(self.marker_dirty)

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        """Changelog records of everything changed since the last call, marker last."""
        records: list[tuple[bytes, bytes | None]] = []
        data = self.data
        for key in self.dirty:
            value = data.get(key)
            records.append((key.encode(), None if value is None else orjson.dumps(value)))
        self.dirty = set()
        for topic in sorted(self.marker_dirty):
            records.append((APPLIED_PREFIX + topic.encode(), str(self.applied[topic]).encode()))
        self.marker_dirty = set()
        return records

    def restore(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        """Apply changelog records in order (later wins, None deletes); returns how many were read."""
        count = 0
        data = self.data
        for key, value in records:
            count += 1
            if key is None:
                continue
            if key.startswith(APPLIED_PREFIX):
                if value:
                    self.applied[key[len(APPLIED_PREFIX):].decode()] = int(value)
                continue
            name = key.decode()
            if value is None:
                data.pop(name, None)
            else:
                data[name] = orjson.loads(value)
        return count
