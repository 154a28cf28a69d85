"""Validate and coerce JSON values against a parsed Avro schema, naming the failing field.

JSON has no timestamps or bytes, so timestamps may be given as epoch milliseconds
or ISO-8601 strings and bytes as latin-1 strings (one character per byte); everything
else must already have the Avro type.

Beyond the Avro types, a value must be one every consumer can decode and use:

* a timestamp lies within what fastavro decodes ``timestamp-millis`` to (a Python ``datetime``:
  0001-01-01 .. 9999-12-31 UTC); an event time of 1e17 ms encodes, but every consumer fails on it;
* a number is finite (no NaN or Infinity; a ``float`` fits in 32 bits);
* an id (a field named ``*_id``, an item of ``*_ids``) is not empty: a guest has ``user_id`` null, not "";
* a string is valid Unicode (no lone surrogates such as ``"\\ud800"``);
* a value stays within the range its schema's doc gives (``FIELD_RANGES``): positions, durations,
  sizes, counts and bitrates are never negative, shares and probabilities are 0..1, and so on.
"""
from __future__ import annotations

import json
import math
import reprlib
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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
    """``mismatch``: the value's JSON type does not fit the schema type at all (in a union another
    branch may explain it better); otherwise the type fits but the value is out of bounds."""

    def __init__(self, path: str, reason: str, mismatch: bool = True) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.mismatch = mismatch


_INT_BOUNDS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# fastavro decodes timestamp-millis to ``epoch + timedelta(ms)``: anything outside datetime's range fails to decode
EARLIEST_MS = (datetime(1, 1, 1, tzinfo=timezone.utc) - EPOCH) // timedelta(milliseconds=1)  # -62135596800000
LATEST_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc) - EPOCH) // timedelta(milliseconds=1)

_NON_NEGATIVE = (0, None)
_SHARE = (0, 1)
# (record full name, field) -> (low, high), inclusive, None = open: the bounds the schemas' docs state
FIELD_RANGES: dict[tuple[str, str], tuple[float | None, float | None]] = {
    **{("vitrina.PlaybackEvent", f): _NON_NEGATIVE
       for f in ("position_ms", "duration_ms", "network_kbps", "stall_ms", "bitrate_kbps")},
    ("vitrina.PlaybackEvent", "buffered_ratio"): _SHARE,
    ("vitrina.RankingImpression", "position"): _NON_NEGATIVE,  # 0-based position on the surface
    **{("vitrina.ImpressionContext", f): _NON_NEGATIVE for f in ("network_kbps", "item_duration_ms")},
    ("vitrina.ImpressionContext", "device_score"): _SHARE,
    ("vitrina.ImpressionContext", "cached_ratio"): _SHARE,
    ("vitrina.ImpressionContext", "hour_of_day"): (0, 23),
    **{("vitrina.TaskScores", f): _SHARE for f in ("evr", "lvr", "svr", "fpr")},  # probabilities
    ("vitrina.TaskLabels", "watch_ms"): _NON_NEGATIVE,
    **{("vitrina.CatalogueTitle", f): _NON_NEGATIVE for f in ("age_rating", "season", "episode", "duration_ms")},
    ("vitrina.CatalogueTitle", "rating"): (0, 10),
    **{("vitrina.UploadRequested", f): _NON_NEGATIVE for f in ("size_bytes", "age_rating")},
    **{("vitrina.UploadProcessed", f): _NON_NEGATIVE
       for f in ("duration_s", "source_width", "source_height", "processing_s")},
    **{("vitrina.Rendition", f): _NON_NEGATIVE for f in ("width", "height", "video_kbps", "bytes", "duration_s")},
    **{("vitrina.Thumbnail", f): _NON_NEGATIVE for f in ("width", "height")},
    **{("vitrina.CounterUpdated", f): _NON_NEGATIVE for f in ("plays", "events")},
    **{("vitrina.DeadLetter", f): _NON_NEGATIVE for f in ("source_partition", "source_offset", "attempts")},
    **{("vitrina.ShowcaseUpdated", f): _NON_NEGATIVE for f in ("version", "shelves", "items")},
    **{("vitrina.SimilarListUpdated", f): _NON_NEGATIVE for f in ("version", "support")},
    ("vitrina.ModelPublished", "samples_seen"): _NON_NEGATIVE,
    ("vitrina.ShelfDefinition", "template_slot"): (1, None),  # 1-based
    **{("vitrina.ShelfRule", f): _NON_NEGATIVE for f in ("limit", "max_age_rating")},
}

