"""The worker's decode cache: one decode per record for every processor reading those bytes, never a
stale or shared value."""
from __future__ import annotations

from fastavro.utils import generate_many

from streams.kafka.codec import default_codec
from streams.kafka.topics import spec
from streams.runtime.records import DecodeCache, decode_record


def test_a_hit_needs_the_same_schema_and_bytes_and_returns_a_copy_of_its_own():
    cache = DecodeCache(max_entries=10)
    value = {"item_id": "t1", "position_ms": 5}
    cache.put("vitrina.PlaybackEvent", b"raw-7", value)
    first = cache.get("vitrina.PlaybackEvent", b"raw-7")
    assert first == value and first is not value
    first["item_id"] = "changed by one reader"
    assert cache.get("vitrina.PlaybackEvent", bytearray(b"raw-7")) == {"item_id": "t1", "position_ms": 5}
    assert cache.get("vitrina.PlaybackEvent", b"other bytes") is None
    assert cache.get("vitrina.SessionEvent", b"raw-7") is None
    assert (cache.hits, cache.misses) == (2, 2)


def test_only_flat_schemas_are_kept_and_the_oldest_entries_go_first():
    cache, codec = DecodeCache(max_entries=3), default_codec()
    # a shallow copy of an impression would share its labels, pxtr and lists between readers
    assert not cache.keeps(codec, "vitrina.RankingImpression") and not cache.keeps(codec, "vitrina.CoViewBatch")
    assert cache.keeps(codec, "vitrina.PlaybackEvent") and cache.keeps(codec, "vitrina.SessionEvent")
    record = next(generate_many(codec.store.current("vitrina.RankingImpression").parsed, 1))
    raw = codec.encode("vitrina.RankingImpression", record)
    for _ in range(3):
        value = decode_record(codec, spec("ranking.impressions"), b"k", raw, None, 0, 0, 0, cache=cache,
                              readers=3).value
        assert value == codec.decode(raw, "vitrina.RankingImpression")
    assert len(cache.entries) == 0 and (cache.hits, cache.misses) == (0, 0)  # never looked up, never kept
    for n in range(5):
        cache.put("vitrina.PlaybackEvent", b"%d" % n, {"n": n})
    assert [cache.get("vitrina.PlaybackEvent", b"%d" % n) for n in range(5)] == [None, None, {"n": 2}, {"n": 3},
                                                                                 {"n": 4}]


def test_an_entry_leaves_once_every_reader_of_its_partition_got_it():
    cache = DecodeCache(max_entries=10)
    for _ in range(3):
        cache.register("playback", 4)
    cache.register("playback", 5)
    assert (cache.readers_of("playback", 4), cache.readers_of("playback", 5), cache.readers_of("playback", 6)) == (3, 1, 0)
    cache.put("vitrina.PlaybackEvent", b"a", {"n": 1}, readers=cache.readers_of("playback", 4))
    cache.put("vitrina.PlaybackEvent", b"b", {"n": 2}, readers=cache.readers_of("playback", 5))  # no other reader
    assert len(cache.entries) == 1
    assert cache.get("vitrina.PlaybackEvent", b"a") == {"n": 1} and len(cache.entries) == 1
    assert cache.get("vitrina.PlaybackEvent", b"a") == {"n": 1} and len(cache.entries) == 0  # the third reader's
    assert cache.get("vitrina.PlaybackEvent", b"a") is None
    cache.unregister("playback", 4)
    cache.unregister("playback", 5)
    assert (cache.readers_of("playback", 4), cache.readers_of("playback", 5)) == (2, 0) and ("playback", 5) not in cache.readers
