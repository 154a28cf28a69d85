"""Changelog-backed Faust tables with JSON keys and values (state is plain data).

Faust creates each table's changelog topic ``<app id>-<table>-changelog`` as a compacted topic; the
settings of the compaction profile (streams/kafka/topics.py, ``VITRINA_COMPACTION``) go with it, so the
changelog is compacted as soon as the profile says, not after the broker's week-long default segment.
"""
from __future__ import annotations

import faust

from infra.settings import load
from streams.kafka.topics import compaction_configs

# value_type=None (plain JSON, no model): with value_type=dict the changelog topic's decoder
# calls dict.from_data, so recovery of a table from its changelog fails and stalls the worker.
JSON_SCHEMA = faust.Schema(key_type=str, value_type=None, key_serializer="json", value_serializer="json")


def json_table(app: faust.App, name: str, partitions: int, **kwargs) -> faust.Table:
    kwargs.setdefault("extra_topic_configs", compaction_configs(load()))
    return app.Table(name, default=None, partitions=partitions, schema=JSON_SCHEMA, **kwargs)
