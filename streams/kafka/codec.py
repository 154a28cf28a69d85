"""Avro framing for every topic value.

Two standard framings, chosen by configuration:

* **Avro single-object encoding** (default; Avro spec "Single object encoding"):
  ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
  parsing canonical form + the Avro binary body. The fingerprint identifies the
  writer schema, so a reader with a newer schema resolves old records.
* **Confluent wire format** (when ``VITRINA_SCHEMA_REGISTRY_URL`` is set):
  ``00`` + 4-byte big-endian schema id from the registry + the body, written and read by
  confluent-kafka's ``AvroSerializer``/``AvroDeserializer`` (fastavro underneath). Subjects
  follow the TopicNameStrategy (``<topic>-value``) unless ``VITRINA_SCHEMA_SUBJECT_STRATEGY=record``
  (the full record name); the registry holds the full schema text (streams/kafka/schema_registry.py).

Decoding never raises anything but :class:`DecodeError`, whose ``code`` is
machine-readable; callers route the record to a dead-letter topic with it.

A body written with the reader's own schema (every record on the hot path) is decoded by cavro, a
Cython Avro codec 2-5x faster per record than fastavro here (PlaybackEvent 3.5 us against 9.0 us);
a body of another writer version goes through fastavro's schema resolution, because cavro 1.0
resolves a changed enum by symbol index instead of by symbol name. Both give the same values
(tests/unit/plumbing/test_codec_parity.py). Encoding stays on fastavro.
"""
from __future__ import annotations

import io
import json
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cavro
import fastavro
import fastavro.schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import EVENTS, HISTORY_DIR, SCHEMA_DIR

if TYPE_CHECKING:
    from infra.settings import Settings

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
    # cavro reader of a whole single-object record written with this very schema, followed by END_MARK:
    # {header: fixed(10), record: this schema, end: fixed(16)}
    framed: Any = None
    flat: bool = False  # no field holds a record, array or map: a decoded value is a dict of scalars

    @property
    def single_object_header(self) -> bytes:
        return SINGLE_OBJECT_MAGIC + self.fingerprint


def _make_schema(parsed: Any, expanded: Any) -> Schema:
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    framed = None
    if expanded is not None:
        framed = cavro.Schema({"type": "record", "name": "vitrina.codec.Framed",
                               "fields": [_HEADER_FIELD, {"name": "record", "type": expanded}, _END_FIELD]},
                              options=_CAVRO_OPTIONS)
    return Schema(name=parsed["name"], parsed=parsed, canonical=canonical, fingerprint=fp, expanded=expanded,
                  framed=framed, flat=expanded is not None and all(_scalar(f["type"]) for f in expanded["fields"]))


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def _scalar(avro_type: Any) -> bool:
    """Whether values of this (expanded) type decode to scalars: not a record, array or map, nor a union
    holding one. A type named by reference counts as not scalar (it may be a record): a wrong "flat"
    would let readers share a nested value through the decode cache."""
    if isinstance(avro_type, list):
        return all(_scalar(branch) for branch in avro_type)
    if isinstance(avro_type, dict):
        return avro_type.get("type") not in ("record", "error", "array", "map") and (
            avro_type.get("type") in _PRIMITIVES or "name" in avro_type)
    return avro_type in _PRIMITIVES


# records as plain dicts, like fastavro; everything else cavro's defaults (strict UTF-8, aware UTC timestamps)
_CAVRO_OPTIONS = cavro.DEFAULT_OPTIONS.replace(record_decodes_to_dict=True)
# Trailing bytes after a body are refused. cavro does not tell how much it read, and reading one more
# byte to see it fail (EOFError) on every record cost a third of a decode in a micro-benchmark and more
# than the decode itself in a worker's profile (docs/performance.md). Instead the record is decoded
# with END_MARK appended, as {header, record, end} (one copy, no slicing): the body had no trailing
# bytes iff ``end`` comes back as END_MARK. A truncated body eats into the mark and fails (EOF); a
# padded one shifts it, unless the padding itself starts with the mark: 16 random bytes drawn per
# process, which a producer cannot know.
END_MARK = os.urandom(16)
_HEADER_FIELD = {"name": "header", "type": {"type": "fixed", "name": "vitrina.codec.Header", "size": 10}}
_END_FIELD = {"name": "end", "type": {"type": "fixed", "name": "vitrina.codec.EndMark", "size": len(END_MARK)}}


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


