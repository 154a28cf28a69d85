"""Dead-letter envelopes: the original bytes plus why, where from and who gave up."""
from __future__ import annotations

from datetime import datetime, timezone

from streams.codec import Codec
from streams.topics import DLQ_PREFIX


def dead_letter(source_topic: str, partition: int, offset: int, agent: str, reason_code: str, error: str,
                key: bytes | None, value: bytes | None, attempts: int = 1) -> dict:
    return {
        "source_topic": source_topic, "source_partition": partition, "source_offset": offset,
        "agent": agent, "reason_code": reason_code, "error": error[:2000],
        "key": key, "value": value, "failed_at": datetime.now(timezone.utc), "attempts": attempts,
    }


def dlq_topic_for(source_topic: str) -> str:
    return DLQ_PREFIX + source_topic


def encode_dead_letter(codec: Codec, envelope: dict) -> bytes:
    return codec.encode("vitrina.DeadLetter", envelope)
