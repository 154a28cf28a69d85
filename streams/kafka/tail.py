"""Reading topics decoded to JSON: from the beginning, from a timestamp, or following."""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, TopicPartition

from infra.settings import Settings
from streams.kafka.codec import Codec, DecodeError
from streams.kafka.offsets import offset_for_time, partitions_of, probe_consumer
from streams.kafka.topics import full_name, spec


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: dict | None
    error: DecodeError | None = None
    raw: bytes | None = None

    def to_json(self) -> str:
        out: dict[str, Any] = {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                               "timestamp_ms": self.timestamp_ms, "key": self.key}
        if self.error is not None:
            out["error"] = {"code": self.error.code, "message": self.error.message}
            out["raw_base64"] = base64.b64encode(self.raw or b"").decode()
        else:
            out["value"] = self.value
        return json.dumps(out, default=json_default, ensure_ascii=False)


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def tail(settings: Settings, codec: Codec, topic: str, *, since_ms: int | None = None, latest: bool = False,
         follow: bool = False, limit: int | None = None, idle_timeout_s: float = 2.0) -> Iterator[Record]:
    """Yield decoded records. Without ``follow`` it stops once every partition is idle at its end."""
    topic_spec = spec(topic)
    name = full_name(settings, topic_spec.name)
    consumer = probe_consumer(settings)
    try:
        parts = partitions_of(consumer, name)
        if since_ms is not None:
            starts = [offset_for_time(consumer, name, p, since_ms) for p in parts]
        else:
            starts = [OFFSET_END if latest else OFFSET_BEGINNING] * len(parts)
        consumer.assign([TopicPartition(name, p, o) for p, o in zip(parts, starts)])
        at_end: set[int] = set()
        seen = 0
        last_message = time.monotonic()
        while True:
            msg = consumer.poll(0.5)
            if msg is None:
                if not follow and (len(at_end) == len(parts) or time.monotonic() - last_message > idle_timeout_s) \
                        and time.monotonic() - last_message > min(idle_timeout_s, 0.5):
                    return
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise RuntimeError(f"consuming {name}: {msg.error()}")
            at_end.discard(msg.partition())
            last_message = time.monotonic()
            key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
            try:
                record = Record(topic_spec.name, msg.partition(), msg.offset(), msg.timestamp()[1], key,
                                codec.decode(msg.value(), topic_spec.schema))
            except DecodeError as exc:
                record = Record(topic_spec.name, msg.partition(), msg.offset(), msg.timestamp()[1], key, None, exc, msg.value())
            yield record
            seen += 1
            if limit is not None and seen >= limit:
                return
    finally:
        consumer.close()