def _version_order(path: Path) -> tuple[str, int, str]:
    """``vitrina.X.v2.avsc`` before ``vitrina.X.v10.avsc``."""
    found = re.match(r"(.*)\.v(\d+)$", path.stem)
    return (found.group(1), int(found.group(2)), "") if found else (path.stem, 0, path.name)


class SchemaStore:
    """Current schemas by name plus every known writer schema by fingerprint."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR, history_dir: Path = HISTORY_DIR) -> None:
        self._named = _parse_all(schema_dir)
        self._current: dict[str, Schema] = {}
        self._by_fingerprint: dict[bytes, Schema] = {}
        self._history: dict[str, list[Schema]] = {}
        for name in EVENTS:
            schema = self._make(json.loads((schema_dir / f"{name}.avsc").read_text()), dict(self._named))
            self._current[name] = schema
            self._by_fingerprint[schema.fingerprint] = schema
        if history_dir.is_dir():
            for path in sorted(history_dir.glob("*.avsc"), key=_version_order):
                schema = self.register_writer(json.loads(path.read_text()))
                self._history.setdefault(schema.name, []).append(schema)

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

    def history(self, name: str) -> list[Schema]:
        """Earlier versions of ``name`` kept in ``schemas/history/``, oldest first."""
        return list(self._history.get(name, []))

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
    """A body written with another version of the reader's schema: fastavro's schema resolution."""
    buf = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
    except Exception as exc:  # fastavro raises many types on garbage (EOFError, ValueError, UnicodeDecodeError, ...)
        raise DecodeError(DecodeError.BODY_DECODE_FAILED, f"cannot decode {writer.name} body: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(body):
        raise DecodeError(DecodeError.BODY_DECODE_FAILED, f"{len(body) - buf.tell()} trailing bytes after the {writer.name} record")
    return record


def _read_own(data: memoryview | bytes, schema: Schema) -> dict:
    """A single-object record (header checked) written with ``schema`` itself, decoded by cavro (no
    resolution needed)."""
    try:
        framed = schema.framed.binary_decode(bytes(data) + END_MARK)
    except Exception as exc:  # cavro raises EOFError, ValueError, UnicodeDecodeError, ... on garbage
        raise DecodeError(DecodeError.BODY_DECODE_FAILED, f"cannot decode {schema.name} body: {type(exc).__name__}: {exc}") from exc
    if framed["end"] != END_MARK:
        raise DecodeError(DecodeError.BODY_DECODE_FAILED, f"trailing bytes after the {schema.name} record")
    return framed["record"]


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
        fingerprint = bytes(data[2:10])
        if fingerprint == reader.fingerprint and reader.framed is not None:
            return _read_own(data, reader)
        writer = self.store.by_fingerprint(fingerprint)
        if writer is None:
            raise DecodeError(DecodeError.UNKNOWN_FINGERPRINT, f"no known schema has fingerprint {fingerprint.hex()}")
        if writer.name != reader.name:
            raise DecodeError(DecodeError.WRONG_RECORD_TYPE, f"record is a {writer.name}, expected {reader.name}")
        return _read_body(memoryview(data)[10:], writer, reader)


class ConfluentCodec:
    """Confluent Schema Registry wire format (magic 0 + 4-byte schema id), on confluent-kafka's serdes.

    ``encode`` registers (or, with auto-registration off, looks up) the schema under the subject of
    every topic that carries the record (``topic`` narrows it to one), with the compatibility check of
    ``Registry.register``; ``decode`` keeps the ``DecodeError`` codes of the single-object codec, except
    that an unreachable registry raises ``SchemaRegistryError``: the record is fine, so it is not
    dead-lettered (the agent retries it).
    """

    framing = "confluent"

    def __init__(self, registry: Registry, store: SchemaStore | None = None, *, subject_strategy: str = "topic",
                 auto_register: bool = True, topic_prefix: str = "") -> None:
        subject_name(subject_strategy, "t", "r")  # fail now on an unknown strategy
        self.store = store or SchemaStore()
        self.registry = registry
        self.subject_strategy = subject_strategy
        self.auto_register = auto_register
        self.topic_prefix = topic_prefix
        self._serializers: dict[bytes, tuple[AvroSerializer, str]] = {}  # by writer fingerprint
        self._deserializers: dict[str, AvroDeserializer] = {}  # by reader record name
        self._ready: set[tuple[str, bytes]] = set()  # (subject, fingerprint) known to the registry
        self._writer_names: dict[int, str | None] = {}
        self._local = threading.local()

    # -- encode ---------------------------------------------------------------------------------

    def _subject(self, ctx: SerializationContext | None, record_name: str | None) -> str:
        return subject_name(self.subject_strategy, ctx.topic if ctx else "", record_name or "")

    def _serializer(self, schema: Schema) -> tuple[AvroSerializer, str]:
        found = self._serializers.get(schema.fingerprint)
        if found is None:
            text = schema_text(schema)
            serializer = AvroSerializer(self.registry.client, text, conf={
                "auto.register.schemas": False,  # registration goes through Registry.register (checked)
                "subject.name.strategy": self._subject})
            found = self._serializers[schema.fingerprint] = (serializer, text)
        return found

    def topics_of(self, record_name: str) -> list[str]:
        """Every topic (prefixed) whose values are ``record_name`` records."""
        from streams.kafka.topics import all_specs
        return [self.topic_prefix + s.name for s in all_specs() if s.schema == record_name]

    def _prepare(self, schema: Schema, text: str, topics: list[str]) -> None:
        for topic in topics:
            subject = subject_name(self.subject_strategy, topic, schema.name)
            if (subject, schema.fingerprint) in self._ready:
                continue
            if self.auto_register:
                self.registry.register(subject, text)
            elif self.registry.lookup(subject, text) is None:
                raise SchemaRegistryError(404, SCHEMA_NOT_FOUND, (
                    f"{schema.name} (fingerprint {schema.fingerprint.hex()}) is not registered under subject "
                    f"{subject!r} and auto-registration is off (VITRINA_SCHEMA_AUTO_REGISTER, off in production): "
                    "run `vitrina schemas register`"))
            self._ready.add((subject, schema.fingerprint))

    def encode(self, name: str, record: dict, topic: str | None = None) -> bytes:
        return self.encode_with(self.store.current(name), record, topic)

    def encode_with(self, schema: Schema, record: dict, topic: str | None = None) -> bytes:
        """``topic`` (the full name) picks the subject under TopicNameStrategy; without it the schema is
        made known under the subject of every topic that carries the record (the bytes are the same)."""
        serializer, text = self._serializer(schema)
        topics = [topic] if topic else self.topics_of(schema.name)
        if not topics:
            raise ValueError(f"no topic carries {schema.name}: pass topic= to pick the subject")
        self._prepare(schema, text, topics)
        try:
            return serializer(record, SerializationContext(topics[0], MessageField.VALUE))
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"{schema.name}: {exc}") from exc

    # -- decode ---------------------------------------------------------------------------------

    def _capture_payload(self, data: bytes, ctx: SerializationContext | None, schema_id: Any) -> io.BytesIO:
        payload = dual_schema_id_deserializer(data, ctx, schema_id)
        self._local.payload = payload
        return payload

    def _deserializer(self, reader: Schema) -> AvroDeserializer:
        found = self._deserializers.get(reader.name)
        if found is None:
            found = self._deserializers[reader.name] = AvroDeserializer(
                self.registry.client, schema_text(reader), conf={"schema.id.deserializer": self._capture_payload})
        return found

    def _writer_name(self, schema_id: int) -> str | None:
        if schema_id not in self._writer_names:
            text = self.registry.schema_by_id(schema_id)
            if text is None:
                raise DecodeError(DecodeError.UNKNOWN_SCHEMA_ID, f"schema registry has no schema id {schema_id}")
            parsed = json.loads(text)
            name = parsed.get("name") if isinstance(parsed, dict) else None
            if name and "." not in name and parsed.get("namespace"):
                name = f"{parsed['namespace']}.{name}"
            self._writer_names[schema_id] = name
        return self._writer_names[schema_id]

    def decode(self, data: bytes | None, name: str) -> dict:
        reader = self.store.current(name)
        if not data:
            raise DecodeError(DecodeError.EMPTY, "empty value (tombstone or missing payload)")
        if data[:1] != CONFLUENT_MAGIC:
            raise DecodeError(DecodeError.BAD_MAGIC, f"expected Confluent magic byte 00, got {bytes(data[:1]).hex()}")
        if len(data) < 5:
            raise DecodeError(DecodeError.TRUNCATED_HEADER, f"{len(data)} bytes is shorter than the 5-byte header")
        schema_id = struct.unpack(">I", data[1:5])[0]
        writer = self._writer_name(schema_id)
        if writer != reader.name:
            raise DecodeError(DecodeError.WRONG_RECORD_TYPE, f"record is a {writer}, expected {reader.name}")
        self._local.payload = None
        try:
            record = self._deserializer(reader)(bytes(data), None)
        except Exception as exc:  # fastavro raises many types on garbage; the serde wraps some in SerializationError
            raise DecodeError(DecodeError.BODY_DECODE_FAILED,
                              f"cannot decode {writer} body (schema id {schema_id}): {type(exc).__name__}: {exc}") from exc
        payload = self._local.payload
        if payload is not None and payload.tell() != len(payload.getbuffer()):
            raise DecodeError(DecodeError.BODY_DECODE_FAILED,
                              f"{len(payload.getbuffer()) - payload.tell()} trailing bytes after the {writer} record")
        return record  # type: ignore[return-value]


from confluent_kafka.schema_registry import dual_schema_id_deserializer  # noqa: E402
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402

from streams.kafka.schema_registry import (SCHEMA_NOT_FOUND, Registry, SchemaRegistryError, register_all,  # noqa: E402
                                     schema_text, subject_name)

_default: Codec | None = None


def make_codec(schema_registry_url: str = "", settings: "Settings | None" = None) -> Codec:
    """The single-object codec, or the Confluent one when a registry URL is given (settings: subject
    strategy, auto-registration, topic prefix, compatibility level; the environment's when omitted).
    A ``mock://`` registry is seeded with every subject (``register_all``) so processes agree on ids."""
    if not schema_registry_url:
        return SingleObjectCodec()
    if settings is None:
        from infra.settings import load
        settings = load()
    registry = Registry(schema_registry_url, settings.schema_compatibility)
    store = SchemaStore()
    if registry.mock:
        register_all(registry, store, settings)
    return ConfluentCodec(registry, store, subject_strategy=settings.schema_subject_strategy,
                          auto_register=settings.schema_auto_register_enabled, topic_prefix=settings.topic_prefix)


def default_codec() -> Codec:
    """The process-wide codec for the configured framing (schemas parsed once)."""
    global _default
    if _default is None:
        from infra.settings import load

        settings = load()
        _default = make_codec(settings.schema_registry_url, settings)
    return _default
