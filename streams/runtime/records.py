"""Records as every processor sees them, and the one way a raw record becomes one.

Both hosts of stream processing (the engine's runner and the Faust agents' ``decoded_batches``) turn a
raw Kafka record into an ``Inbound`` here, with the same checks in the same order:

1. size: a key or value over the dead-letter keep limit (``streams/kafka/deadletter.py``) is refused as
   ``OVERSIZED`` on input topics (internal topics only carry what vitrina wrote itself);
2. decoding against the topic's Avro schema (``DecodeError`` with a machine-readable code);
3. the ``vitrina-origin`` header, trusted on internal topics only (``BadHeader`` when it does not parse).

A refusal is a ``Refused`` (reason code + text) that the host turns into a dead letter; nothing here
sends anything, so this module has no Kafka client and no Faust import.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from streams.kafka.codec import Codec, DecodeError
from streams.kafka.deadletter import BAD_HEADER, MAX_EVENT_BYTES, OVERSIZED, UPSTREAM_OF_INTERNAL, oversized
from streams.kafka.topics import TopicSpec
from streams.runtime.metrics import UNTRUSTED_HEADERS

ORIGIN_HEADER = "vitrina-origin"
ATTEMPTS_HEADER = "vitrina-attempts"  # set by `vitrina dlq redrive`

# Topics only vitrina's own stages write (repartitions, hand-offs): the internal headers it sets
# (vitrina-origin) are trusted there and nowhere else. Anyone who can produce to an input topic can
# set any header; trusting vitrina-origin there let a forged "0:0" make the play counter drop 19 of
# 20 events as "already applied". Internal topics are kept apart by access control (only the workers
# write them), which an HMAC would not replace: a producer with write access to an internal topic
# can replay any signed header it has read.
INTERNAL_TOPICS = frozenset(UPSTREAM_OF_INTERNAL)
_ORIGIN = re.compile(rb"(\d{1,9}):(\d{1,18})")


class Inbound(NamedTuple):
    """One decoded record. ``origin`` is its (partition, offset) in the original topic when it was
    repartitioned by vitrina (kept across the hop so downstream state applies it once).

    A named tuple rather than a frozen dataclass: one is built per record per processor, and a frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field) was a tenth of a worker's decode time."""

    key: bytes | None
    value: dict
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    raw: bytes
    source: Any = None  # the host's own record object (the Faust event for Faust tables), else None
    origin: tuple[int, int] | None = None
    headers: Any = None

    @property
    def origin_partition(self) -> int:
        return self.origin[0] if self.origin else self.partition

    @property
    def origin_offset(self) -> int:
        return self.origin[1] if self.origin else self.offset

    @property
    def attempts(self) -> int:
        return attempts_of(self.headers)

    def origin_header(self) -> tuple[str, bytes]:
        """The header a repartitioned copy of this record carries."""
        return ORIGIN_HEADER, f"{self.origin_partition}:{self.origin_offset}".encode()


class BadHeader(ValueError):
    """A vitrina header on an internal topic that does not parse: the record is dead-lettered."""

    code = BAD_HEADER


@dataclass(frozen=True)
class Refused(Exception):
    """A record that cannot be processed: dead-letter it with ``code`` and ``text``."""

    code: str
    text: str


def _header(headers: Any, wanted: str) -> bytes | None:
    for name, value in (headers.items() if isinstance(headers, dict) else headers or ()):
        if name == wanted:
            return value
    return None


def origin_of(topic: str, headers: Any) -> tuple[int, int] | None:
    """(partition, offset) of the original record a repartitioned one carries in ``vitrina-origin``.

    Read on internal topics only; elsewhere the header is ignored (``vitrina_untrusted_headers_total``)
    and the record is its own origin. On an internal topic a malformed value raises ``BadHeader``."""
    value = _header(headers, ORIGIN_HEADER)
    if value is None:
        return None
    if topic not in INTERNAL_TOPICS:
        UNTRUSTED_HEADERS.labels(topic=topic, header=ORIGIN_HEADER).inc()
        return None
    match = _ORIGIN.fullmatch(value) if isinstance(value, bytes) else None
    if match is None:
        raise BadHeader(f"{ORIGIN_HEADER} header {bytes(value or b'')[:64]!r} is not '<partition>:<offset>'")
    return int(match.group(1)), int(match.group(2))


