"""Decode raw Faust events, route undecodable ones to the dead-letter topic, log with context."""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Sequence

import weakref

import faust
from faust.streams import _current_event

from infra.logs import get_logger
from streams.kafka.codec import Codec, default_codec
from streams.kafka.deadletter import dead_letter, dlq_topic_for, encode_dead_letter
from streams.runtime import faust_offsets, replay_mode
from streams.runtime.metrics import BATCH_SECONDS, DEAD_LETTER_WRITE_FAILURES, DEAD_LETTERS, EVENTS_IN
# the record model and the one decode path, shared with the engine (re-exported for the agents)
from streams.runtime.records import (INTERNAL_TOPICS, ORIGIN_HEADER, BadHeader, Inbound, Refused,  # noqa: F401
                                     attempts_of, decode_record, origin_of)
from streams.kafka.topics import TopicSpec, explain_invalid_record, full_name, is_compacted, require_key
from infra.settings import load

explain_invalid_record()  # a batch Kafka refuses is reported as INVALID_RECORD with its cause, not UnknownError()
faust_offsets.activate()  # commits pass a compaction gap right after offset 0


class FaustInbound(Inbound):
    """An ``Inbound`` read by a Faust agent: ``source`` is the Faust event."""

    __slots__ = ()

    def bind(self) -> None:
        """Make this the current event so a Faust table writes to its partition's changelog (the one
        agent that keeps a Faust table: uploads' dedupe state)."""
        _current_event.set(weakref.ref(self.source))


def raw_topic(app: faust.App, topic: TopicSpec | str, **kwargs: Any) -> faust.TopicT:
    name = topic.name if isinstance(topic, TopicSpec) else topic
    # replay workers (streams/runtime/replay_mode.py): private internal topics, outputs muted
    channel = app.topic(full_name(load(), replay_mode.physical_name(name)), key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw", **kwargs)
    channel = replay_mode.mute(channel, name) if replay_mode.suppresses(name) else channel
    return require_keys(channel, name) if is_compacted(name) else channel


def require_keys(channel: faust.TopicT, name: str) -> faust.TopicT:
    """Make ``channel.send`` raise ``KeylessRecordError`` for a record without a key (compacted topics):
    Faust would hand it to the producer, the broker would refuse its whole batch, and Faust would only
    log a warning while the agent commits its input: a silent loss."""
    send = channel.send

    async def send_keyed(*args: Any, **kwargs: Any) -> Any:
        require_key(name, kwargs.get("key"), True)
        return await send(*args, **kwargs)

    channel.send = send_keyed  # type: ignore[method-assign]
    return channel


async def forward(topic: faust.TopicT, key: bytes, event: Inbound) -> None:
    """Repartition (explicit group_by): same bytes, new key, origin position in a header.

    The origin lets downstream state apply each original record once even when
    a restarted forwarder sends it again (at-least-once repartitioning).
    """
    await topic.send(key=key, value=event.raw, headers=[event.origin_header()])


async def send_dead_letter(app: faust.App, codec: Codec, source: str, partition: int, offset: int, agent: str,
                           code: str, error: str, key: bytes | None, value: bytes | None, attempts: int = 1,
                           keep_bytes: int | None = None) -> None:
    """Write a dead letter and wait until the broker has it; on failure retry (backing off up to 30 s)
    until it succeeds or the agent is stopped. Returning means the record may be committed: a letter
    that was not written must never let its record's offset be committed (the batch is held back
    instead, see ``hold_back``)."""
    keep_bytes = load().dead_letter_keep_bytes if keep_bytes is None else keep_bytes
    envelope = dead_letter(source, partition, offset, agent, code, error, key, value, attempts, keep_bytes)
    encoded = encode_dead_letter(codec, envelope)
    channel = raw_topic(app, dlq_topic_for(source))
    delay = 0.5
    while True:
        try:
            sent = await channel.send(key=envelope["key"], value=encoded)
            if sent is not None:  # None: a replay worker's muted output
                await sent        # the broker's acknowledgement, not only the producer's buffer
            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - broker down, topic missing...: never skip the record
            DEAD_LETTER_WRITE_FAILURES.labels(source=source, agent=agent).inc()
            get_logger("vitrina.agent", agent=agent, topic=source).error(
                "dead_letter_write_failed", partition=partition, offset=offset, error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)
    DEAD_LETTERS.labels(source=source, agent=agent, reason=code).inc()


def hold_back(events: Sequence[Any]) -> None:
    """Keep these Faust events from being acknowledged until ``release_held``: Faust's ``take_events``
    acknowledges a whole batch when the loop over it ends, also when the agent failed or was cancelled
    in the middle of it, and the worker then commits offsets of records nobody processed (or whose
    dead letter was never written). A batch that is never released is never committed by this worker;
    it is read again from the committed offset after a restart or by the partition's next owner."""
    for event in events:
        event.message.incref()


def release_held(events: Sequence[Any]) -> None:
    for event in events:
        event.message.decref()


async def decoded_batches(app: faust.App, stream: faust.StreamT, source: TopicSpec, agent: str,
                          max_batch: int = 2000, within_s: float = 0.2,
                          codec: Codec | None = None) -> AsyncIterator[list[Inbound]]:
    """Yield batches of decoded events; bad records are dead-lettered and never stop the agent.

    The time from decoding a batch until the agent asks for the next one is the agent's processing
    time of that batch (``vitrina_batch_seconds{agent}``). A replay worker drops records past its range.
    """
    codec = codec or default_codec()
    settings = load()  # once per agent stream
    log = get_logger("vitrina.agent", agent=agent, topic=source.name)
    bounded = replay_mode.active()
    async for events in stream.take_events(max_batch, within=within_s):
        started = time.perf_counter()
        hold_back(events)  # until the agent asks for the next batch, i.e. it is done with this one
        good: list[Inbound] = []
        for event in events:
            message = event.message
            if bounded and replay_mode.beyond_bound(source.name, message.partition, message.offset):
                replay_mode.REPLAY_DROPPED.labels(topic=source.name).inc()
                continue
            try:
                good.append(decode_record(codec, source, event.key, event.value, message.headers, message.partition,
                                          message.offset, int((message.timestamp or 0) * 1000), event,
                                          FaustInbound, max_event_bytes=settings.max_event_bytes))
            except Refused as refused:
                log.warning("dead_letter", partition=message.partition, offset=message.offset,
                            reason=refused.code, error=refused.text)
                await send_dead_letter(app, codec, source.name, message.partition, message.offset, agent,
                                       refused.code, refused.text, event.key, event.value,
                                       attempts_of(message.headers), settings.dead_letter_keep_bytes)
        EVENTS_IN.labels(topic=source.name, agent=agent).inc(len(events))
        if good:
            log.debug("batch", partition=good[-1].partition, offset=good[-1].offset, size=len(good))
        yield good
        release_held(events)  # the agent finished the batch: take_events acknowledges it now
        BATCH_SECONDS.labels(agent=agent).observe(time.perf_counter() - started)


async def dead_letter_failed(app: faust.App, event: Inbound, agent: str, exc: BaseException,
                             codec: Codec | None = None) -> None:
    """A decoded event whose processing raised: keep it (original bytes) with the error, go on."""
    get_logger("vitrina.agent", agent=agent, topic=event.topic).error(
        "processing_failed", partition=event.partition, offset=event.offset, error=repr(exc))
    await send_dead_letter(app, codec or default_codec(), event.topic, event.partition, event.offset, agent,
                           "PROCESSING_FAILED", f"{type(exc).__name__}: {exc}", event.key, event.raw, event.attempts)