_short = reprlib.Repr()
_short.maxstring = 40
_short.maxother = 40
_short.maxlong = 40
_short.maxlevel = 3


class HugeInteger:
    """A JSON integer too long for Python to parse (over ``sys.get_int_max_str_digits()`` digits): kept
    as its digit count so the field it is in can be named (no Avro int or long has more than 19 digits)."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"


def _parse_int(text: str) -> int | HugeInteger:
    try:
        return int(text)
    except ValueError:  # Python refuses integers of more than 4300 digits (CVE-2020-10735)
        return HugeInteger(len(text.lstrip("-")))


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null", HugeInteger: "an integer"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    try:
        return _short.repr(value)
    except (RecursionError, ValueError):
        return f"a {type(value).__name__}"


def _is_int(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, HugeInteger)


def _timestamp(value: Any, path: str) -> datetime | int:
    if _is_int(value):
        if isinstance(value, HugeInteger) or not EARLIEST_MS <= value <= LATEST_MS:
            raise _Invalid(path, f"{_show(value)} ms is outside the timestamps consumers can decode "
                                 f"({EARLIEST_MS}..{LATEST_MS} ms: years 1..9999)", mismatch=False)
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _Invalid(path, f"{_show(value)} is not an ISO-8601 timestamp or epoch milliseconds") from None
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        if not EARLIEST_MS <= (parsed - EPOCH) // timedelta(milliseconds=1) <= LATEST_MS:
            raise _Invalid(path, f"{_show(value)} is outside the timestamps consumers can decode "
                                 "(0001-01-01..9999-12-31 UTC)", mismatch=False)
        return parsed
    raise _Invalid(path, f"expected a timestamp (epoch ms or ISO-8601 string), got {_json_type(value)}")


def _number(value: Any, kind: str, path: str) -> float:
    if isinstance(value, HugeInteger):
        raise _Invalid(path, f"{_show(value)} is out of range for {kind}", mismatch=False)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond 1.8e308
        raise _Invalid(path, f"{_show(value)} is out of range for {kind}", mismatch=False) from None
    if not math.isfinite(number):
        raise _Invalid(path, f"{_show(value)} is not a finite number (NaN and Infinity cannot be processed)",
                       mismatch=False)
    if kind == "float":
        try:
            struct.pack("<f", number)
        except OverflowError:
            raise _Invalid(path, f"{_show(value)} is out of range for float (32-bit)", mismatch=False) from None
    return number


def _string(value: str, path: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid(path, f"not valid Unicode: lone surrogate \\u{ord(value[exc.start]):04x} at position {exc.start}",
                       mismatch=False) from None
    return value


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
        for reason in reasons:  # the type fits a branch, the value does not: say why
            if not reason.mismatch:
                raise reason
        kinds = [b if isinstance(b, str) else b.get("type") for b in schema]
        raise _Invalid(path, f"value {_show(value)} matches none of {kinds}")
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
            raise _Invalid(path, f"expected true/false, got {_show(value)}")
        return value
    if kind in ("int", "long"):
        if not _is_int(value):
            raise _Invalid(path, f"expected an integer, got {_show(value)}")
        low, high = _INT_BOUNDS[kind]
        if isinstance(value, HugeInteger) or not low <= value <= high:
            raise _Invalid(path, f"{_show(value)} is out of range for {kind}", mismatch=False)
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not (_is_int(value) or isinstance(value, float)):
            raise _Invalid(path, f"expected a number, got {_show(value)}")
        return _number(value, kind, path)
    if kind == "string":
        if not isinstance(value, str):
            raise _Invalid(path, f"expected a string, got {_show(value)}")
        return _string(value, path)
    if kind == "bytes":
        if not isinstance(value, str):
            raise _Invalid(path, "expected bytes as a latin-1 string")
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise _Invalid(path, f"bytes are written as a latin-1 string, one character U+0000..U+00FF per byte; "
                                 f"character U+{ord(value[exc.start]):04X} at position {exc.start} is not one",
                           mismatch=False) from None
    if kind == "enum":
        if value not in schema["symbols"]:
            raise _Invalid(path, f"{_show(value)} is not one of {schema['symbols']}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise _Invalid(path, f"expected an array, got {_json_type(value)}")
        return [_coerce(v, schema["items"], f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _Invalid(path, f"expected an object, got {_json_type(value)}")
        return {_string(k, f"{path}.{k!r}"): _coerce(v, schema["values"], f"{path}.{k}") for k, v in value.items()}
    if kind in ("record", "error"):
        return _record(value, schema, path)
    raise _Invalid(path, f"unsupported schema type {kind}")


def _is_id(name: str) -> bool:
    return name.endswith("_id") or name == "id"


def _check_value(record_name: str, name: str, value: Any, path: str) -> None:
    """The constraints beyond the Avro type: non-empty ids, the documented ranges."""
    if _is_id(name) and isinstance(value, str) and not value.strip():
        raise _Invalid(path, "an id must not be empty" + (" (null means none)" if name == "user_id" else ""),
                       mismatch=False)
    if name.endswith("_ids") and isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str) and not item.strip():
                raise _Invalid(f"{path}[{i}]", "an id must not be empty", mismatch=False)
    bounds = FIELD_RANGES.get((record_name, name))
    if bounds is not None and value is not None:
        low, high = bounds
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                wanted = "must not be negative" if low == 0 else f"must be at least {low}"
            else:
                wanted = f"must be within {low}..{high}"
            raise _Invalid(path, f"{_show(value)} {wanted}", mismatch=False)


def _record(value: Any, schema: dict, path: str) -> dict:
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected an object, got {_json_type(value)}")
    names = {f["name"] for f in schema["fields"]}
    unknown = sorted(set(value) - names)
    if unknown:
        raise _Invalid(f"{path}.{_show(unknown[0])[1:-1]}".lstrip("."), "unknown field (not in the schema)")
    out = {}
    record_name = schema.get("name", "")
    for field in schema["fields"]:
        field_path = f"{path}.{field['name']}".lstrip(".")
        if field["name"] not in value:
            if "default" in field:
                out[field["name"]] = field["default"]
                continue
            raise _Invalid(field_path, "required field is missing")
        coerced = _coerce(value[field["name"]], field["type"], field_path)
        _check_value(record_name, field["name"], coerced, field_path)
        out[field["name"]] = coerced
    return out


def coerce_record(value: Any, parsed_schema: dict) -> dict:
    """Raise ValueError naming the field when ``value`` does not fit the record schema."""
    try:
        return _record(value, parsed_schema, "")
    except _Invalid as exc:
        raise ValueError(f"field '{exc.path}': {exc.reason}") from None


def parse_json(line: str) -> Any:
    """``json.loads`` that keeps over-long integers (``HugeInteger``) so the field can be named.

    Raises ``ValueError`` (``json.JSONDecodeError`` for syntax) with a one-line reason, also for nesting
    deeper than the parser's recursion limit."""
    try:
        return json.loads(line, parse_int=_parse_int)
    except RecursionError:
        raise ValueError("nested deeper than the JSON parser allows (about 1000 levels)") from None


def coerce_and_validate(line: str, line_no: int, parsed_schema: dict) -> tuple[dict | None, ValidationProblem | None]:
    try:
        value = parse_json(line)
    except json.JSONDecodeError as exc:
        return None, ValidationProblem(line_no, "", f"not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}")
    except ValueError as exc:
        return None, ValidationProblem(line_no, "", f"not valid JSON: {exc}")
    try:
        return _record(value, parsed_schema, ""), None
    except _Invalid as exc:
        return None, ValidationProblem(line_no, exc.path, exc.reason)
