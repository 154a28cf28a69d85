"""The ranking pipeline through the real agents: label-join throughput, training rate, export + publish time.

Run from the repo root:  /work/venv/bin/python -m bench.ranking_stream [--size small|medium]
Writes bench/results/ranking_stream.json. A dedicated worker (own topic prefix, consumer group,
data dir and model name; only the ranking agents; the default model size) consumes the main
job's generated stream (impressions + playback); figures come from its Prometheus metrics.
bench/ranking.py measures the same core without Kafka.
"""
from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from tempfile import mkdtemp

from bench._common import running_stack, write_result
from infra.ports import pick_free_ports
from demo.catalogue import synthetic_titles
from demo.eventgen import StreamConfig, generate
from sinks.model_store import ModelStore
from demo.main import SIZES
from streams.kafka.producer import EventProducer
from streams.ops.supervisor import start_worker
from streams.kafka.topics import ensure_topics, spec


def _wait(predicate, timeout_s: float, poll_s: float = 0.5) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(poll_s)
    raise TimeoutError(f"not done after {timeout_s}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    args = parser.parse_args()
    with running_stack() as base:
        tag = uuid.uuid4().hex[:8]
        settings = replace(base, topic_prefix=f"bench{tag}.", app_id=f"vitrina-bench{tag}",
                           data_dir=Path(mkdtemp(prefix="ranking-bench-")))
        ensure_topics(settings)
        name = f"bench-{tag}"
        worker = start_worker(settings, web_port=pick_free_ports(1)[0], name=name,
                              extra_env={"VITRINA_AGENTS": "ranking", "VITRINA_RANKING_MODEL_NAME": name,
                                         "TF_CPP_MIN_LOG_LEVEL": "2"})
        try:
            viewers, n_titles = SIZES[args.size]
            counts = {"ranking.impressions": 0, "playback": 0}
            producer = EventProducer(settings)
            started = time.monotonic()
            for topic, event in generate(synthetic_titles(n_titles, 7), StreamConfig(viewers=viewers), 7):
                if topic in counts:
                    producer.publish(spec(topic), event)
                    counts[topic] += 1
            producer.flush()
            publish_s = time.monotonic() - started

            def consumed() -> bool:
                return (worker.counter("vitrina_events_in_total", agent="ranking-label-join", topic="ranking.impressions")
                        >= counts["ranking.impressions"]
                        and worker.counter("vitrina_events_in_total", agent="ranking-label-join", topic="playback")
                        >= counts["playback"])

            join_s = _wait(consumed, 900) + publish_s  # from the first published event

            def trained() -> float:
                return sum(worker.counter("vitrina_ranking_train_samples_total", outcome=o)
                           for o in ("trained", "held_out", "duplicate"))

            labelled = worker.counter("vitrina_ranking_labelled_total")
            train_wait_s = _wait(lambda: trained() >= labelled, 600)
            store = ModelStore(settings, name)
            requested_at = datetime.fromisoformat(store.request_checkpoint())
            request_started = time.monotonic()

            def requested_version():
                for record in store.load().versions:
                    if record.created_at >= requested_at and store.manifest(record.version)["stream"][
                            "checkpoint_reason"] == "requested":
                        return record
                return None

            _wait(lambda: requested_version() is not None, 300)
            to_registry_s = time.monotonic() - request_started
            record = requested_version()
            manifest = store.manifest(record.version)
            events = counts["ranking.impressions"] + counts["playback"]
            figures = {
                "size": args.size,
                "events": counts,
                "publish_s": round(publish_s, 2),
                "join_events_per_s": round(events / join_s, 1),
                "labelled_samples": int(labelled),
                "labelled_played": int(worker.counter("vitrina_ranking_labelled_total", played="true")),
                "pending_at_end": int(worker.counter("vitrina_ranking_join_pending")),
                "trainer_caught_up_after_join_s": round(train_wait_s, 2),
                "train_samples_per_s": round(worker.counter("vitrina_ranking_train_samples_per_second"), 1),
                "train_steps": int(worker.counter("vitrina_ranking_train_steps_total")),
                "dropped_by_buffer": int(worker.counter("vitrina_ranking_train_samples_total", outcome="dropped")),
                "export_s_mean": round(worker.counter("vitrina_ranking_export_seconds_sum", phase="export")
                                       / max(1.0, worker.counter("vitrina_ranking_export_seconds_count",
                                                                 phase="export")), 2),
                "publish_s_mean": round(worker.counter("vitrina_ranking_export_seconds_sum", phase="publish")
                                        / max(1.0, worker.counter("vitrina_ranking_export_seconds_count",
                                                                  phase="publish")), 2),
                "checkpoint_request_to_registry_s": round(to_registry_s, 2),
                "versions": len(store.load().versions),
                "requested_version": {"version": record.version, "state": record.state.value,
                                      "metrics": manifest["metrics"], "pxtr": manifest["evaluation"]["pxtr"],
                                      "window": manifest["evaluation"]["window"],
                                      "tflite_bytes": manifest["artifacts"]["tflite_float32"]["bytes"],
                                      "tflite_quant_bytes": manifest["artifacts"]["tflite_dynamic_range"]["bytes"]},
            }
        finally:
            worker.stop()
    print(json.dumps(figures, indent=2))
    write_result("ranking_stream", figures)


if __name__ == "__main__":
    main()
