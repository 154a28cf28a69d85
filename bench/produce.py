"""Producer throughput: the EventProducer API vs a bare confluent-kafka loop, then decode speed.

Both paths produce the same 200,000 playback events, Avro single-object encoded,
to fresh topics of the same broker in the same run. "raw" is what a hand-written
loop does (fastavro encode + confluent_kafka.Producer.produce with the same
client config); "api" is ``EventProducer.publish_many`` (codec lookup, keying by
the registry's key field, delivery tracking). ratio = api / raw.
"""
from __future__ import annotations

import argparse
import io
import time
import uuid

import fastavro
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from bench._common import add_broker_argument, broker_name, run_per_broker, running_stack, write_result
from demo.catalogue import synthetic_titles
from demo.eventgen import StreamConfig, generate
from streams.kafka.codec import SingleObjectCodec
from streams.kafka.offsets import probe_consumer
from streams.kafka.producer import EventProducer, producer_config
from streams.kafka.topics import TopicSpec, admin_client


def playback_events(n: int) -> list[dict]:
    titles = synthetic_titles(300)
    events: list[dict] = []
    viewers = 200
    while len(events) < n:
        events += [e for topic, e in generate(titles, StreamConfig(viewers=viewers), seed=len(events)) if topic == "playback"]
    return events[:n]


def fresh_topic(settings, partitions: int = 6) -> str:
    name = f"bench.playback.{uuid.uuid4().hex[:8]}"
    admin = admin_client(settings)
    for future in admin.create_topics([NewTopic(name, partitions, settings.replication_factor)]).values():
        future.result()
    return name


def raw_loop(settings, topic: str, events: list[dict], codec: SingleObjectCodec) -> float:
    schema = codec.store.current("vitrina.PlaybackEvent")
    header = schema.single_object_header
    producer = Producer(producer_config(settings))
    start = time.perf_counter()
    for i, event in enumerate(events):
        out = io.BytesIO()
        out.write(header)
        fastavro.schemaless_writer(out, schema.parsed, event)
        key = (event["user_id"] or event["device_id"]).encode()
        while True:
            try:
                producer.produce(topic, out.getvalue(), key)
                break
            except BufferError:
                producer.poll(0.05)
        if i & 1023 == 0:
            producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - start


def api_loop(settings, topic: str, events: list[dict], codec: SingleObjectCodec) -> float:
    producer = EventProducer(settings, codec)
    spec = TopicSpec(topic, "vitrina.PlaybackEvent", "@viewer")
    start = time.perf_counter()
    producer.publish_many(spec, events)
    producer.flush(120)
    return time.perf_counter() - start


def consume_decode(settings, topic: str, n: int, codec: SingleObjectCodec) -> float:
    from confluent_kafka import TopicPartition
    consumer = probe_consumer(settings, **{"enable.partition.eof": False, "fetch.max.bytes": 52428800})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(6)])
    decode = codec.decode
    seen = 0
    start = time.perf_counter()
    while seen < n:
        batch = consumer.consume(10000, 5.0)
        if not batch:
            break
        for message in batch:
            if message.error() is None:
                decode(message.value(), "vitrina.PlaybackEvent")
                seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    if seen < n:
        raise RuntimeError(f"read back only {seen} of {n} events")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path (best is kept)")
    add_broker_argument(parser)
    args = parser.parse_args()
    if run_per_broker("produce", args.broker, ["raw_events_per_s", "api_events_per_s", "consume_events_per_s"]):
        return
    events = playback_events(args.events)
    codec = SingleObjectCodec()
    with running_stack() as settings:
        raw_topic, api_topic = fresh_topic(settings), fresh_topic(settings)
        # interleave rounds so background noise hits both paths alike; keep each path's best round
        raw_runs, api_runs = [], []
        for _ in range(args.rounds):
            raw_runs.append(raw_loop(settings, raw_topic, events, codec))
            api_runs.append(api_loop(settings, api_topic, events, codec))
        raw_s, api_s = min(raw_runs), min(api_runs)
        consume_s = consume_decode(settings, api_topic, len(events), codec)
    figures = {
        "events": len(events),
        "raw_events_per_s": round(len(events) / raw_s),
        "api_events_per_s": round(len(events) / api_s),
        "ratio": round(raw_s / api_s, 3),
        "consume_events_per_s": round(len(events) / consume_s),
        "broker": broker_name(settings),
        "bootstrap": settings.kafka_bootstrap,
        "framing": "avro single-object",
        "rounds_events_per_s": {"raw": [round(len(events) / s) for s in raw_runs],
                                "api": [round(len(events) / s) for s in api_runs]},
        "load_average": list(__import__("os").getloadavg()),
    }
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    write_result("produce", figures)


if __name__ == "__main__":
    main()
