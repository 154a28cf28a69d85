"""Publishing events: a Python API over confluent-kafka plus the JSON-lines loader.

``EventProducer.publish`` encodes with the configured codec, keys the record by
the topic's key field and hands it to librdkafka (batched, lz4, idempotent).
A record without a key for a compacted topic raises ``KeylessRecordError`` before
anything is sent (Kafka would refuse its whole batch).
"""
from __future__ import annotations

import codecs
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import IO, Any, Callable, Iterable

from confluent_kafka import KafkaError, KafkaException, Producer

from infra.logs import get_logger
from infra.settings import Settings, load
from streams.kafka.codec import Codec, EncodeError, default_codec
from streams.kafka.topics import (INVALID_RECORD_EXPLAINED, KeylessRecordError, TopicSpec, full_name, key_of, require_key,
                            spec)
from streams.kafka.validation import ValidationProblem, coerce_and_validate

log = get_logger("vitrina.producer")


LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.producer_linger_ms,  # Tansu on S3 writes one object per batch: bigger batches, fewer PUTs
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
        self.config = producer_config(self.settings, **config)
        self._producer = Producer(self.config)
        self.failed: list[str] = []
        self.delivered = 0

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            explained = f" ({INVALID_RECORD_EXPLAINED})" if err.code() == KafkaError.INVALID_RECORD else ""
            self.failed.append(f"{msg.topic()}: {err}{explained}")
        else:
            self.delivered += 1

    @property
    def max_record_bytes(self) -> int:
        """The largest key + value librdkafka takes (``message.max.bytes``): a larger one fails in ``produce``."""
        return int(self.config.get("message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES))

    def _produce(self, topic: str, value: bytes, key: bytes | None, timestamp_ms: int | None = None,
                 on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": on_delivery or self._on_delivery}
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
        key = key if key is not None else key_of(topic_spec, event)
        require_key(topic_spec.name, key, topic_spec.compacted)
        self._produce(full_name(self.settings, topic_spec.name), value, key)
        self._producer.poll(0)

    def publish_many(self, topic: str | TopicSpec, events: Iterable[dict]) -> int:
        topic_spec = topic if isinstance(topic, TopicSpec) else spec(topic)
        name = full_name(self.settings, topic_spec.name)
        schema = self.codec.store.current(topic_spec.schema)
        encode = self.codec.encode_with  # type: ignore[attr-defined]
        produce = self._producer.produce
        poll = self._producer.poll
        on_delivery = self._on_delivery
        compacted = topic_spec.compacted
        count = 0
        for event in events:
            value = encode(schema, event)
            key = key_of(topic_spec, event)
            if compacted and key is None:
                require_key(topic_spec.name, key, True)
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
        require_key(topic, key)
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
    sent: int = 0  # records the broker acknowledged
    bad: list[ValidationProblem] = field(default_factory=list)
    lines: int = 0  # lines read (blank ones included)

    @property
    def ok(self) -> bool:
        return not self.bad

    def summary(self) -> str:
        text = f"{self.sent} sent, {len(self.bad)} bad line(s) of {self.lines} line(s) read"
        if self.bad:
            numbers = sorted({p.line_no for p in self.bad})
            shown = ", ".join(map(str, numbers[:20])) + (f", ... ({len(numbers) - 20} more)" if len(numbers) > 20 else "")
            text += f"; bad: line {shown}"
        return text


# A one-record batch adds its 61-byte header and the record's own framing (varints, attributes) to the key
# and value; lz4 adds 4 bytes per 64 KiB block of incompressible data. The broker checks the whole batch.
BATCH_FRAMING_BYTES = 128
DELIVERY_TIMEOUT_MS = 60_000  # `vitrina produce`: a line the broker has not acknowledged by then is reported


def record_fits(size: int, limit: int) -> bool:
    """Whether a record of ``size`` bytes (key + value) fits in a batch of at most ``limit`` bytes."""
    return size + BATCH_FRAMING_BYTES + size // 8192 <= limit


def topic_record_limit(settings: Settings, topic: str | TopicSpec, timeout_s: float = 10.0) -> tuple[int, str]:
    """The largest record batch the broker accepts on ``topic`` (its ``max.message.bytes``, which defaults to
    the broker's ``message.max.bytes``) and where the figure comes from. librdkafka's default when the broker
    does not tell (no DescribeConfigs, topic missing, broker down)."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    from streams.kafka.topics import admin_client

    topic_spec = topic if isinstance(topic, TopicSpec) else spec(topic)
    name = full_name(settings, topic_spec.name)
    admin = admin_client(settings)
    try:
        resource = ConfigResource(ResourceType.TOPIC, name)
        entries = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(timeout_s)
        limit = int(entries["max.message.bytes"].value)
    except Exception as exc:  # noqa: BLE001 - any failure: the client's own default is the safe figure
        log.warning("record_limit_unknown", topic=name, error=f"{type(exc).__name__}: {exc}")
        return LIBRDKAFKA_MESSAGE_MAX_BYTES, "librdkafka's default message.max.bytes (the broker's limit could not be read)"
    return max(1000, min(limit, 1_000_000_000)), f"max.message.bytes of topic {name}"


def json_lines_producer(settings: Settings | None = None, topic: str | TopicSpec | None = None,
                        **config: Any) -> EventProducer:
    """An ``EventProducer`` for ``publish_json_lines``: it takes records up to the topic's limit on the broker
    (librdkafka's own default is 1 MB, the embedded broker's 8 MiB) and gives up on a delivery after
    ``DELIVERY_TIMEOUT_MS`` (librdkafka waits 5 minutes), so every line gets its answer in bounded time."""
    settings = settings or load()
    overrides: dict[str, Any] = {"message.timeout.ms": DELIVERY_TIMEOUT_MS}
    if topic is not None:
        overrides["message.max.bytes"] = topic_record_limit(settings, topic)[0]
    return EventProducer(settings, **{**overrides, **config})


_BLANK = ValidationProblem(0, "", "blank")


def _describe_delivery_error(err: Any, msg: Any, limit: int) -> str:
    text = err.str()
    code = err.code()
    if code == KafkaError.INVALID_RECORD:
        text += f" ({INVALID_RECORD_EXPLAINED})"
    elif code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
        size = len(msg.value() or b"") + len(msg.key() or b"")
        text += f" (record of {size:,} bytes; this producer's limit is {limit:,} bytes)"
    elif code == KafkaError._MSG_TIMED_OUT:
        text += f" (not acknowledged within {DELIVERY_TIMEOUT_MS // 1000} s: is the broker up?)"
    return text


def publish_json_lines(producer: EventProducer, topic: str, lines: Iterable[bytes | str],
                       on_bad: Callable[[ValidationProblem], None] | None = None,
                       flush_timeout_s: float | None = None) -> LoadReport:
    """Validate each JSON line against the topic's schema; send the valid ones, report the rest.

    Every line gets an answer and the file is always read to its end: a line that is not UTF-8 or JSON,
    does not fit the schema or what consumers can decode (``streams.kafka.validation``), is too large for the
    broker (``topic_record_limit``) or that the broker refuses is reported with its line number (through
    ``on_bad`` as it happens, and in ``LoadReport.bad``); every good line is flushed before this returns,
    also when reading the input fails. ``LoadReport.sent`` counts the records the broker acknowledged."""
    topic_spec = spec(topic)
    schema = producer.codec.store.current(topic_spec.schema)
    encode = producer.codec.encode_with  # type: ignore[attr-defined]
    name = full_name(producer.settings, topic_spec.name)
    limit = producer.max_record_bytes
    report = LoadReport()
    pending: set[int] = set()  # line numbers handed to librdkafka, not acknowledged yet

    def bad(problem: ValidationProblem) -> None:
        report.bad.append(problem)
        if on_bad:
            on_bad(problem)

    def delivered(line_no: int, err: Any, msg: Any) -> None:
        pending.discard(line_no)
        if err is None:
            report.sent += 1
        else:
            bad(ValidationProblem(line_no, "", f"not delivered: {_describe_delivery_error(err, msg, limit)}"))

    def publish_line(line_no: int, raw: bytes | str) -> ValidationProblem | None:
        if isinstance(raw, bytes):
            if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return ValidationProblem(line_no, "", f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte "
                                                      f"{exc.start + 1} of the line ({exc.reason})")
        else:
            line = raw
        line = line.rstrip("\r\n")
        if not line.strip():
            return _BLANK
        record, problem = coerce_and_validate(line, line_no, schema.expanded)
        if problem is not None:
            return problem
        try:
            value = encode(schema, record)
        except EncodeError as exc:
            return ValidationProblem(line_no, "", str(exc))
        key = key_of(topic_spec, record)
        if key is not None and not key.strip():
            return ValidationProblem(line_no, topic_spec.key_field, "the record's key must not be empty")
        try:
            require_key(topic_spec.name, key, topic_spec.compacted)
        except KeylessRecordError as exc:
            return ValidationProblem(line_no, topic_spec.key_field, str(exc))
        size = len(value) + len(key or b"")
        if not record_fits(size, limit):
            return ValidationProblem(line_no, "", f"record too large: {size:,} bytes encoded (key + value); the "
                                                  f"broker takes at most {limit:,} bytes per record on {topic_spec.name} "
                                                  f"(max.message.bytes, batch framing and compression included)")
        pending.add(line_no)
        try:
            producer._produce(name, value, key, on_delivery=partial(delivered, line_no))
        except KafkaException as exc:
            pending.discard(line_no)
            return ValidationProblem(line_no, "", f"refused by the producer: {exc.args[0].str()}")
        producer._producer.poll(0)
        return None

    try:
        for line_no, raw in enumerate(lines, start=1):
            report.lines = line_no
            try:
                problem = publish_line(line_no, raw)
            except (KeyboardInterrupt, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - one line never aborts the file; the reason names it
                log.exception("produce_line_failed", topic=topic_spec.name, line=line_no)
                problem = ValidationProblem(line_no, "", f"could not be sent: {type(exc).__name__}: {exc}")
            if problem is not None and problem is not _BLANK:
                bad(problem)
    finally:
        _drain(producer, pending, bad, flush_timeout_s)
    return report


def _drain(producer: EventProducer, pending: set[int], bad: Callable[[ValidationProblem], None],
           timeout_s: float | None) -> None:
    """Flush until every queued line has its delivery report (librdkafka gives one to each by its
    ``message.timeout.ms``); a line still without one at the deadline is reported as unconfirmed."""
    if timeout_s is None:
        timeout_s = int(producer.config.get("message.timeout.ms", 300_000)) / 1000 + 15
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        producer._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
    producer._producer.poll(0)
    for line_no in sorted(pending):
        bad(ValidationProblem(line_no, "", f"delivery not confirmed by the broker within {timeout_s:.0f} s"))
    pending.clear()


def open_lines(path: str) -> IO[bytes]:
    """The input as bytes: each line is decoded on its own, so one that is not UTF-8 is reported, not fatal."""
    return sys.stdin.buffer if path == "-" else open(path, "rb")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
