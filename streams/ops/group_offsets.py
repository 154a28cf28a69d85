"""Consumer-group offsets: show lag, and reset with the semantics of kafka-consumer-groups.sh.

Like Kafka's tool, a reset is a dry run unless ``execute`` is set, and it is refused
while the group has active members (stop the workers first). Strategies:
earliest, latest, to an offset, to a datetime (first record at/after it), shift by N
(clamped to the log's bounds).

``reset_exited_group`` is for a caller that stopped the group's workers itself (a replay between its
phases): where the broker keeps listing a member that exited (Tansu), it sets the offsets as a member.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.logs import get_logger
from infra.settings import Settings
from streams.kafka.broker_capabilities import capabilities
from streams.kafka.offsets import end_offset, offset_for_time, partitions_of, probe_consumer
from streams.kafka.topics import admin_client, full_name

log = get_logger("vitrina.offsets")

ACTIVE_STATES = ("STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE")
# The assignment protocols of vitrina's groups: Faust's agents ("faust") and the engine processors
# (aiokafka's "range"). A member that joins a group only to commit offsets offers them all: Tansu keeps
# a group's first protocol and refuses (INCONSISTENT_GROUP_PROTOCOL) a member that does not offer it.
GROUP_PROTOCOLS = ("faust", "range", "roundrobin")


class GroupActiveError(RuntimeError):
    pass


@dataclass(frozen=True)
class PartitionPlan:
    topic: str
    partition: int
    current: int | None  # None: the group has no committed offset
    target: int
    end: int

    @property
    def lag_after(self) -> int:
        return max(0, self.end - self.target)

    def describe(self) -> str:
        current = "-" if self.current is None else str(self.current)
        return f"{self.topic:<28} p{self.partition:<3} current={current:>8} new={self.target:>8} end={self.end:>8} lag={self.lag_after}"


# Errors of a group coordinator that is not there yet (a fresh cluster, a moved group).
_COORDINATOR_ERRORS = (KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
                       KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError._TIMED_OUT, KafkaError._TRANSPORT)


def wait_for_coordinator(admin: AdminClient, group: str, timeout_s: float = 30.0) -> None:
    """Return once the group's coordinator answers (DescribeGroups).

    librdkafka's admin ListConsumerGroupOffsets crashes the process (SIGSEGV in rd_kafka_cgrp_op: an
    admin client has no consumer group handle) when its OffsetFetch is answered NOT_COORDINATOR or
    COORDINATOR_NOT_AVAILABLE, as on a fresh cluster whose __consumer_offsets is not ready
    (confluentinc/librdkafka#5040, confluent-kafka-python#1982). DescribeGroups reports those errors
    as exceptions, so it is asked first, until the coordinator answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
            return
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None or error.code() not in _COORDINATOR_ERRORS:
                return  # an answer from the coordinator (e.g. GROUP_ID_NOT_FOUND for a group never used)
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def committed(admin: AdminClient, group: str, topic: str, partitions: list[int]) -> dict[int, int | None]:
    wait_for_coordinator(admin, group)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request], request_timeout=30)[group].result(timeout=60)
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in result.topic_partitions}


def committed_by_consumer(settings: Settings, group: str, topic: str, partitions: list[int],
                          timeout_s: float = 10.0) -> dict[int, int | None]:
    """``committed`` without the admin client: an OffsetFetch by a consumer of ``group`` that never joins
    it (no subscribe, no commit), as kafka-consumer-groups.sh would ask. For callers inside a worker.

    librdkafka's coordinator-targeted admin requests (DescribeConsumerGroups, ListConsumerGroupOffsets)
    abort the whole process when the broker goes away with one in flight:
    ``rd_kafka_enq_once_del_source_return: Assertion eonce->refcnt > 0 failed`` (confluentinc/librdkafka#4605;
    seen with confluent-kafka 2.16.2 when a worker's lag probe ran during a broker kill -9, and at the first
    kill in tests/faults/test_lag_probe_outage.py). The consumer's committed() takes the consumer-group
    path, which reports a vanished broker as an error (``KafkaException`` after ``timeout_s``) instead."""
    consumer = probe_consumer(settings, **{"group.id": group})
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout_s)
    finally:
        consumer.close()
    failed = [tp for tp in result if tp.error is not None]
    if failed:
        raise KafkaException(failed[0].error)
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in result}


