"""Engine partition state: changed keys and applied markers go to the changelog once, and restoring the
changelog (later records win, tombstones delete) gives back the same state."""
from __future__ import annotations

from streams.runtime.engine.store import APPLIED_PREFIX, PartitionStore


def test_changes_are_written_once_and_restore_round_trips():
    store = PartitionStore(2)
    store["u:1"] = {"s": {"n": 1}, "w": 5}
    store["u:2"] = {"s": {"n": 2}, "w": 6}
    store.mark_applied("playback", 41)
    first = store.take_changes()
    assert {key for key, _ in first} == {b"u:1", b"u:2", APPLIED_PREFIX + b"playback"}
    assert first[-1] == (APPLIED_PREFIX + b"playback", b"41")  # marker after the state it covers
    assert store.take_changes() == [] and not store.pending()

    store.get("u:1")["s"]["n"] = 3          # mutated in place: only written when touched
    store.touch("u:1")
    store.delete("u:2")
    store.mark_applied("sessions", 7)
    store.mark_applied("playback", 40)      # never goes backwards
    second = store.take_changes()
    assert dict(second) == {b"u:1": b'{"s":{"n":3},"w":5}', b"u:2": None, APPLIED_PREFIX + b"sessions": b"7"}

    restored = PartitionStore(2)
    assert restored.restore(first + second) == len(first) + len(second)
    assert restored.data == store.data == {"u:1": {"s": {"n": 3}, "w": 5}}
    assert restored.applied == store.applied == {"playback": 41, "sessions": 7}
    assert not restored.pending()


def test_unknown_topics_have_no_marker():
    store = PartitionStore(0)
    assert store.applied_offset("playback") == -1
    store.delete("missing")
    assert not store.pending()
