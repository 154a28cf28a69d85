"""Publishing events: a Python API over confluent-kafka plus the JSON-lines loader.

``EventProducer.publish`` encodes with the configured codec, keys the record by
the topic's key field and hands it to librdkafka (batched, lz4, idempotent).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any, Callable, Iterable

from confluent_kafka import Producer

from infra.logs import get_logger
from infra.settings import Settings, load
from streams.codec import Codec, EncodeError, default_codec
from streams.topics import TopicSpec, full_name, key_of, spec
from streams.validation import ValidationProblem, coerce_and_validate

log = get_logger("vitrina.producer")


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": int(os.environ.get("VITRINA_PRODUCER_LINGER_MS", "50")),  # Tansu on S3 writes one object per batch: bigger batches, fewer PUTs
        "batch.num.messages": 10000,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "compression.type": "lz4",
    }
    config.update(overrides)
    return config


class DeliveryError(RuntimeError):
    pass


class EventProducer:
    def __init__(self, settings: Settings | None = None, codec: Codec | None = None, **config: Any) -> None:
        self.settings = settings or load()
        self.codec = codec or default_codec()
        self._producer = Producer(producer_config(self.settings, **config))
        self.failed: list[str] = []
        self.delivered = 0

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(f"{msg.topic()}: {err}")
        else:
            self.delivered += 1

    def _produce(self, topic: str, value: bytes, key: bytes | None, timestamp_ms: int | None = None) -> None:
        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": self._on_delivery}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.05)

    def publish(self, topic: str | TopicSpec, event: dict, key: bytes | None = None) -> None:
        topic_spec = topic if isinstance(topic, TopicSpec) else spec(topic)
        value = self.codec.encode(topic_spec.schema, event)
        self._produce(full_name(self.settings, topic_spec.name), value,
                      key if key is not None else key_of(topic_spec, event))
        self._producer.poll(0)

    def publish_many(self, topic: str | TopicSpec, events: Iterable[dict]) -> int:
        topic_spec = topic if isinstance(topic, TopicSpec) else spec(topic)
        name = full_name(self.settings, topic_spec.name)
        schema = self.codec.store.current(topic_spec.schema)
        encode = self.codec.encode_with  # type: ignore[attr-defined]
        produce = self._producer.produce
        poll = self._producer.poll
        on_delivery = self._on_delivery
        count = 0
        for event in events:
            value = encode(schema, event)
            key = key_of(topic_spec, event)
            try:
                produce(name, value, key, on_delivery=on_delivery)
            except BufferError:
                self._produce(name, value, key)
            count += 1
            if count & 1023 == 0:
                poll(0)
        poll(0)
        return count

    def publish_raw(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        """Send bytes as they are (dead-letter redrive, tests of malformed input)."""
        self._produce(full_name(self.settings, topic), value, key)  # type: ignore[arg-type]
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} events not delivered within {timeout_s}s (is the broker up at {self.settings.kafka_bootstrap}?)")
        if self.failed:
            failures, self.failed = self.failed, []
            raise DeliveryError(f"{len(failures)} events failed delivery; first: {failures[0]}")

    def __enter__(self) -> "EventProducer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


@dataclass
class LoadReport:
    sent: int = 0
    bad: list[ValidationProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    def summary(self) -> str:
        return f"{self.sent} sent, {len(self.bad)} bad line(s)"


def publish_json_lines(producer: EventProducer, topic: str, lines: Iterable[str],
                       on_bad: Callable[[ValidationProblem], None] | None = None) -> LoadReport:
    """Validate each JSON line against the topic's schema; send the valid ones, report the rest."""
    topic_spec = spec(topic)
    schema = producer.codec.store.current(topic_spec.schema)
    report = LoadReport()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record, problem = coerce_and_validate(line, line_no, schema.expanded)
        if problem is None:
            try:
                producer.publish(topic_spec, record)  # type: ignore[arg-type]
                report.sent += 1
                continue
            except EncodeError as exc:
                problem = ValidationProblem(line_no, "", str(exc))
        report.bad.append(problem)
        if on_bad:
            on_bad(problem)
    producer.flush()
    return report


def open_lines(path: str) -> IO[str]:
    return sys.stdin if path == "-" else open(path, encoding="utf-8")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
