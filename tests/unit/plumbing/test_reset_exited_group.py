"""Setting a stopped group's offsets (a replay between its phases): admin requests on Apache Kafka; on Tansu,
which keeps listing an exited member, a refused reset is committed by a member of the group."""
from __future__ import annotations

import dataclasses

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from infra.settings import load
from streams.kafka.broker_capabilities import APACHE_KAFKA, TANSU, capabilities
from streams.ops import group_offsets
from streams.ops.group_offsets import (GROUP_PROTOCOLS, GroupActiveError, PartitionPlan, commit_assignors,
                                       reset_exited_group, unassigned)


def settings(broker: str):
    return dataclasses.replace(load(), broker=broker)


def plans() -> list[PartitionPlan]:
    return [PartitionPlan("catalogue", 0, None, 4, 9), PartitionPlan("playback", 0, None, 0, 3),
            PartitionPlan("playback", 1, None, 2, 3), PartitionPlan("catalogue", 1, None, 1, 1)]


@pytest.fixture
def calls(monkeypatch):
    """execute_reset refused (a member listed) and commit_as_member recorded, no broker."""
    seen: list[tuple] = []

    def execute_reset(_settings, group, topic_plans):
        seen.append(("admin", group, [(p.topic, p.partition) for p in topic_plans]))
        raise GroupActiveError("broker said Unknown member")

    def commit_as_member(_settings, group, all_plans, *, timeout_s):
        seen.append(("member", group, [(p.topic, p.partition, p.target) for p in all_plans]))

    monkeypatch.setattr(group_offsets, "execute_reset", execute_reset)
    monkeypatch.setattr(group_offsets, "commit_as_member", commit_as_member)
    return seen


def test_only_tansu_refuses_admin_commits_after_the_members_exited():
    assert APACHE_KAFKA.admin_commits_after_exit and not TANSU.admin_commits_after_exit
    assert capabilities(settings("tansu")) is TANSU and capabilities(settings("kafka")) is APACHE_KAFKA


def test_on_apache_kafka_a_refused_reset_is_refused(calls):
    with pytest.raises(GroupActiveError):
        reset_exited_group(settings("kafka"), "vitrina-replay-x", plans())
    assert calls == [("admin", "vitrina-replay-x", [("catalogue", 0), ("catalogue", 1)])]


def test_on_tansu_a_refused_reset_is_committed_as_a_member_with_every_topic(calls):
    reset_exited_group(settings("tansu"), "vitrina-replay-x", plans())
    assert calls == [("admin", "vitrina-replay-x", [("catalogue", 0), ("catalogue", 1)]),
                     ("member", "vitrina-replay-x", [("catalogue", 0, 4), ("playback", 0, 0), ("playback", 1, 2),
                                                     ("catalogue", 1, 1)])]


def test_an_accepted_admin_reset_needs_no_member(monkeypatch):
    seen = []
    monkeypatch.setattr(group_offsets, "execute_reset", lambda _s, group, p: seen.append(sorted({x.topic for x in p})))
    monkeypatch.setattr(group_offsets, "commit_as_member", lambda *a, **k: pytest.fail("joined the group"))
    reset_exited_group(settings("tansu"), "g", plans())
    assert seen == [["catalogue"], ["playback"]]  # one admin reset per topic, as before


def test_unassigned_partitions_are_listed_sorted():
    wanted = {("b", 1): 0, ("a", 0): 5, ("a", 1): 2}
    assert unassigned(wanted, [("a", 1)]) == [("a", 0), ("b", 1)]
    assert unassigned(wanted, [("a", 0), ("a", 1), ("b", 1), ("c", 0)]) == []


class Cluster:
    def __init__(self, layout: dict[str, int]):
        self.layout = layout

    def partitions_for_topic(self, topic: str):
        return set(range(self.layout[topic])) if topic in self.layout else None


def test_the_committing_member_offers_every_group_protocol_and_takes_every_partition():
    assignors = commit_assignors()
    assert [a.name for a in assignors] == list(GROUP_PROTOCOLS) == ["faust", "range", "roundrobin"]
    metadata = ConsumerProtocolMemberMetadata(0, ["playback", "catalogue"], b"")
    for assignor in assignors:
        assignment = assignor.assign(Cluster({"playback": 6, "catalogue": 3}), {"me": metadata})
        taken = {(topic, p) for topic, parts in assignment["me"].assignment for p in parts}
        assert taken == {("playback", p) for p in range(6)} | {("catalogue", p) for p in range(3)}
