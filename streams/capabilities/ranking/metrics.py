"""Prometheus metrics of the online ranking pipeline (served on each worker's /metrics)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LABELLED = Counter("vitrina_ranking_labelled_total", "Labelled samples emitted by the label join", ["played"])
JOIN_PENDING = Gauge("vitrina_ranking_join_pending", "Impressions waiting for their label", ["partition"])
JOIN_WATERMARK = Gauge("vitrina_ranking_join_watermark_seconds", "Event-time watermark (epoch s)", ["partition"])
JOIN_REDELIVERED = Counter("vitrina_ranking_join_redelivered_total",
                           "Events skipped because the restored state already holds them", ["input"])
TRAIN_SAMPLES = Counter("vitrina_ranking_train_samples_total", "Samples by what the trainer did with them",
                        ["outcome"])  # trained | held_out | duplicate | dropped (buffer full) | rejected
TRAIN_STEPS = Counter("vitrina_ranking_train_steps_total", "Training steps (mini-batches)")
TRAIN_RATE = Gauge("vitrina_ranking_train_samples_per_second",
                   "Training throughput: samples per second spent in train_step (feature encoding included)")
TRAIN_LOSS = Gauge("vitrina_ranking_train_loss", "Loss of the last mini-batch", ["task"])
BUFFER_SIZE = Gauge("vitrina_ranking_buffer_samples", "Samples waiting in the bounded training buffer")
CHECKPOINTS = Counter("vitrina_ranking_checkpoints_total", "Checkpoints by trigger and outcome", ["reason", "outcome"])
EXPORT_SECONDS = Histogram("vitrina_ranking_export_seconds", "Checkpoint + TFLite export + verification, and publishing",
                           ["phase"], buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
MODEL_VERSION = Gauge("vitrina_model_version_info", "1 for the Production version this worker last published",
                      ["model", "version"])
MODEL_SAMPLES = Gauge("vitrina_ranking_model_samples", "Samples consumed by the trainer (restored across restarts)")
