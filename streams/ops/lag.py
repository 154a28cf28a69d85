"""Consumer lag: committed offsets of a group against verified end offsets, per topic and partition.

``group_lag`` is plain data (the status page uses it). ``install(app)`` adds a worker task that, every
``VITRINA_LAG_EVERY_S`` seconds (default 15), measures the lag of the partitions the worker is assigned,
for the Faust app's group and for each engine processor's group (streams/engine), and sets
``vitrina_consumer_lag{group,topic,partition}``. The blocking broker calls run in a thread, so the
agents' event loop never waits for them; ends are verified by reading (Tansu's are stale).
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Iterable

from prometheus_client import Gauge

from infra.logs import get_logger
from infra.settings import Settings, load
from streams.runtime.metrics import CONSUMER_LAG

log = get_logger("vitrina.lag")
LAG_UPDATED = Gauge("vitrina_consumer_lag_updated_seconds", "Unix time of the last lag measurement")
COMMITTED = Gauge("vitrina_consumer_committed_offset", "Committed offset of a group of the worker",
                  ["group", "topic", "partition"])
END = Gauge("vitrina_log_end_offset", "Verified end offset of the log", ["topic", "partition"])


@dataclass(frozen=True)
class LagRow:
    topic: str               # registry name (no prefix)
    partition: int
    committed: int | None    # None: the group has not committed on this partition
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - (self.committed or 0))

    def as_dict(self) -> dict:
        return {**asdict(self), "lag": self.lag}


def group_lag(settings: Settings, group: str, topics: Iterable[str],
              partitions: dict[str, list[int]] | None = None, only_committed: bool = False,
              known_ends: dict[tuple[str, int], int] | None = None) -> list[LagRow]:
    """Lag of ``group`` on registry ``topics`` (all partitions unless ``partitions`` names them).
    ``known_ends`` (full topic name, partition) -> an end verified earlier; updated with the new ends.
    No admin client: the worker measures this every few seconds, through broker outages too, and
    librdkafka's group admin requests abort the process then (``group_offsets.committed_by_consumer``)."""
    from streams.ops.group_offsets import committed_by_consumer
    from streams.kafka.offsets import end_offsets, partitions_of, probe_consumer
    from streams.kafka.topics import full_name

    consumer = probe_consumer(settings)
    wanted: list[tuple[str, str, int, int | None]] = []
    try:
        for topic in topics:
            name = full_name(settings, topic)
            try:
                parts = (partitions or {}).get(topic) or partitions_of(consumer, name)
            except KeyError:
                continue
            done = committed_by_consumer(settings, group, name, parts)
            if only_committed and all(v is None for v in done.values()):
                continue
            wanted += [(topic, name, p, done.get(p)) for p in parts]
        ends = end_offsets(consumer, [(name, p) for _, name, p, _ in wanted], known_ends)
        if known_ends is not None:
            known_ends.update(ends)
        rows = [LagRow(topic, p, at, ends[(name, p)]) for topic, name, p, at in wanted]
    finally:
        consumer.close()
    return rows


def _registry_name(settings: Settings, topic: str) -> str:
    from streams.runtime.replay_mode import replay_id

    name = topic[len(settings.topic_prefix):] if settings.topic_prefix and topic.startswith(settings.topic_prefix) else topic
    suffix = f".replay-{replay_id()}"
    return name[: -len(suffix)] if replay_id() and name.endswith(suffix) else name


def install(app, every_s: float | None = None) -> None:
    """Measure the lag of this worker's assigned source partitions every ``every_s`` seconds (the worker passes
    ``Settings.lag_every_s``, VITRINA_LAG_EVERY_S), off the event loop."""
    every = every_s if every_s is not None else load().lag_every_s

    def assignments(settings: Settings) -> list[tuple[str, dict[str, list[int]]]]:
        """(group, registry topic -> assigned partitions) for the app's agents and each engine processor."""
        from streams.runtime.engine.service import running

        sources = {t for agent in app.agents.values() for t in getattr(agent.channel, "topics", ())}
        assigned: dict[str, list[int]] = {}
        for tp in app.consumer.assignment():
            if tp.topic in sources:
                assigned.setdefault(_registry_name(settings, tp.topic), []).append(tp.partition)
        groups = [(app.conf.id, assigned)] + [(runner.group, runner.assigned_sources()) for runner in running()]
        return [(group, parts) for group, parts in groups if parts]

    @app.task
    async def measure_consumer_lag() -> None:
        settings = load()
        loop = asyncio.get_running_loop()
        known_ends: dict[tuple[str, int], int] = {}  # read on from there next time (Tansu's answers lag)
        while True:
            await asyncio.sleep(every)
            try:
                groups = assignments(settings)
            except Exception as exc:  # noqa: BLE001 - consumer not started yet or rebalancing
                log.warning("lag_measure_failed", error=repr(exc))
                continue
            for group, assigned in groups:
                try:
                    rows = await loop.run_in_executor(None, group_lag, settings, group, list(assigned), assigned,
                                                      False, known_ends)
                except Exception as exc:  # noqa: BLE001 - a broker hiccup: measure again next time
                    log.warning("lag_measure_failed", group=group, error=repr(exc))
                    continue
                for row in rows:
                    labels = {"topic": row.topic, "partition": str(row.partition)}
                    CONSUMER_LAG.labels(group=group, **labels).set(row.lag)
                    END.labels(**labels).set(row.end)
                    if row.committed is not None:
                        COMMITTED.labels(group=group, **labels).set(row.committed)
            LAG_UPDATED.set_to_current_time()
