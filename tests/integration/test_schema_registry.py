"""Event contracts through a schema registry (Confluent wire format, confluent-kafka's serdes).

The registry is confluent-kafka's ``mock://`` one: no Confluent-compatible registry can be installed on
this machine (Apicurio's Maven artifacts do not resolve here, see the README's schema evolution
playbook). It lives inside one process, so every process seeds it with every subject in the same order
(streams/kafka/codec.py ``make_codec``) and they agree on ids: the producer (this test) and a real worker
process run the whole pipeline in Confluent wire format.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import struct
from datetime import UTC, datetime

import pytest
import redis
from support.replay import (
    make_input,
    pipeline_done,
    start_pipeline_worker,
    start_private_stack,
    unique,
    wait_for,
)

from infra.settings import Settings, load
from schemas import HISTORY_DIR, SCHEMA_DIR
from streams.kafka.codec import ConfluentCodec, DecodeError, make_codec
from streams.kafka.schema_registry import (
    IncompatibleSchemaError,
    Registry,
    SchemaRegistryError,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
V2_ONLY = ("stall_ms", "bitrate_kbps", "buffered_ratio")


def playback(**overrides):
    event = dict(event_id="e1", session_id="s1", user_id="u1", device_id="d1", device_type="TV", os="tizen 7",
                 app_version="4.0.0", item_id="m1", event_type="START", position_ms=0, duration_ms=60_000,
                 network_kbps=5000, buffered_ratio=0.5, stall_ms=0, bitrate_kbps=3000, event_time=NOW)
    event.update(overrides)
    return event


def settings_for(**overrides) -> Settings:
    return dataclasses.replace(load(), **{"topic_prefix": "", "env": "dev", "schema_auto_register": "",
                                          "schema_subject_strategy": "topic", **overrides})


def codec_for(url: str, **overrides) -> ConfluentCodec:
    codec = make_codec(url, settings_for(**overrides))
    assert isinstance(codec, ConfluentCodec)
    return codec


def incompatible_playback() -> dict:
    """PlaybackEvent with a new field and no default: a reader of it cannot read any older record."""
    schema = json.loads((SCHEMA_DIR / "vitrina.PlaybackEvent.avsc").read_text())
    schema["fields"].append({"name": "cdn_pop", "type": "string", "doc": "Edge location that served it."})
    return schema


# -- registry contents -------------------------------------------------------------------------------

def test_subjects_follow_topic_name_strategy_with_full_schema_text() -> None:
    codec = codec_for(f"mock://{unique('names')}")
    client = codec.registry.client
    subjects = set(client.get_subjects())
    assert {"playback-value", "playback.by-item-value", "dlq.playback-value", "stats.plays-value"} <= subjects
    assert "vitrina.PlaybackEvent" not in subjects
    latest = json.loads(client.get_latest_version("playback-value").schema.schema_str)
    fields = {f["name"]: f for f in latest["fields"]}
    assert fields["stall_ms"]["default"] == 0 and fields["buffered_ratio"]["default"] is None  # defaults kept
    assert fields["event_time"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}  # logical types kept
    assert latest["doc"].startswith("One player event") and fields["item_id"]["doc"]  # docs kept
    assert fields["device_type"]["type"]["type"] == "enum"  # the referenced DeviceType is inlined


def test_record_name_strategy_by_configuration() -> None:
    codec = codec_for(f"mock://{unique('records')}", schema_subject_strategy="record")
    subjects = set(codec.registry.client.get_subjects())
    assert "vitrina.PlaybackEvent" in subjects and "vitrina.DeadLetter" in subjects
    assert not any(s.endswith("-value") for s in subjects)
    data = codec.encode("vitrina.PlaybackEvent", playback())
    assert codec.decode(data, "vitrina.PlaybackEvent") == playback()


def test_backward_registry_accepts_the_evolution_in_history() -> None:
    """Every subject is BACKWARD and holds its history/ versions, then the current one."""
    codec = codec_for(f"mock://{unique('history')}")
    registry = codec.registry
    assert registry.level("playback-value") == "BACKWARD"
    versions = [json.loads(text) for text in registry.versions("playback-value")]
    assert len(versions) == 2
    assert "stall_ms" not in {f["name"] for f in versions[0]["fields"]}
    assert "stall_ms" in {f["name"] for f in versions[1]["fields"]}
    for subject in ("uploads.processed-value", "dlq.playback-value"):
        assert len(registry.versions(subject)) == 2, subject


def test_v1_writer_and_v2_reader_through_the_registry() -> None:
    """A producer still on PlaybackEvent v1 and a consumer on today's schema, in two codecs (as two
    processes would): the consumer fetches the writer schema by id and fills the defaults."""
    url = f"mock://{unique('v1v2')}"
    producer, consumer = codec_for(url), codec_for(url)
    v1 = producer.store.history("vitrina.PlaybackEvent")[0]
    record = {k: v for k, v in playback().items() if k not in V2_ONLY}
    data = producer.encode_with(v1, record, topic="playback")
    schema_id = struct.unpack(">I", data[1:5])[0]
    assert data[:1] == b"\x00"
    assert "stall_ms" not in {f["name"] for f in json.loads(consumer.registry.schema_by_id(schema_id))["fields"]}
    decoded = consumer.decode(data, "vitrina.PlaybackEvent")
    assert decoded["stall_ms"] == 0 and decoded["bitrate_kbps"] is None and decoded["buffered_ratio"] is None
    assert {k: decoded[k] for k in record} == record


def test_incompatible_change_is_refused_with_the_reason() -> None:
    codec = codec_for(f"mock://{unique('refuse')}")
    before = codec.registry.versions("playback-value")
    breaking = codec.store.register_writer(incompatible_playback())
    with pytest.raises(IncompatibleSchemaError) as info:
        codec.encode_with(breaking, playback(cdn_pop="fra1"))
    message = str(info.value)
    assert "playback-value" in message and "BACKWARD" in message
    assert "cdn_pop" in message and "reader_field_missing_default_value" in message
    assert codec.registry.versions("playback-value") == before  # nothing registered
    # the same change with a default is accepted
    fixed = incompatible_playback()
    fixed["fields"][-1].update(type=["null", "string"], default=None)
    data = codec.encode_with(codec.store.register_writer(fixed), playback(cdn_pop="fra1"))
    assert codec.decode(data, "vitrina.PlaybackEvent")["item_id"] == "m1"
    assert len(codec.registry.versions("playback-value")) == len(before) + 1


def test_production_mode_does_not_auto_register() -> None:
    codec = codec_for(f"mock://{unique('prod')}", env="production")
    assert not codec.auto_register
    assert codec.decode(codec.encode("vitrina.PlaybackEvent", playback()), "vitrina.PlaybackEvent") == playback()
    fixed = incompatible_playback()
    fixed["fields"][-1].update(type=["null", "string"], default=None)
    with pytest.raises(SchemaRegistryError, match="vitrina schemas register"):
        codec.encode_with(codec.store.register_writer(fixed), playback())
    assert codec_for(f"mock://{unique('prod-on')}", env="production", schema_auto_register="1").auto_register


def test_unknown_schema_id_is_a_decode_error_with_its_code() -> None:
    codec = codec_for(f"mock://{unique('unknown')}")
    body = codec.encode("vitrina.PlaybackEvent", playback())[5:]
    with pytest.raises(DecodeError) as info:
        codec.decode(b"\x00" + struct.pack(">I", 999_999) + body, "vitrina.PlaybackEvent")
    assert info.value.code == DecodeError.UNKNOWN_SCHEMA_ID


def test_register_command_against_the_registry(capsys, monkeypatch) -> None:
    from streams import cli

    url = f"mock://{unique('cli')}"
    monkeypatch.setenv("VITRINA_SCHEMA_COMPATIBILITY", "FULL")
    assert cli.main(["schemas", "register", "--url", url]) == 0
    out = capsys.readouterr().out
    assert "playback-value" in out and "FULL" in out and "subject(s) registered" in out
    assert cli.main(["schemas", "register"]) == 2 or load().schema_registry_url  # no URL: a clear refusal


def test_register_refuses_what_the_registry_level_refuses() -> None:
    registry = Registry(f"mock://{unique('level')}")
    registry.set_level("playback-value", "FORWARD")
    old = json.loads((HISTORY_DIR / "vitrina.PlaybackEvent.v1.avsc").read_text())
    codec = codec_for(f"mock://{unique('texts')}")
    v1 = codec.store.history("vitrina.PlaybackEvent")[0]
    assert old["name"] == "PlaybackEvent"
    from streams.kafka.schema_registry import schema_text
    registry.register("playback-value", schema_text(v1))
    newer = copy.deepcopy(codec.store.current("vitrina.PlaybackEvent").expanded)
    newer["fields"] = [f for f in newer["fields"] if f["name"] != "os"]  # v1 readers need 'os'
    with pytest.raises(IncompatibleSchemaError, match="'os'"):
        registry.register("playback-value", json.dumps(newer))


# -- the whole pipeline in Confluent wire format -----------------------------------------------------

@pytest.fixture(scope="module")
def registry_stack(tmp_path_factory):
    stack, settings = start_private_stack(tmp_path_factory.mktemp("registry-stack"))
    try:
        yield dataclasses.replace(settings, schema_registry_url=f"mock://{unique('pipeline')}", topic_prefix="",
                                  schema_subject_strategy="topic", schema_auto_register="", env="dev")
    finally:
        stack.down()


def test_pipeline_runs_in_confluent_wire_format(registry_stack: Settings, tmp_path) -> None:
    """Producer -> worker (its own process, its own codec) -> Redis views; an unknown schema id goes to
    the dead-letter topic with its DecodeError code; an incompatible producer is refused, nothing lost."""
    from streams.kafka.tail import tail
    from streams.kafka.producer import EventProducer
    from streams.kafka.topics import spec

    settings = registry_stack
    codec = codec_for(settings.schema_registry_url)
    data = make_input(titles=60, requests=120, seed=5)
    worker = start_pipeline_worker(settings, unique("registry-app"), data_dir=tmp_path / "worker")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        with EventProducer(settings, codec=codec) as producer:
            producer.publish_many(spec("catalogue.titles"), data.titles)
            producer.publish_many(spec("catalogue.shelves"), data.shelves)
            producer.publish_many(spec("playback"), data.playback)
            producer.publish_many(spec("ranking.impressions"), data.impressions)
            body = codec.encode("vitrina.PlaybackEvent", data.playback[0])[5:]
            producer.publish_raw("playback", b"\x00" + struct.pack(">I", 999_999) + body, b"unknown-id")
        wait_for(lambda: pipeline_done(client, data), "plays, histories and showcases from Confluent-framed input",
                 timeout_s=240)

        letters = [r.value for r in tail(settings, codec, "dlq.playback", idle_timeout_s=2.0) if r.value]
        assert letters, "the record with an unknown schema id was not dead-lettered"
        assert {letter["reason_code"] for letter in letters} == {DecodeError.UNKNOWN_SCHEMA_ID}
        assert {letter["key"] for letter in letters} == {b"unknown-id"}
        agents = [letter["agent"] for letter in letters]  # each agent reading playback letters it once
        assert len(agents) == len(set(agents)), agents

        breaking = codec.store.register_writer(incompatible_playback())
        with EventProducer(settings, codec=codec) as producer, pytest.raises(IncompatibleSchemaError, match="cdn_pop"):
            producer.publish_raw("playback", codec.encode_with(breaking, {**data.playback[0], "cdn_pop": "x"}), b"k")

        records = list(tail(settings, codec, "playback", idle_timeout_s=2.0))
        assert all(r.raw is None or r.raw[:1] == b"\x00" for r in records)
        decoded = [r for r in records if r.error is None]
        assert len(decoded) == len(data.playback)  # every record is there and decodes; nothing else was written
        assert [r.error.code for r in records if r.error is not None] == [DecodeError.UNKNOWN_SCHEMA_ID]
        assert breaking.name == "vitrina.PlaybackEvent" and worker.alive()
    finally:
        client.close()
        worker.stop()
