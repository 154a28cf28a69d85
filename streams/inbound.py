"""Decode raw Faust events, route undecodable ones to the dead-letter topic, log with context."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import weakref

import faust
from faust.streams import _current_event

from infra.logs import get_logger
from streams.codec import Codec, DecodeError, default_codec
from streams.deadletter import dead_letter, dlq_topic_for, encode_dead_letter
from streams import replay_mode
from streams.metrics import BATCH_SECONDS, DEAD_LETTERS, EVENTS_IN
from streams.topics import TopicSpec, full_name
from infra.settings import load



@dataclass(frozen=True)
class Inbound:
    key: bytes | None
    value: dict
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    raw: bytes
    source: Any = None  # the Faust event: table writes need it as the "current event"
    origin: tuple[int, int] | None = None  # (partition, offset) in the original topic, kept across repartitions

    @property
    def origin_partition(self) -> int:
        return self.origin[0] if self.origin else self.partition

    @property
    def origin_offset(self) -> int:
        return self.origin[1] if self.origin else self.offset

    def bind(self) -> None:
        """Make this the current event so Faust tables write to its partition's changelog."""
        _current_event.set(weakref.ref(self.source))


def raw_topic(app: faust.App, topic: TopicSpec | str, **kwargs: Any) -> faust.TopicT:
    name = topic.name if isinstance(topic, TopicSpec) else topic
    # replay workers (streams/replay_mode.py): private internal topics, outputs muted
    channel = app.topic(full_name(load(), replay_mode.physical_name(name)), key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw", **kwargs)
    return replay_mode.mute(channel, name) if replay_mode.suppresses(name) else channel


ORIGIN_HEADER = "vitrina-origin"
ATTEMPTS_HEADER = "vitrina-attempts"  # set by `vitrina dlq redrive`


def _header(headers: Any, wanted: str) -> bytes | None:
    for name, value in (headers.items() if isinstance(headers, dict) else headers or ()):
        if name == wanted:
            return value
    return None


def _origin(headers: Any) -> tuple[int, int] | None:
    value = _header(headers, ORIGIN_HEADER)
    if value is None:
        return None
    partition, offset = value.decode().split(":")
    return int(partition), int(offset)


def _attempts(headers: Any) -> int:
    value = _header(headers, ATTEMPTS_HEADER)
    return int(value) if value and value.isdigit() else 1


async def forward(topic: faust.TopicT, key: bytes, event: Inbound) -> None:
    """Repartition (explicit group_by): same bytes, new key, origin position in a header.

    The origin lets downstream state apply each original record once even when
    a restarted forwarder sends it again (at-least-once repartitioning).
    """
    origin = f"{event.origin_partition}:{event.origin_offset}".encode()
    await topic.send(key=key, value=event.raw, headers=[(ORIGIN_HEADER, origin)])


async def send_dead_letter(app: faust.App, codec: Codec, source: str, partition: int, offset: int, agent: str,
                           code: str, error: str, key: bytes | None, value: bytes | None, attempts: int = 1) -> None:
    envelope = dead_letter(source, partition, offset, agent, code, error, key, value, attempts)
    await raw_topic(app, dlq_topic_for(source)).send(key=key, value=encode_dead_letter(codec, envelope))
    DEAD_LETTERS.labels(source=source, agent=agent, reason=code).inc()


async def decoded_batches(app: faust.App, stream: faust.StreamT, source: TopicSpec, agent: str,
                          max_batch: int = 2000, within_s: float = 0.2,
                          codec: Codec | None = None) -> AsyncIterator[list[Inbound]]:
    """Yield batches of decoded events; bad records are dead-lettered and never stop the agent.

    The time from decoding a batch until the agent asks for the next one is the agent's processing
    time of that batch (``vitrina_batch_seconds{agent}``). A replay worker drops records past its range.
    """
    codec = codec or default_codec()
    log = get_logger("vitrina.agent", agent=agent, topic=source.name)
    bounded = replay_mode.active()
    async for events in stream.take_events(max_batch, within=within_s):
        started = time.perf_counter()
        good: list[Inbound] = []
        for event in events:
            message = event.message
            if bounded and replay_mode.beyond_bound(source.name, message.partition, message.offset):
                replay_mode.REPLAY_DROPPED.labels(topic=source.name).inc()
                continue
            raw = event.value
            try:
                value = codec.decode(raw, source.schema)
            except DecodeError as exc:
                log.warning("dead_letter", partition=message.partition, offset=message.offset, reason=exc.code, error=exc.message)
                await send_dead_letter(app, codec, source.name, message.partition, message.offset, agent,
                                       exc.code, exc.message, event.key, raw, _attempts(message.headers))
                continue
            good.append(Inbound(event.key, value, source.name, message.partition, message.offset,
                                int((message.timestamp or 0) * 1000), raw, event, _origin(message.headers)))
        EVENTS_IN.labels(topic=source.name, agent=agent).inc(len(events))
        if good:
            log.debug("batch", partition=good[-1].partition, offset=good[-1].offset, size=len(good))
        yield good
        BATCH_SECONDS.labels(agent=agent).observe(time.perf_counter() - started)


async def dead_letter_failed(app: faust.App, event: Inbound, agent: str, exc: BaseException,
                             codec: Codec | None = None) -> None:
    """A decoded event whose processing raised: keep it (original bytes) with the error, go on."""
    get_logger("vitrina.agent", agent=agent, topic=event.topic).error(
        "processing_failed", partition=event.partition, offset=event.offset, error=repr(exc))
    headers = event.source.message.headers if event.source is not None else None
    await send_dead_letter(app, codec or default_codec(), event.topic, event.partition, event.offset, agent,
                           "PROCESSING_FAILED", f"{type(exc).__name__}: {exc}", event.key, event.raw, _attempts(headers))
