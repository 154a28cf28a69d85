"""What the configured broker does right, so broker workarounds are switched on only where needed.

Apache Kafka (the default and production broker) answers every request the way the Kafka protocol
says. Tansu (``VITRINA_BROKER=tansu``, the light embedded option for machines without Java) does
not, in ways that matter here (see ``streams/kafka/tansu_compat.py``):

* ListOffsets LATEST answers a stale high watermark (the base offset of the partition's last
  batch + 1): ends must be verified by reading, and Faust's recovery consistency check refused
  to restart workers whose table offsets were right;
* ListOffsets by timestamp answers 0: timestamp look-ups are verified and binary-searched;
* a fetch is answered only when its maximum wait is over even if records arrived: consumers
  keep that wait short (every agent hop costs up to the wait otherwise);
* compacted topics are never compacted (a changelog grows for ever);
* a group whose members have exited still lists one (DescribeGroups shows none, but an admin
  OffsetCommit, generation -1 and no member id, is answered UNKNOWN_MEMBER_ID for as long as it waits):
  a replay between its phases sets its group's start offsets as a member of the group
  (``streams/ops/group_offsets.py: reset_exited_group``); Tansu evicts the stale member when it joins.

Everything that depends on these reads ``capabilities(settings)`` (or the flags a probe
consumer carries) instead of asking "is this Tansu?" itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from infra.settings import Settings


@dataclass(frozen=True)
class BrokerCapabilities:
    name: str
    exact_high_watermarks: bool  # ListOffsets LATEST is the offset after the last record
    timestamp_lookups: bool  # ListOffsets by timestamp uses a time index
    early_fetch_answers: bool  # a fetch returns as soon as fetch.min.bytes arrived
    compacts: bool  # cleanup.policy=compact topics are compacted
    admin_commits_after_exit: bool  # an admin OffsetCommit is accepted once the group's members exited

    @property
    def verify_ends_by_reading(self) -> bool:
        return not self.exact_high_watermarks


APACHE_KAFKA = BrokerCapabilities("kafka", exact_high_watermarks=True, timestamp_lookups=True,
                                  early_fetch_answers=True, compacts=True, admin_commits_after_exit=True)
TANSU = BrokerCapabilities("tansu", exact_high_watermarks=False, timestamp_lookups=False,
                           early_fetch_answers=False, compacts=False, admin_commits_after_exit=False)


def capabilities(settings: Settings) -> BrokerCapabilities:
    """Tansu only when asked for (``VITRINA_BROKER=tansu``); any other broker is taken as Apache Kafka
    (an external cluster, Confluent, Redpanda and MSK all answer these requests correctly)."""
    return TANSU if settings.broker == "tansu" else APACHE_KAFKA
