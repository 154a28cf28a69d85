"""Consumer-group offsets: show lag, and reset with the semantics of kafka-consumer-groups.sh.

Like Kafka's tool, a reset is a dry run unless ``execute`` is set, and it is refused
while the group has active members (stop the workers first). Strategies:
earliest, latest, to an offset, to a datetime (first record at/after it), shift by N
(clamped to the log's bounds).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.settings import Settings
from streams.kafka.offsets import end_offset, offset_for_time, partitions_of, probe_consumer
from streams.kafka.topics import admin_client, full_name

ACTIVE_STATES = ("STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE")


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
