"""Changelog-backed Faust tables with JSON keys and values (state is plain data)."""
from __future__ import annotations

import faust

# value_type=None (plain JSON, no model): with value_type=dict the changelog topic's decoder
# calls dict.from_data, so recovery of a table from its changelog fails and stalls the worker.
JSON_SCHEMA = faust.Schema(key_type=str, value_type=None, key_serializer="json", value_serializer="json")


def json_table(app: faust.App, name: str, partitions: int, **kwargs) -> faust.Table:
    return app.Table(name, default=None, partitions=partitions, schema=JSON_SCHEMA, **kwargs)
