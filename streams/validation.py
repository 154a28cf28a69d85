"""Validate and coerce JSON values against a parsed Avro schema, naming the failing field.

JSON has no timestamps or bytes, so timestamps may be given as epoch milliseconds
or ISO-8601 strings; everything else must already have the Avro type.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any


@dataclass(frozen=True)
class ValidationProblem:
    line_no: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f" field '{self.field}'" if self.field else ""
        return f"line {self.line_no}{where}: {self.reason}"


class _Invalid(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


_INT_BOUNDS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _timestamp(value: Any, path: str) -> datetime | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _Invalid(path, f"'{value}' is not an ISO-8601 timestamp or epoch milliseconds") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise _Invalid(path, f"expected a timestamp (epoch ms or ISO-8601 string), got {type(value).__name__}")


def _coerce(value: Any, schema: Any, path: str) -> Any:
    if isinstance(schema, list):
        reasons = []
        for branch in schema:
            try:
                return _coerce(value, branch, path)
            except _Invalid as exc:
                reasons.append(exc)
        deepest = max(reasons, key=lambda e: len(e.path))
        if deepest.path != path:
            raise deepest
        kinds = [b if isinstance(b, str) else b.get("type") for b in schema]
        raise _Invalid(path, f"value {value!r} matches none of {kinds}")
    if isinstance(schema, str):
        schema = {"type": schema}
    kind = schema["type"]
    if isinstance(kind, (dict, list)):
        return _coerce(value, kind, path)
    if schema.get("logicalType") in ("timestamp-millis", "timestamp-micros"):
        return _timestamp(value, path)
    if kind == "null":
        if value is not None:
            raise _Invalid(path, "expected null")
        return None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _Invalid(path, f"expected true/false, got {value!r}")
        return value
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(path, f"expected an integer, got {value!r}")
        low, high = _INT_BOUNDS[kind]
        if not low <= value <= high:
            raise _Invalid(path, f"{value} is out of range for {kind}")
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(path, f"expected a number, got {value!r}")
        return float(value)
    if kind == "string":
        if not isinstance(value, str):
            raise _Invalid(path, f"expected a string, got {value!r}")
        return value
    if kind == "bytes":
        if not isinstance(value, str):
            raise _Invalid(path, "expected bytes as a latin-1 string")
        return value.encode("latin-1")
    if kind == "enum":
        if value not in schema["symbols"]:
            raise _Invalid(path, f"'{value}' is not one of {schema['symbols']}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise _Invalid(path, f"expected a list, got {type(value).__name__}")
        return [_coerce(v, schema["items"], f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _Invalid(path, f"expected an object, got {type(value).__name__}")
        return {k: _coerce(v, schema["values"], f"{path}.{k}") for k, v in value.items()}
    if kind in ("record", "error"):
        return _record(value, schema, path)
    raise _Invalid(path, f"unsupported schema type {kind}")


def _record(value: Any, schema: dict, path: str) -> dict:
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected an object, got {type(value).__name__}")
    names = {f["name"] for f in schema["fields"]}
    unknown = sorted(set(value) - names)
    if unknown:
        raise _Invalid(f"{path}.{unknown[0]}".lstrip("."), "unknown field (not in the schema)")
    out = {}
    for field in schema["fields"]:
        field_path = f"{path}.{field['name']}".lstrip(".")
        if field["name"] not in value:
            if "default" in field:
                out[field["name"]] = field["default"]
                continue
            raise _Invalid(field_path, "required field is missing")
        out[field["name"]] = _coerce(value[field["name"]], field["type"], field_path)
    return out


def coerce_record(value: Any, parsed_schema: dict) -> dict:
    """Raise ValueError naming the field when ``value`` does not fit the record schema."""
    try:
        return _record(value, parsed_schema, "")
    except _Invalid as exc:
        raise ValueError(f"field '{exc.path}': {exc.reason}") from None


def coerce_and_validate(line: str, line_no: int, parsed_schema: dict) -> tuple[dict | None, ValidationProblem | None]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, ValidationProblem(line_no, "", f"not valid JSON: {exc.msg} at column {exc.colno}")
    try:
        return _record(value, parsed_schema, ""), None
    except _Invalid as exc:
        return None, ValidationProblem(line_no, exc.path, exc.reason)
