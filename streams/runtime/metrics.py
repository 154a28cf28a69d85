"""Prometheus metrics shared by agents (served on each worker's /metrics)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("vitrina_events_in_total", "Records consumed", ["topic", "agent"])
EVENTS_OUT = Counter("vitrina_events_out_total", "Records produced", ["topic", "agent"])
DEAD_LETTERS = Counter("vitrina_dead_letters_total", "Records sent to a dead-letter topic", ["source", "agent", "reason"])
VIEW_WRITES = Counter("vitrina_view_writes_total", "Redis view writes", ["view"])
BATCH_SECONDS = Histogram("vitrina_batch_seconds", "Processing time per batch", ["agent"],
                          buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CONSUMER_LAG = Gauge("vitrina_consumer_lag", "Records behind the end of the log, per consumer group (the Faust app's "
                     "and each engine processor's)", ["group", "topic", "partition"])
DEAD_LETTER_WRITE_FAILURES = Counter("vitrina_dead_letter_write_failures_total",
                                     "Dead-letter writes that failed and are retried (the record is not committed "
                                     "until its letter is written)", ["source", "agent"])
UNTRUSTED_HEADERS = Counter("vitrina_untrusted_headers_total",
                            "Internal vitrina headers found on a topic vitrina does not write them to, ignored",
                            ["topic", "header"])