def group_state(admin: AdminClient, group: str) -> tuple[str, int]:
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return description.state.name, len(description.members)


def plan_reset(settings: Settings, group: str, topic: str, *, to_earliest: bool = False, to_latest: bool = False,
               to_offset: int | None = None, to_datetime_ms: int | None = None, shift_by: int | None = None,
               partitions: list[int] | None = None) -> list[PartitionPlan]:
    name = full_name(settings, topic)
    consumer = probe_consumer(settings)
    admin = admin_client(settings)
    try:
        parts = partitions if partitions is not None else partitions_of(consumer, name)
        current = committed(admin, group, name, parts)
        plans = []
        for p in parts:
            end = end_offset(consumer, name, p)
            if to_earliest:
                target = 0
            elif to_latest:
                target = end
            elif to_offset is not None:
                target = to_offset
            elif to_datetime_ms is not None:
                target = offset_for_time(consumer, name, p, to_datetime_ms)
            elif shift_by is not None:
                base = current[p] if current[p] is not None else 0
                target = base + shift_by
            else:
                raise ValueError("choose a reset strategy")
            plans.append(PartitionPlan(topic, p, current[p], max(0, min(target, end)), end))
        return plans
    finally:
        consumer.close()


def execute_reset(settings: Settings, group: str, plans: list[PartitionPlan]) -> None:
    admin = admin_client(settings)
    state, members = group_state(admin, group)
    if state in ACTIVE_STATES and members:
        raise GroupActiveError(f"group {group!r} is {state} with {members} member(s): stop its workers first "
                               "(offsets of an active group cannot be reset)")
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(full_name(settings, plan.topic), plan.partition, plan.target) for plan in plans])
    result = admin.alter_consumer_group_offsets([request], request_timeout=30)[group].result(timeout=60)
    errors = [tp for tp in result.topic_partitions if tp.error]
    if any(code in str(tp.error) for tp in errors for code in ("UNKNOWN_MEMBER_ID", "REBALANCE", "ILLEGAL_GENERATION")):
        # the broker saw live members that describe_consumer_groups did not report (Tansu does this)
        raise GroupActiveError(f"group {group!r} has active members: stop its workers first "
                               f"(broker said {errors[0].error.str()})")
    if errors:
        raise RuntimeError(f"offset reset failed for {[(tp.topic, tp.partition, str(tp.error)) for tp in errors]}")
    applied = committed(admin, group, full_name(settings, plans[0].topic), [plan.partition for plan in plans])
    wrong = [plan for plan in plans if applied[plan.partition] != plan.target]
    if wrong:
        raise GroupActiveError(f"the broker kept the old offsets for {len(wrong)} partition(s) of group {group!r}; "
                               "is a worker of that group still running?")


def reset_exited_group(settings: Settings, group: str, plans: list[PartitionPlan], *, timeout_s: float = 60.0) -> None:
    """Set a group's offsets (every topic of ``plans``) when the caller stopped the group's workers itself,
    as a replay does between its phases (streams/ops/replay.py): ``execute_reset`` per topic, admin requests
    refused while the group has live members.

    Tansu (``admin_commits_after_exit`` off) keeps listing a member after its worker exited, cleanly or not:
    the admin OffsetCommit is answered UNKNOWN_MEMBER_ID however long one retries (30 retries over 30 s).
    There a refused reset is done as a member (``commit_as_member``): Tansu evicts the stale member when a
    new one joins (5-20 s). A live worker keeps its partitions, so a reset is still refused then."""
    by_topic: dict[str, list[PartitionPlan]] = {}
    for plan in plans:
        by_topic.setdefault(plan.topic, []).append(plan)
    try:
        for topic_plans in by_topic.values():
            execute_reset(settings, group, topic_plans)
    except GroupActiveError as refused:
        if capabilities(settings).admin_commits_after_exit:
            raise
        log.info("offsets_reset_as_member", group=group, reason=str(refused))
        commit_as_member(settings, group, plans, timeout_s=timeout_s)


