"""Changelog-backed Faust tables with JSON keys and values (state is plain data)."""
from __future__ import annotations

import faust

JSON_SCHEMA = faust.Schema(key_type=str, value_type=dict, key_serializer="json", value_serializer="json")


def json_table(app: faust.App, name: str, partitions: int, **kwargs) -> faust.Table:
    return app.Table(name, default=None, partitions=partitions, schema=JSON_SCHEMA, **kwargs)
