"""Field readers for the dict -> dataclass parsers; each raises ShowcaseInputError on bad data."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from .errors import ShowcaseInputError

_MISSING = object()


def _get(d: Mapping[str, Any], key: str, rid: str | None, required: bool) -> Any:
    if not isinstance(d, Mapping):
        raise ShowcaseInputError("not_a_mapping", f"expected a mapping, got {type(d).__name__}", record_id=rid)
    value = d.get(key, _MISSING)
    if value is _MISSING or (required and value is None):
        if required:
            raise ShowcaseInputError("missing_field", f"field {key!r} is required", field=key, record_id=rid)
        return None
    return value


def _bad(key: str, rid: str | None, expected: str, value: Any) -> ShowcaseInputError:
    return ShowcaseInputError(
        "invalid_field", f"field {key!r} must be {expected}, got {value!r}"[:300], field=key, record_id=rid
    )


def req_str(d: Mapping[str, Any], key: str, rid: str | None = None) -> str:
    value = _get(d, key, rid, True)
    if not isinstance(value, str) or not value.strip():
        raise _bad(key, rid, "a non-empty string", value)
    return value


def opt_str(d: Mapping[str, Any], key: str, rid: str | None = None) -> str | None:
    value = _get(d, key, rid, False)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(key, rid, "a string or null", value)
    return value


def opt_bool(d: Mapping[str, Any], key: str, rid: str | None = None, default: bool = False) -> bool:
    value = _get(d, key, rid, False)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(key, rid, "a boolean", value)
    return value


def opt_int(d: Mapping[str, Any], key: str, rid: str | None = None, *, minimum: int | None = None) -> int | None:
    value = _get(d, key, rid, False)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, rid, "an integer or null", value)
    if minimum is not None and value < minimum:
        raise _bad(key, rid, f"an integer >= {minimum}", value)
    return value


def opt_float(d: Mapping[str, Any], key: str, rid: str | None = None) -> float | None:
    value = _get(d, key, rid, False)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _bad(key, rid, "a number or null", value)
    return float(value)


def str_list(d: Mapping[str, Any], key: str, rid: str | None = None) -> tuple[str, ...]:
    value = _get(d, key, rid, False)
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _bad(key, rid, "a list of strings", value)
    for item in value:
        if not isinstance(item, str):
            raise _bad(key, rid, "a list of strings", value)
    return tuple(value)


def as_datetime(value: Any, key: str, rid: str | None = None) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _bad(key, rid, "an ISO-8601 timestamp", value) from None
    if not isinstance(value, datetime):
        raise _bad(key, rid, "a timezone-aware datetime", value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ShowcaseInputError("naive_datetime", f"field {key!r} must be timezone-aware", field=key, record_id=rid)
    return value


def opt_datetime(d: Mapping[str, Any], key: str, rid: str | None = None) -> datetime | None:
    value = _get(d, key, rid, False)
    return None if value is None else as_datetime(value, key, rid)
