"""Avro framing for every topic value.

Two standard framings, chosen by configuration:

* **Avro single-object encoding** (default; Avro spec "Single object encoding"):
  ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
  parsing canonical form + the Avro binary body. The fingerprint identifies the
  writer schema, so a reader with a newer schema resolves old records.
* **Confluent wire format** (when ``VITRINA_SCHEMA_REGISTRY_URL`` is set):
  ``00`` + 4-byte big-endian schema id from the registry + the body. Subjects use
  the RecordNameStrategy (subject = full record name, e.g. ``vitrina.PlaybackEvent``).

Decoding never raises anything but :class:`DecodeError`, whose ``code`` is
machine-readable; callers route the record to a dead-letter topic with it.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import fastavro
import fastavro.schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import EVENTS, HISTORY_DIR, SCHEMA_DIR

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class DecodeError(Exception):
    """A value that cannot be decoded; ``code`` is one of the codes below."""

    EMPTY = "EMPTY_VALUE"
    BAD_MAGIC = "BAD_MAGIC"
    TRUNCATED_HEADER = "TRUNCATED_HEADER"
    UNKNOWN_FINGERPRINT = "UNKNOWN_FINGERPRINT"
    UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID"
    WRONG_RECORD_TYPE = "WRONG_RECORD_TYPE"
    BODY_DECODE_FAILED = "BODY_DECODE_FAILED"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class EncodeError(ValueError):
    """A record that does not fit its schema (names the field when fastavro does)."""


@dataclass(frozen=True)
class Schema:
    name: str
    parsed: Any
    canonical: str
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO
    expanded: Any = None  # every named type inlined (for validation walks)

    @property
    def single_object_header(self) -> bytes:
        return SINGLE_OBJECT_MAGIC + self.fingerprint


def _make_schema(parsed: Any, expanded: Any) -> Schema:
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return Schema(name=parsed["name"], parsed=parsed, canonical=canonical, fingerprint=fp, expanded=expanded)


def _defined_names(schema_json: Any, namespace: str = "") -> set[str]:
    """Full names of the named types a schema JSON defines (not merely references)."""
    found: set[str] = set()
    if isinstance(schema_json, list):
        for branch in schema_json:
            found |= _defined_names(branch, namespace)
    elif isinstance(schema_json, dict):
        ns = schema_json.get("namespace", namespace)
        if schema_json.get("type") in ("record", "enum", "fixed") and "name" in schema_json:
            name = schema_json["name"]
            found.add(name if "." in name else f"{ns}.{name}")
        for field in schema_json.get("fields", []):
            found |= _defined_names(field["type"], ns)
        for key in ("items", "values"):
            if key in schema_json:
                found |= _defined_names(schema_json[key], ns)
    return found


def _parse_all(schema_dir: Path) -> dict[str, Any]:
    """Parse every ``*.avsc`` in a directory, resolving references between files."""
    pending = {p.stem: json.loads(p.read_text()) for p in sorted(schema_dir.glob("*.avsc"))}
    named: dict[str, Any] = {}
    parsed: dict[str, Any] = {}
    while pending:
        progressed = False
        for name, schema_json in list(pending.items()):
            trial = dict(named)
            try:
                parsed[name] = fastavro.parse_schema(schema_json, named_schemas=trial)
            except fastavro.schema.UnknownType:
                continue
            named = trial
            del pending[name]
            progressed = True
        if not progressed:
            raise ValueError(f"unresolvable schema references in {sorted(pending)}")
    return named


class SchemaStore:
    """Current schemas by name plus every known writer schema by fingerprint."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR, history_dir: Path = HISTORY_DIR) -> None:
        self._named = _parse_all(schema_dir)
        self._current: dict[str, Schema] = {}
        self._by_fingerprint: dict[bytes, Schema] = {}
        for name in EVENTS:
            schema = self._make(json.loads((schema_dir / f"{name}.avsc").read_text()), dict(self._named))
            self._current[name] = schema
            self._by_fingerprint[schema.fingerprint] = schema
        if history_dir.is_dir():
            for path in sorted(history_dir.glob("*.avsc")):
                self.register_writer(json.loads(path.read_text()))

    @staticmethod
    def _make(schema_json: dict, named: dict[str, Any]) -> Schema:
        expanded = fastavro.parse_schema(schema_json, named_schemas=dict(named), expand=True)
        parsed = fastavro.parse_schema(expanded)
        return _make_schema(parsed, expanded)

    def current(self, name: str) -> Schema:
        try:
            return self._current[name]
        except KeyError:
            raise KeyError(f"unknown event schema {name!r}; known: {', '.join(sorted(self._current))}") from None

    def register_writer(self, schema_json: dict | str) -> Schema:
        """Make an extra writer schema (an older or newer version) decodable."""
        if isinstance(schema_json, str):
            schema_json = json.loads(schema_json)
        own = _defined_names(schema_json)
        named = {k: v for k, v in self._named.items() if k not in own}
        schema = self._make(schema_json, named)
        self._by_fingerprint.setdefault(schema.fingerprint, schema)
        return schema

    def by_fingerprint(self, fp: bytes) -> Schema | None:
        return self._by_fingerprint.get(fp)

    @property
    def names(self) -> list[str]:
        return sorted(self._current)


def _write_body(out: io.BytesIO, schema: Schema, record: dict) -> None:
    try:
        fastavro.schemaless_writer(out, schema.parsed, record)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise EncodeError(f"{schema.name}: {exc}") from exc


