"""The schema registry side of the Confluent wire format, on confluent-kafka's own client.

``Registry`` wraps ``confluent_kafka.schema_registry.SchemaRegistryClient`` (its ``mock://`` URLs give
the library's in-process mock) with what vitrina needs around it:

* **Subjects**: TopicNameStrategy by default (``<topic>-value``: what other producers and Kafka Connect
  expect), RecordNameStrategy by configuration (``VITRINA_SCHEMA_SUBJECT_STRATEGY=record``: the full
  record name, e.g. ``vitrina.PlaybackEvent``).
* **The full schema text** is registered: docs, defaults and logical types included (named types such
  as ``vitrina.DeviceType`` inlined), never the Parsing Canonical Form, which drops defaults and so
  cannot resolve an old record with a newer schema.
* **Compatibility, with the reason**: before registering a new version the registry's compatibility
  level for the subject is checked here too (Avro's reader/writer rules, ``compatibility_problems``),
  so a refused change says which field breaks which rule instead of a bare HTTP 409; a registry that
  refuses anyway (its 409) is reported the same way.

``register_all`` is what ``vitrina schemas register`` does: every subject of the topic registry gets its
compatibility level and every version in ``schemas/history/`` (oldest first) followed by the current one.
A ``mock://`` registry lives in one process only: vitrina seeds it with exactly that, in that order, so
that separate processes (a producer, a worker) given the same ``mock://`` URL agree on schema ids.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

if TYPE_CHECKING:  # the codec imports this module; only type names go the other way
    from infra.settings import Settings
    from streams.kafka.codec import Schema, SchemaStore

SUBJECT_STRATEGIES = ("topic", "record")
LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE")
SUBJECT_NOT_FOUND = 40401  # Confluent error codes
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403

__all__ = [
    "IncompatibleSchemaError",
    "Registry",
    "SchemaRegistryError",
    "compatibility_problems",
    "register_all",
    "schema_text",
    "subject_name",
]


class IncompatibleSchemaError(RuntimeError):
    """A schema the subject's compatibility level refuses; ``problems`` says which field breaks which rule."""

    def __init__(self, subject: str, level: str, problems: list[str]) -> None:
        self.subject, self.level, self.problems = subject, level, problems
        super().__init__(f"schema for subject {subject!r} is not {level}-compatible with the registered "
                         f"version(s): " + "; ".join(problems))


def subject_name(strategy: str, topic: str, record_name: str) -> str:
    """The subject of a topic's values: ``<topic>-value`` (TopicNameStrategy) or the record's full name."""
    if strategy == "topic":
        return f"{topic}-value"
    if strategy == "record":
        return record_name
    raise ValueError(f"VITRINA_SCHEMA_SUBJECT_STRATEGY={strategy!r}; expected one of {', '.join(SUBJECT_STRATEGIES)}")


def schema_text(schema: Schema) -> str:
    """The full schema JSON a registry stores: docs, defaults, logical types, named types inlined."""
    return json.dumps(schema.expanded, separators=(",", ":"))


def _avro(text_or_json: str | dict) -> avro.schema.Schema:
    text = text_or_json if isinstance(text_or_json, str) else json.dumps(text_or_json)
    return avro.schema.parse(text)


def _incompatibilities(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[tuple[str, str]]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return [(str(getattr(kind, "value", kind)), str(message))
            for kind, message in zip(result.incompatibilities, result.messages)] or [("incompatible", "")]


def compatibility_problems(reader: str | dict, writer: str | dict) -> list[str]:
    """Why a reader with schema ``reader`` cannot read data written with ``writer`` (empty: it can),
    one line per problem naming the record field it is about."""
    r, w = _avro(reader), _avro(writer)
    if not _incompatibilities(r, w):
        return []
    problems: list[str] = []
    if isinstance(r, avro.schema.RecordSchema) and isinstance(w, avro.schema.RecordSchema):
        if r.fullname != w.fullname:
            problems.append(f"name_mismatch: reader is {r.fullname}, writer is {w.fullname}")
        written = {f.name: f for f in w.fields}
        for field in r.fields:
            source = written.get(field.name) or next(
                (written[a] for a in (field.props.get("aliases") or []) if a in written), None)
            if source is None:
                if not field.has_default:
                    problems.append(f"field {field.name!r}: reader_field_missing_default_value: the writer has no "
                                    "such field and the reader's has no default")
                continue
            problems += [f"field {field.name!r}: {kind}: {message}"
                         for kind, message in _incompatibilities(field.type, source.type)]
    return sorted(set(problems)) or [f"{kind}: {message}" for kind, message in _incompatibilities(r, w)]


def level_problems(level: str, new: str | dict, registered: list[str]) -> list[str]:
    """What ``level`` refuses about registering ``new`` after ``registered`` (oldest first)."""
    level = level.upper()
    if level == "NONE" or not registered:
        return []
    if level not in LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}; expected one of {', '.join(LEVELS)}")
    against = registered if level.endswith("_TRANSITIVE") else registered[-1:]
    problems = []
    for index, old in enumerate(against):
        version = (len(registered) - len(against)) + index + 1
        if level.startswith(("BACKWARD", "FULL")):
            problems += [f"new schema cannot read version {version}: {p}" for p in compatibility_problems(new, old)]
        if level.startswith(("FORWARD", "FULL")):
            problems += [f"version {version} cannot read the new schema: {p}" for p in compatibility_problems(old, new)]
    return problems