def attempts_of(headers: Any) -> int:
    """The redrive count (informational, only ever written into a dead letter): anything that is not a
    plain number of at most 9 digits counts as a first attempt."""
    value = _header(headers, ATTEMPTS_HEADER)
    return max(1, int(value)) if isinstance(value, bytes) and value.isdigit() and len(value) <= 9 else 1


class DecodeCache:
    """Decoded values of flat records (no nested dict or list), shared by the processors of one worker.

    Several processors read the same records (playback: plays' forwarder, history, co-view, the label
    join, the gate samples; and the play counter the same bytes again from playback.by-item), each with
    its own consumer; decoding was a third of a worker's time, four to five times per playback event. A
    value is found by its schema and its exact bytes (so it is always the value those bytes decode to);
    each reader gets its own shallow copy, which is why only flat values are kept.

    Bounded two ways. An entry put with ``readers`` (how many processors of this worker read that topic
    partition: ``register``/``unregister`` on assignment) leaves as soon as the other readers got it, so
    in steady state (every reader near the head) the cache holds only the records between the fastest
    and the slowest reader. Beyond ``max_entries`` the oldest go first (readers far apart, catching up
    after a restart: the trailing one decodes again)."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        # an OrderedDict: dropping the oldest is O(1) (a plain dict scans the deleted slots at its front)
        self.entries: OrderedDict[tuple[str, bytes], list] = OrderedDict()  # key -> [value, reads left | None]
        self.readers: dict[tuple[str, int], int] = {}
        self.hits = self.misses = 0

    def register(self, topic: str, partition: int) -> None:
        """A processor of this worker now reads ``topic`` partition ``partition``."""
        self.readers[(topic, partition)] = self.readers.get((topic, partition), 0) + 1

    def unregister(self, topic: str, partition: int) -> None:
        left = self.readers.get((topic, partition), 0) - 1
        if left > 0:
            self.readers[(topic, partition)] = left
        else:
            self.readers.pop((topic, partition), None)

    def readers_of(self, topic: str, partition: int) -> int:
        return self.readers.get((topic, partition), 0)

    def get(self, schema: str, raw: bytes) -> dict | None:
        key = (schema, raw if type(raw) is bytes else bytes(raw))
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        if entry[1] is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self.entries[key]
        return dict(entry[0])

    @staticmethod
    def keeps(codec: Codec, schema: str) -> bool:
        """Whether values of ``schema`` are kept: flat ones (a shallow copy is a whole copy), decided by
        the schema (``Schema.flat``), not by scanning every value (a fifth of the cache's time)."""
        return codec.store.current(schema).flat

    def put(self, schema: str, raw: bytes, value: dict, readers: int | None = None) -> None:
        """Keep ``value`` (of a flat schema: ``keeps``) for the other readers: ``readers`` counts every
        reader of these bytes, this one included (None: unknown, kept until evicted)."""
        if readers is not None and readers <= 1:
            return
        entries = self.entries
        entries[(schema, bytes(raw))] = [dict(value), None if readers is None else readers - 1]
        while len(entries) > self.max_entries:
            entries.popitem(last=False)


def decode_record(codec: Codec, source: TopicSpec, key: bytes | None, raw: bytes | None, headers: Any,
                  partition: int, offset: int, timestamp_ms: int, host_record: Any = None,
                  cls: type[Inbound] = Inbound, cache: DecodeCache | None = None,
                  readers: int | None = None, max_event_bytes: int = MAX_EVENT_BYTES) -> Inbound:
    """The record as an ``Inbound``, or ``Refused`` (size, schema, header: in that order). ``readers``:
    how many processors of this worker read this record (``DecodeCache.put``)."""
    try:
        if source.name not in INTERNAL_TOPICS:
            too_big = oversized(key, raw, max_event_bytes)
            if too_big is not None:
                raise DecodeError(OVERSIZED, too_big)
        # a record only this processor reads is neither looked up nor kept (the lookup cost a third of
        # a decode and could never hit)
        shared = (cache is not None and raw is not None and (readers is None or readers > 1)
                  and cache.keeps(codec, source.schema))
        value = cache.get(source.schema, raw) if shared else None
        if value is None:
            value = codec.decode(raw, source.schema)
            if shared:
                cache.put(source.schema, raw, value, readers)
        origin = origin_of(source.name, headers) if headers else None
    except DecodeError as exc:
        raise Refused(exc.code, exc.message) from exc
    except BadHeader as exc:
        raise Refused(exc.code, str(exc)) from exc
    return cls(key, value, source.name, partition, offset, timestamp_ms, raw, host_record, origin, headers)
