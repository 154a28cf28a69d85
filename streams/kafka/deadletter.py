"""Dead-letter envelopes: the original bytes plus why, where from and who gave up.

A letter must always be writable, whatever came in: a key or value larger than ``KEEP_BYTES`` is
kept as its first ``KEEP_BYTES`` (``truncated``, with the original sizes and a SHA-256 of the
original), and the source position (topic, partition, offset) points to the full record, which
``vitrina dlq redrive`` reads again from there. Without that, a value of about 1 MB made a letter
larger than the producer's limit: the send raised, the agent crashed and its batch was lost.

Input records larger than ``MAX_EVENT_BYTES`` (key + value) are not decoded at all: they are
dead-lettered as ``OVERSIZED``. No vitrina event is anywhere near that size, and a forwarded copy
(repartitions) must stay below the producers' and brokers' default 1 MB record limit.
"""
from __future__ import annotations

import hashlib
import struct
from datetime import datetime, timezone

from streams.kafka.codec import Codec
from streams.kafka.topics import DLQ_PREFIX

# the defaults of Settings.dead_letter_keep_bytes / max_event_bytes (VITRINA_DEAD_LETTER_KEEP_BYTES /
# VITRINA_MAX_EVENT_BYTES), which the runtimes pass in
KEEP_BYTES = 64 * 1024
MAX_EVENT_BYTES = 512 * 1024

OVERSIZED = "OVERSIZED"     # reason code: key + value over MAX_EVENT_BYTES
BAD_HEADER = "BAD_HEADER"   # reason code: a vitrina header on an internal topic that does not parse

# Internal topics (written only by vitrina's own stages) have no dead-letter topic of their own: their
# letters go to the one of the input they are derived from; source_topic still names the internal topic.
UPSTREAM_OF_INTERNAL = {
    "playback.by-item": "playback",
    "uploads.by-content": "uploads.requested",
    "ranking.samples.trainer": "ranking.samples",
    "coview.contributions": "playback",
}


def original_digest(key: bytes | None, value: bytes | None) -> bytes:
    """SHA-256 over the original key and value, each framed by its length (-1 for none)."""
    digest = hashlib.sha256()
    for part in (key, value):
        digest.update(struct.pack(">q", -1 if part is None else len(part)))
        digest.update(part or b"")
    return digest.digest()


def oversized(key: bytes | None, value: bytes | None, limit: int = MAX_EVENT_BYTES) -> str | None:
    """Why a record is too large to be processed (None when it is not)."""
    size = len(key or b"") + len(value or b"")
    if size <= limit:
        return None
    return (f"record of {size} bytes (key {len(key or b'')}, value {len(value or b'')}) is over the "
            f"{limit}-byte limit for events (VITRINA_MAX_EVENT_BYTES)")


def dead_letter(source_topic: str, partition: int, offset: int, agent: str, reason_code: str, error: str,
                key: bytes | None, value: bytes | None, attempts: int = 1, keep_bytes: int = KEEP_BYTES) -> dict:
    truncated = (key is not None and len(key) > keep_bytes) or (value is not None and len(value) > keep_bytes)
    return {
        "source_topic": source_topic, "source_partition": partition, "source_offset": offset,
        "agent": agent, "reason_code": reason_code, "error": error[:2000],
        "key": key[:keep_bytes] if truncated and key is not None else key,
        "value": value[:keep_bytes] if truncated and value is not None else value,
        "failed_at": datetime.now(timezone.utc), "attempts": min(max(int(attempts), 1), 2**31 - 1),
        "truncated": truncated,
        "key_size": None if key is None else len(key),
        "value_size": None if value is None else len(value),
        "original_sha256": original_digest(key, value) if truncated else None,
    }


def dlq_topic_for(source_topic: str) -> str:
    return DLQ_PREFIX + UPSTREAM_OF_INTERNAL.get(source_topic, source_topic)


def encode_dead_letter(codec: Codec, envelope: dict) -> bytes:
    return codec.encode("vitrina.DeadLetter", envelope)