def _avro_schema(text: str) -> RegistrySchema:
    return RegistrySchema(text, "AVRO")


class Registry:
    """A schema registry (confluent-kafka's client) with compatibility checked before registering."""

    def __init__(self, url: str, default_level: str = "BACKWARD") -> None:
        self.url = url
        self.client = SchemaRegistryClient.new_client({"url": url})  # mock:// gives the in-process mock
        self.mock = url.startswith("mock://")
        self.default_level = default_level.upper()
        self._levels: dict[str, str] = {}  # the mock keeps no configuration: levels set on it live here

    def level(self, subject: str) -> str:
        """The subject's compatibility level (else the registry's global one, else the default)."""
        if self.mock:
            return self._levels.get(subject, self.default_level)
        for scope in (subject, None):
            try:
                return str(self.client.get_compatibility(scope)).upper()
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise
        return self.default_level

    def set_level(self, subject: str, level: str) -> None:
        level = level.upper()
        if level not in LEVELS:
            raise ValueError(f"unknown compatibility level {level!r}; expected one of {', '.join(LEVELS)}")
        if self.mock:
            self._levels[subject] = level
            return
        self.client.set_compatibility(subject, level)

    def versions(self, subject: str) -> list[str]:
        """Schema texts registered under ``subject``, oldest first (empty for an unknown subject)."""
        try:
            numbers = self.client.get_versions(subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return []
            raise
        return [self.client.get_version(subject, n).schema.schema_str for n in sorted(numbers)]

    def lookup(self, subject: str, text: str) -> int | None:
        """The id of ``text`` if it is registered under ``subject``."""
        try:
            return self.client.lookup_schema(subject, _avro_schema(text)).schema_id
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise

    def register(self, subject: str, text: str) -> int:
        """Register ``text`` under ``subject`` (idempotent); refuses what the subject's level refuses."""
        known = self.lookup(subject, text)
        if known is not None:
            return known
        level = self.level(subject)
        problems = level_problems(level, text, self.versions(subject))
        if problems:
            raise IncompatibleSchemaError(subject, level, problems)
        try:
            return self.client.register_schema(subject, _avro_schema(text))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:  # the registry's own check refused it
                raise IncompatibleSchemaError(subject, level, [exc.error_message]) from exc
            raise

    def schema_by_id(self, schema_id: int) -> str | None:
        try:
            return self.client.get_schema(schema_id).schema_str
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise


@dataclass(frozen=True)
class Registration:
    subject: str
    level: str
    ids: tuple[int, ...]  # one per version registered, oldest first


def subjects(settings: Settings) -> list[tuple[str, str]]:
    """(subject, record name) of every topic's values, in topic-registry order, without repeats."""
    from streams.kafka.topics import all_specs, full_name

    seen: dict[str, str] = {}
    for spec in all_specs():
        subject = subject_name(settings.schema_subject_strategy, full_name(settings, spec.name), spec.schema)
        seen.setdefault(subject, spec.schema)
    return list(seen.items())


def register_all(registry: Registry, store: SchemaStore, settings: Settings, level: str | None = None,
                 only: Iterable[str] | None = None) -> list[Registration]:
    """Set each subject's compatibility level, then register its history versions and current schema."""
    level = (level or settings.schema_compatibility).upper()
    wanted = set(only) if only is not None else None
    done = []
    for subject, record in subjects(settings):
        if wanted is not None and subject not in wanted:
            continue
        registry.set_level(subject, level)
        versions = [*store.history(record), store.current(record)]
        ids = tuple(registry.register(subject, schema_text(schema)) for schema in versions)
        done.append(Registration(subject, level, ids))
    return done


def describe_problem(exc: Any) -> str:
    """One line for a registry failure (what the CLI prints)."""
    if isinstance(exc, SchemaRegistryError):
        return f"HTTP {exc.http_status_code} (error {exc.error_code}): {exc.error_message}"
    return str(exc)
