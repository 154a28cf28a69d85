"""Faust's source/changelog partition check at a table's first write (streams/runtime/app.py): a changelog the
consumer's metadata does not list yet (0 partitions in aiokafka's snapshot: created just before the
worker subscribed) is "not known yet", not a mismatch. Found by tests/integration/test_worker_group.py: a fresh
worker with uploads waiting answered them ENCODE_FAILED "internal error ... has 0 partitions"."""
from __future__ import annotations

from types import SimpleNamespace

import pytest


def table(partitions: dict[str, int]):
    from faust.tables.base import Collection

    import streams.runtime.app  # noqa: F401 - applies the patch

    consumer = SimpleNamespace(topic_partitions=lambda topic: partitions.get(topic))
    fake = SimpleNamespace(app=SimpleNamespace(consumer=consumer), changelog_topic_name="app-assets-changelog",
                           name="assets", _verified_source_topics_for_partitions=set())
    return fake, lambda: Collection._verify_source_topic_partitions(fake, "uploads.by-content")


def test_a_changelog_not_in_the_metadata_yet_is_checked_again_later():
    from faust.exceptions import PartitionsMismatch

    counts = {"uploads.by-content": 6, "app-assets-changelog": 0}
    fake, verify = table(counts)
    verify()  # no PartitionsMismatch for "0 partitions"
    assert not fake._verified_source_topics_for_partitions
    counts["app-assets-changelog"] = 3  # now known, and really different
    with pytest.raises(PartitionsMismatch):
        verify()


def test_equal_counts_are_verified_once():
    fake, verify = table({"uploads.by-content": 6, "app-assets-changelog": 6})
    verify()
    assert fake._verified_source_topics_for_partitions == {"uploads.by-content"}
