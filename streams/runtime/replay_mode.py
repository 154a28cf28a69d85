"""Worker side of ``vitrina replay``: what a replay worker does differently, read from its environment.

``streams/ops/replay.py`` starts the replay worker with (all unset in a normal worker, which then behaves
exactly as before):

* ``VITRINA_REPLAY_ID``: turns replay mode on. Internal repartition topics (registry topics with
  ``dead_letter=False`` that are not dead-letter topics: playback.by-item, uploads.by-content, ...)
  get a private copy ``<name>.replay-<id>``, so the live workers never see the replay's forwards and
  the replay never sees the live workers' ones.
* ``VITRINA_REPLAY_UNTIL``: JSON ``{topic: {partition: end_offset}}``; ``decoded_batches`` drops
  records at or after the bound (they are still acknowledged, so the group's committed offset passes
  the bound, which is how the CLI sees that the range is done).
* ``VITRINA_REPLAY_EMIT`` (default "0"): unless "1", sends to every non-internal topic (output events,
  dead letters) are dropped and counted in ``vitrina_replay_suppressed_total``: replaying a range
  must not publish its outputs or its dead letters a second time.
* ``VITRINA_VIEW_PREFIX`` (read by sinks/redis_views.py): the shadow namespace.
"""
from __future__ import annotations

import json
import os
from typing import Any

from prometheus_client import Counter

from streams.kafka.topics import DLQ_PREFIX, TopicSpec, spec

REPLAY_SUPPRESSED = Counter("vitrina_replay_suppressed_total", "Sends dropped by a replay worker (outputs, dead letters)",
                            ["topic"])
REPLAY_DROPPED = Counter("vitrina_replay_beyond_bound_total", "Records at/after the replay's end offset, skipped",
                         ["topic"])


def replay_id() -> str:
    return os.environ.get("VITRINA_REPLAY_ID", "").strip()


def active() -> bool:
    return bool(replay_id())


def is_internal(name: str) -> bool:
    """An internal repartition topic: written and read by the agents themselves."""
    if name.startswith(DLQ_PREFIX):
        return False
    try:
        topic: TopicSpec = spec(name)
    except KeyError:
        return False
    return not topic.dead_letter


def private_name(name: str, rid: str) -> str:
    return f"{name}.replay-{rid}"


def physical_name(name: str) -> str:
    """The registry name a worker uses for ``name`` (a private copy for internal topics in replay mode)."""
    rid = replay_id()
    return private_name(name, rid) if rid and is_internal(name) else name


def parse_bounds(text: str) -> dict[str, dict[int, int]]:
    raw = json.loads(text) if text.strip() else {}
    return {topic: {int(p): int(end) for p, end in parts.items()} for topic, parts in raw.items()}


_bounds: dict[str, dict[int, int]] | None = None


def bounds() -> dict[str, dict[int, int]]:
    global _bounds
    if _bounds is None:
        _bounds = parse_bounds(os.environ.get("VITRINA_REPLAY_UNTIL", "")) if active() else {}
    return _bounds


def beyond_bound(topic: str, partition: int, offset: int) -> bool:
    """Whether a record is past the replay range (False outside replay mode and for unbounded topics)."""
    parts = bounds().get(topic)
    if parts is None:
        return False
    end = parts.get(partition)
    return end is not None and offset >= end


def suppresses(name: str) -> bool:
    return active() and os.environ.get("VITRINA_REPLAY_EMIT", "0") != "1" and not is_internal(name)


def mute(topic: Any, name: str) -> Any:
    """Make ``topic.send`` a counted no-op (replay without re-emitting outputs)."""
    async def send(*args: Any, **kwargs: Any) -> None:
        REPLAY_SUPPRESSED.labels(topic=name).inc()
        return None

    topic.send = send
    return topic
