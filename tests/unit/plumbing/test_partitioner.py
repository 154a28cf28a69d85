"""The cached partitioner picks exactly the partition of aiokafka's default (Kafka's murmur2)."""
import random

from aiokafka.partitioner import DefaultPartitioner

from streams.kafka.partitioner import CachedPartitioner


def test_every_key_lands_where_the_default_partitioner_puts_it():
    rng = random.Random(7)
    cached, default = CachedPartitioner(max_keys=50), DefaultPartitioner()
    keys = [rng.randbytes(rng.randint(0, 40)) for _ in range(300)] + [b"title-1", "t\u00e9".encode()]
    for _ in range(3):  # first sight, cached, and again after the cache was emptied on the way
        for key in keys:
            for count in (1, 3, 6, 12):
                partitions = list(range(count))
                assert cached(key, partitions, partitions) == default(key, partitions, partitions)


def test_partitions_of_the_java_client():
    """Partitions the Java client picks among 1000 (the vectors of kafka-python's partitioner test): the
    cache keeps this producer and Java consumers of the same topic (Kafka Streams, Connect) agreeing on
    where a key lives."""
    cached, partitions = CachedPartitioner(), list(range(1000))
    expected = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}
    for _ in range(2):
        assert {key: cached(key, partitions, partitions) for key in expected} == expected


def test_the_cache_stays_bounded():
    cached = CachedPartitioner(max_keys=10)
    for i in range(1000):
        cached(str(i).encode(), [0, 1], [0, 1])
        assert len(cached._hashes) <= 10


def test_keyless_records_go_to_an_available_partition():
    cached = CachedPartitioner()
    assert {cached(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