def unassigned(wanted: Iterable[tuple[str, int]], assigned: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """The (topic, partition)s of ``wanted`` not in ``assigned``, sorted."""
    return sorted(set(wanted) - set(assigned))


def commit_as_member(settings: Settings, group: str, plans: list[PartitionPlan], *, timeout_s: float = 60.0) -> None:
    """Commit ``plans`` as a member of ``group``: join it with an aiokafka consumer (aiokafka groups work on
    Tansu, librdkafka groups hang there), wait until every planned partition is assigned to it, commit with
    its generation, leave, then read the offsets back. Raises ``GroupActiveError`` when some partitions stay
    with another member (a live worker) until ``timeout_s``."""
    admin = admin_client(settings)
    offsets = {(full_name(settings, plan.topic), plan.partition): plan.target for plan in plans}
    _run_async(_commit_as_member(settings, group, offsets, timeout_s))
    by_topic: dict[str, list[int]] = {}
    for topic, partition in offsets:
        by_topic.setdefault(topic, []).append(partition)
    wrong = [(topic, partition) for topic, partitions in by_topic.items()
             for partition, at in committed(admin, group, topic, partitions).items() if at != offsets[(topic, partition)]]
    if wrong:
        raise GroupActiveError(f"the broker kept the old offsets for {len(wrong)} partition(s) of group {group!r} "
                               "after a commit as a member; is a worker of that group still running?")


def _run_async(coroutine):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1) as pool:  # called from a coroutine: a loop of its own in a thread
        return pool.submit(asyncio.run, coroutine).result()


def commit_assignors(protocols: Iterable[str] = GROUP_PROTOCOLS) -> tuple[type, ...]:
    """aiokafka assignors named after ``protocols`` (in that order), all round robin: whichever protocol the
    group uses, the committing member is its leader (the only member once stale ones are evicted) and
    assigns itself every partition. (DescribeGroups cannot tell the protocol: Tansu answers a member id.)"""
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    return tuple(type(f"CommitAssignor_{name}", (RoundRobinPartitionAssignor,), {"name": name}) for name in protocols)


async def _commit_as_member(settings: Settings, group: str, offsets: dict[tuple[str, int], int],
                            timeout_s: float) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition as AIOTopicPartition
    from aiokafka.errors import KafkaError as AIOKafkaError
    from aiokafka.structs import OffsetAndMetadata

    session_ms = int(settings.session_timeout_s * 1000)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, client_id=f"{group}-offsets",
        enable_auto_commit=False, auto_offset_reset="latest", session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(1_000, session_ms // 5), rebalance_timeout_ms=2 * session_ms,
        partition_assignment_strategy=commit_assignors())
    consumer.subscribe(sorted({topic for topic, _ in offsets}))
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while True:
            assignment = consumer.assignment()
            if not unassigned(offsets, ((tp.topic, tp.partition) for tp in assignment)):
                consumer.pause(*assignment)
                try:
                    await consumer.commit({AIOTopicPartition(topic, partition): OffsetAndMetadata(offset, "")
                                           for (topic, partition), offset in offsets.items()})
                    return
                except AIOKafkaError as exc:  # a rebalance between the assignment and the commit: again
                    last_error = exc
            if time.monotonic() > deadline:
                missing = unassigned(offsets, ((tp.topic, tp.partition) for tp in consumer.assignment()))
                raise GroupActiveError(f"group {group!r}: {len(missing)} partition(s) not assigned to a member "
                                       f"setting its offsets within {timeout_s:.0f} s (a worker of the group still "
                                       f"running?); last error: {last_error!r}")
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