def _read_body(body: memoryview | bytes, writer: Schema, reader: Schema) -> dict:
    buf = io.BytesIO(body)
    try:
        if writer.fingerprint == reader.fingerprint:
            record = fastavro.schemaless_reader(buf, writer.parsed, None)
        else:
            record = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
    except Exception as exc:  # fastavro raises many types on garbage (EOFError, ValueError, UnicodeDecodeError, ...)
        raise DecodeError(DecodeError.BODY_DECODE_FAILED, f"cannot decode {writer.name} body: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(body):
        raise DecodeError(DecodeError.BODY_DECODE_FAILED, f"{len(body) - buf.tell()} trailing bytes after the {writer.name} record")
    return record


class Codec(Protocol):
    store: SchemaStore

    def encode(self, name: str, record: dict) -> bytes: ...

    def decode(self, data: bytes | None, name: str) -> dict: ...


class SingleObjectCodec:
    """Avro single-object encoding (the default framing)."""

    framing = "single-object"

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.store = store or SchemaStore()

    def encode(self, name: str, record: dict) -> bytes:
        return self.encode_with(self.store.current(name), record)

    def encode_with(self, schema: Schema, record: dict) -> bytes:
        out = io.BytesIO()
        out.write(schema.single_object_header)
        _write_body(out, schema, record)
        return out.getvalue()

    def decode(self, data: bytes | None, name: str) -> dict:
        reader = self.store.current(name)
        if not data:
            raise DecodeError(DecodeError.EMPTY, "empty value (tombstone or missing payload)")
        if data[:2] != SINGLE_OBJECT_MAGIC:
            raise DecodeError(DecodeError.BAD_MAGIC, f"expected Avro single-object marker C3 01, got {bytes(data[:2]).hex(' ')}")
        if len(data) < 10:
            raise DecodeError(DecodeError.TRUNCATED_HEADER, f"{len(data)} bytes is shorter than the 10-byte header")
        writer = self.store.by_fingerprint(bytes(data[2:10]))
        if writer is None:
            raise DecodeError(DecodeError.UNKNOWN_FINGERPRINT, f"no known schema has fingerprint {bytes(data[2:10]).hex()}")
        if writer.name != reader.name:
            raise DecodeError(DecodeError.WRONG_RECORD_TYPE, f"record is a {writer.name}, expected {reader.name}")
        return _read_body(memoryview(data)[10:], writer, reader)


class ConfluentCodec:
    """Confluent Schema Registry wire format (magic 0 + 4-byte schema id)."""

    framing = "confluent"

    def __init__(self, registry: "SchemaRegistryClient", store: SchemaStore | None = None) -> None:
        self.store = store or SchemaStore()
        self.registry = registry
        self._ids: dict[str, bytes] = {}
        self._by_id: dict[int, Schema] = {}

    def _header(self, schema: Schema) -> bytes:
        header = self._ids.get(schema.canonical)
        if header is None:
            schema_id = self.registry.register(schema.name, schema.canonical)
            header = CONFLUENT_MAGIC + struct.pack(">I", schema_id)
            self._ids[schema.canonical] = header
            self._by_id[schema_id] = schema
        return header

    def encode(self, name: str, record: dict) -> bytes:
        return self.encode_with(self.store.current(name), record)

    def encode_with(self, schema: Schema, record: dict) -> bytes:
        out = io.BytesIO()
        out.write(self._header(schema))
        _write_body(out, schema, record)
        return out.getvalue()

    def _writer(self, schema_id: int) -> Schema:
        schema = self._by_id.get(schema_id)
        if schema is None:
            text = self.registry.schema_by_id(schema_id)
            if text is None:
                raise DecodeError(DecodeError.UNKNOWN_SCHEMA_ID, f"schema registry has no schema id {schema_id}")
            schema = self.store.register_writer(text)
            self._by_id[schema_id] = schema
        return schema

    def decode(self, data: bytes | None, name: str) -> dict:
        reader = self.store.current(name)
        if not data:
            raise DecodeError(DecodeError.EMPTY, "empty value (tombstone or missing payload)")
        if data[:1] != CONFLUENT_MAGIC:
            raise DecodeError(DecodeError.BAD_MAGIC, f"expected Confluent magic byte 00, got {bytes(data[:1]).hex()}")
        if len(data) < 5:
            raise DecodeError(DecodeError.TRUNCATED_HEADER, f"{len(data)} bytes is shorter than the 5-byte header")
        writer = self._writer(struct.unpack(">I", data[1:5])[0])
        if writer.name != reader.name:
            raise DecodeError(DecodeError.WRONG_RECORD_TYPE, f"record is a {writer.name}, expected {reader.name}")
        return _read_body(memoryview(data)[5:], writer, reader)


from streams.schema_registry import SchemaRegistryClient  # noqa: E402  (import cycle-free: it needs nothing from here)

_default: Codec | None = None


def make_codec(schema_registry_url: str = "") -> Codec:
    if schema_registry_url:
        return ConfluentCodec(SchemaRegistryClient(schema_registry_url))
    return SingleObjectCodec()


def default_codec() -> Codec:
    """The process-wide codec for the configured framing (schemas parsed once)."""
    global _default
    if _default is None:
        from infra.settings import load

        _default = make_codec(load().schema_registry_url)
    return _default
