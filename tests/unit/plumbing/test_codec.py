"""Wire format: single-object framing, schema evolution, and every malformed-input path."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest

from schemas import SCHEMA_DIR
from streams.kafka.codec import DecodeError, EncodeError, SingleObjectCodec

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def playback(**overrides):
    event = dict(event_id="e1", session_id="s1", user_id="u1", device_id="d1", device_type="TV", os="tizen 7",
                 app_version="4.0.0", item_id="m1", event_type="START", position_ms=0, duration_ms=60_000,
                 network_kbps=5000, buffered_ratio=0.5, stall_ms=0, bitrate_kbps=3000, event_time=NOW)
    event.update(overrides)
    return event


@pytest.fixture(scope="module")
def codec():
    return SingleObjectCodec()


def test_round_trip_uses_single_object_framing(codec):
    data = codec.encode("vitrina.PlaybackEvent", playback())
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.store.current("vitrina.PlaybackEvent").fingerprint
    assert codec.decode(data, "vitrina.PlaybackEvent") == playback()


def test_every_schema_round_trips_a_minimal_record(codec):
    for name in codec.store.names:
        schema = codec.store.current(name)
        assert len(schema.fingerprint) == 8
        doc_fields = [f for f in json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())["fields"]]
        assert all(f.get("doc") for f in doc_fields), f"{name} has an undocumented field"


def test_old_writer_new_reader_fills_defaults(codec):
    """A producer still on PlaybackEvent v1 (history/) is read with the current schema."""
    old = json.loads((SCHEMA_DIR / "history" / "vitrina.PlaybackEvent.v1.avsc").read_text())
    old_schema = codec.store.register_writer(old)
    assert old_schema.fingerprint != codec.store.current("vitrina.PlaybackEvent").fingerprint
    record = {k: v for k, v in playback().items() if k not in ("stall_ms", "bitrate_kbps", "buffered_ratio")}
    data = codec.encode_with(old_schema, record)
    decoded = codec.decode(data, "vitrina.PlaybackEvent")
    assert decoded["stall_ms"] == 0 and decoded["bitrate_kbps"] is None and decoded["buffered_ratio"] is None
    assert decoded["item_id"] == "m1"


def test_new_writer_enum_symbol_unknown_to_old_reader_falls_back_to_default():
    """A newer producer may add an enum symbol; readers use the enum default instead of failing."""
    codec = SingleObjectCodec()
    newer = json.loads((SCHEMA_DIR / "vitrina.SessionEvent.avsc").read_text())
    newer = copy.deepcopy(newer)
    reason = next(f for f in newer["fields"] if f["name"] == "end_reason")
    reason["type"][1]["symbols"].append("PARENTAL_TIMEOUT")
    writer = codec.store.register_writer(newer)
    data = codec.encode_with(writer, dict(session_id="s", user_id=None, device_id="d", device_type="TV",
                                          kind="END", end_reason="PARENTAL_TIMEOUT", event_time=NOW))
    assert codec.decode(data, "vitrina.SessionEvent")["end_reason"] == "UNKNOWN"


@pytest.mark.parametrize("data, code", [
    (b"", DecodeError.EMPTY),
    (None, DecodeError.EMPTY),
    (b'{"event_id": "json, not avro"}', DecodeError.BAD_MAGIC),
    (b"\xc3\x01\x00\x01", DecodeError.TRUNCATED_HEADER),
    (b"\xc3\x01" + b"\xde\xad\xbe\xef\x00\x00\x00\x00" + b"\x02a", DecodeError.UNKNOWN_FINGERPRINT),
])
def test_malformed_values_raise_decode_error_with_code(codec, data, code):
    with pytest.raises(DecodeError) as info:
        codec.decode(data, "vitrina.PlaybackEvent")
    assert info.value.code == code


def test_truncated_body_and_trailing_garbage_are_decode_errors(codec):
    good = codec.encode("vitrina.PlaybackEvent", playback())
    with pytest.raises(DecodeError) as truncated:
        codec.decode(good[:-5], "vitrina.PlaybackEvent")
    assert truncated.value.code == DecodeError.BODY_DECODE_FAILED
    with pytest.raises(DecodeError) as trailing:
        codec.decode(good + b"\x00\x01", "vitrina.PlaybackEvent")
    assert trailing.value.code == DecodeError.BODY_DECODE_FAILED


def test_trailing_bytes_are_refused_whatever_they_are_even_a_piece_of_the_end_mark(codec):
    """The own-schema decode appends END_MARK and expects it back right after the record: padding that
    is a prefix or a suffix of the mark, zeros, or the whole mark minus a byte must still be refused."""
    from streams.kafka.codec import END_MARK

    good = codec.encode("vitrina.PlaybackEvent", playback())
    paddings = [END_MARK[:k] for k in range(1, 16)] + [END_MARK[k:] for k in range(1, 16)]
    paddings += [b"\x00" * k for k in range(1, 20)] + [END_MARK[:-1] + bytes([END_MARK[-1] ^ 1])]
    for padding in paddings:
        with pytest.raises(DecodeError) as refused:
            codec.decode(good + padding, "vitrina.PlaybackEvent")
        assert refused.value.code == DecodeError.BODY_DECODE_FAILED, padding
    for cut in range(1, len(good) - 10):
        with pytest.raises(DecodeError):
            codec.decode(good[:-cut], "vitrina.PlaybackEvent")


def test_record_of_another_type_is_rejected(codec):
    session = codec.encode("vitrina.SessionEvent", dict(session_id="s", user_id=None, device_id="d", device_type="TV",
                                                        kind="START", end_reason=None, event_time=NOW))
    with pytest.raises(DecodeError) as info:
        codec.decode(session, "vitrina.PlaybackEvent")
    assert info.value.code == DecodeError.WRONG_RECORD_TYPE


def test_random_bytes_never_raise_anything_but_decode_error(codec):
    import random
    rng = random.Random(3)
    header = codec.store.current("vitrina.PlaybackEvent").single_object_header
    for _ in range(2000):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 60)))
        for data in (body, header + body):
            try:
                codec.decode(data, "vitrina.PlaybackEvent")
            except DecodeError:
                pass


def test_encode_error_names_the_problem(codec):
    with pytest.raises(EncodeError):
        codec.encode("vitrina.PlaybackEvent", playback(position_ms="zero"))


# -- Confluent wire format (confluent-kafka's serdes on its mock:// registry) ----------------------

@pytest.fixture(scope="module")
def confluent():
    import uuid

    from streams.kafka.codec import ConfluentCodec, make_codec
    codec = make_codec(f"mock://codec-{uuid.uuid4().hex[:6]}")
    assert isinstance(codec, ConfluentCodec)
    return codec


def test_confluent_round_trip_and_framing(confluent):
    data = confluent.encode("vitrina.PlaybackEvent", playback())
    assert data[:1] == b"\x00" and len(data) > 5
    assert confluent.decode(data, "vitrina.PlaybackEvent") == playback()


def test_confluent_malformed_values_keep_the_decode_error_codes(confluent):
    good = confluent.encode("vitrina.PlaybackEvent", playback())
    session_id = confluent.encode("vitrina.SessionEvent", dict(session_id="s", user_id=None, device_id="d",
                                                               device_type="TV", kind="START", end_reason=None,
                                                               event_time=NOW))[:5]
    cases = [
        (b"", DecodeError.EMPTY),
        (None, DecodeError.EMPTY),
        (b"\xc3\x01" + good[1:], DecodeError.BAD_MAGIC),
        (b"\x00\x00\x01", DecodeError.TRUNCATED_HEADER),
        (b"\x00\x7f\xff\xff\xff" + good[5:], DecodeError.UNKNOWN_SCHEMA_ID),
        (session_id + good[5:], DecodeError.WRONG_RECORD_TYPE),
        (good[:5] + b"\xff" * 3, DecodeError.BODY_DECODE_FAILED),
        (good + b"\x00\x00", DecodeError.BODY_DECODE_FAILED),  # trailing bytes
        (good[:5], DecodeError.BODY_DECODE_FAILED),
    ]
    for data, code in cases:
        with pytest.raises(DecodeError) as info:
            confluent.decode(data, "vitrina.PlaybackEvent")
        assert info.value.code == code, (data, info.value)


def test_confluent_encode_error_names_the_field(confluent):
    with pytest.raises(EncodeError, match="vitrina.PlaybackEvent"):
        confluent.encode("vitrina.PlaybackEvent", playback(position_ms="not a number"))


def test_a_schema_is_flat_only_when_none_of_its_values_can_nest(codec):
    """``Schema.flat`` lets the decode cache hand shallow copies to several readers: a schema called flat
    must never decode to a dict or list value (random records of every schema), and a field whose type
    is only named by reference counts as nesting."""
    from fastavro.utils import generate_many

    from streams.kafka.codec import _scalar

    for name in codec.store.names:
        schema = codec.store.current(name)
        nested = any(isinstance(v, (dict, list)) for record in generate_many(schema.parsed, 200) for v in record.values())
        assert not (schema.flat and nested), name
    assert codec.store.current("vitrina.PlaybackEvent").flat and not codec.store.current("vitrina.RankingImpression").flat
    assert not _scalar("vitrina.Labels") and not _scalar(["null", "vitrina.Labels"]) and _scalar(["null", "string"])
    assert _scalar({"type": "long", "logicalType": "timestamp-millis"}) and _scalar({"type": "enum", "name": "E", "symbols": ["A"]})
