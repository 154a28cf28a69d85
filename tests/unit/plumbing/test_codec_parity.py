"""The two Avro decoders agree: cavro (a body of the reader's own schema) and fastavro (the reference,
and the decoder of every other writer version), on random records of every schema and on garbage."""
from __future__ import annotations

import io
import random

import fastavro
import pytest
from fastavro.utils import generate_many

from streams.kafka.codec import DecodeError, SingleObjectCodec


@pytest.fixture(scope="module")
def codec():
    return SingleObjectCodec()


def reference(schema, body: bytes) -> dict:
    """fastavro's reading of a body, with the codec's trailing-bytes rule."""
    buf = io.BytesIO(body)
    record = fastavro.schemaless_reader(buf, schema.parsed, None)
    if buf.tell() != len(body):
        raise ValueError("trailing bytes")
    return record


def test_cavro_and_fastavro_decode_the_same_values_for_every_schema(codec):
    random.seed(11)  # fastavro's generator draws from the random module
    for name in codec.store.names:
        schema = codec.store.current(name)
        for record in generate_many(schema.parsed, 200):
            data = codec.encode_with(schema, record)
            assert codec.decode(data, name) == reference(schema, data[10:]), name


def test_an_older_writer_version_is_resolved_by_symbol_name(codec):
    """cavro 1.0 resolves a changed enum by index; the codec must not use it across versions."""
    random.seed(12)
    checked = 0
    for name in codec.store.names:
        reader = codec.store.current(name)
        for writer in codec.store.history(name):
            for record in generate_many(writer.parsed, 100):
                data = codec.encode_with(writer, record)
                expected = fastavro.schemaless_reader(io.BytesIO(data[10:]), writer.parsed, reader.parsed)
                assert codec.decode(data, name) == expected, (name, record)
                checked += 1
    assert checked > 0  # schemas/history holds older versions


def test_garbage_bodies_are_decode_errors_exactly_when_fastavro_refuses_them(codec):
    """Truncated, padded, bit-flipped and random bodies: both decoders accept or refuse the same ones,
    and a refusal is always a BODY_DECODE_FAILED DecodeError, never another exception. The values of
    an accepted forged body may differ: see the next test."""
    rng = random.Random(17)
    random.seed(13)
    for name in ("vitrina.PlaybackEvent", "vitrina.RankingImpression", "vitrina.CoViewBatch", "vitrina.SessionEvent"):
        schema = codec.store.current(name)
        for record in generate_many(schema.parsed, 60):
            body = codec.encode_with(schema, record)[10:]
            flipped = bytearray(body)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            variants = [body[:rng.randrange(len(body))], body + bytes([rng.randrange(256)]), bytes(flipped),
                        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120)))]
            for variant in variants:
                try:
                    expected = reference(schema, variant)
                except Exception:  # noqa: BLE001 - any refusal of the reference decoder
                    expected = None
                try:
                    got = codec.decode(schema.single_object_header + variant, name)
                except DecodeError as exc:
                    assert exc.code == DecodeError.BODY_DECODE_FAILED
                    got = None
                assert (got is None) == (expected is None), (name, variant.hex())


def test_an_int_varint_beyond_32_bits_is_read_wrapped(codec):
    """Only a forged body has one (no writer produces it): fastavro returns the out-of-range number,
    cavro wraps it to 32 bits; neither refuses it. Pinned so a change of either is noticed."""
    schema = codec.store.current("vitrina.CoViewBatch")
    body = bytearray(codec.encode_with(schema, next(generate_many(schema.parsed, 1)))[10:])
    assert (schema.parsed["fields"][0]["name"], schema.parsed["fields"][0]["type"]) == ("origin", "int")
    origin_len = next(i for i, byte in enumerate(body) if byte < 0x80) + 1
    forged = bytes.fromhex("9cbdc3a625") + bytes(body[origin_len:])  # a varint fastavro reads as 5,006,454,606
    decoded = codec.decode(schema.single_object_header + forged, "vitrina.CoViewBatch")
    assert -2**31 <= decoded["origin"] < 2**31
    assert reference(schema, forged)["origin"] >= 2**31
