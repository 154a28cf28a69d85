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


def test_a_mapping_user_can_delete_keys_and_the_changelog_gets_a_tombstone():
    """The label join persists through the mapping protocol (``del table[key]`` for a settled key): in a
    worker this raised AttributeError('__delitem__') and dead-lettered every impression of the batch."""
    from datetime import timedelta

    from processors.ranking.labels import JoinerConfig
    from streams.capabilities.ranking.join import PartitionJoin

    store = PartitionStore(1)
    store["v\x1fi"] = {"p": 1, "state": {}}
    store.take_changes()
    del store["v\x1fi"]
    assert "v\x1fi" not in store and store.take_changes() == [(b"v\x1fi", None)]
    join = PartitionJoin(1, JoinerConfig())
    join.joiner._dirty.add(("v", "i"))  # a key that settled: dirty, no state left
    store["v\x1fi"] = {"p": 1, "state": {}}
    store.take_changes()
    join.persist(store)  # deletes it from the store through the mapping protocol
    assert "v\x1fi" not in store
    assert (b"v\x1fi", None) in store.take_changes()
    assert join.expire(timedelta(minutes=1)) == []
