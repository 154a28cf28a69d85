"""Online training of the multi-task ranking model (GRF) from the event stream (issue 5).

    ranking.impressions --+
                          +--> label join (engine processor, one store per partition) --> ranking.samples
    playback -------------+--> gate samples (engine processor, per-viewer play state) --> gate trainer
    ranking.samples --> forward (key 'ranking') --> ranking.samples.trainer (1 partition)
    ranking.samples.trainer --> trainer (SampleBuffer, train_step in a thread, checkpoints,
                                TFLite export, S3 + registry + Redis pointer) --> models.published

The label join runs on the engine (streams/runtime/engine/): both inputs are co-partitioned sources of
one processor whose per-partition store holds the joiner state (streams/capabilities/ranking/join.py);
the trainer and its funnel stay Faust agents (low volume, one partition). The trainer singleton comes from the one-partition topic (only the
worker holding it trains; on a rebalance the new holder restores the last checkpoint from S3).
"""
from __future__ import annotations

from datetime import datetime, timezone

from faust.types import TP

from infra.logs import get_logger
from processors.ranking.gate_runtime import gate_step
from processors.ranking.labels import viewer_key
from sinks.model_store import PublishOutcome, published_event
from sinks.redis_views import async_client, model_checkpoint_request_key
from streams.runtime.app import app, app_settings
from streams.kafka.codec import default_codec
from streams.runtime.engine.runner import Output
from streams.runtime.engine.service import register
from streams.runtime.engine.store import PartitionStore
from streams.runtime.inbound import dead_letter_failed, decoded_batches, forward, raw_topic
from streams.runtime.metrics import EVENTS_OUT
from streams.runtime.records import Inbound
from streams.capabilities.ranking.join import PartitionJoin
from streams.capabilities.ranking.metrics import JOIN_PENDING, JOIN_REDELIVERED, JOIN_WATERMARK, LABELLED, TRAIN_SAMPLES
from streams.capabilities.ranking.settings import load_ranking_settings
from streams.capabilities.ranking.training import TrainingService, sample_problem
from streams.kafka.topics import full_name, key_of, spec

settings = app_settings()
ranking = load_ranking_settings(settings)
log = get_logger("vitrina.agent.ranking", model=ranking.model_name)
codec = default_codec()

IMPRESSIONS = spec("ranking.impressions")
PLAYBACK = spec("playback")
SAMPLES = spec("ranking.samples")
TRAINER = spec("ranking.samples.trainer")
PUBLISHED = spec("models.published")
TRAINER_KEY = b"ranking"

samples_topic = raw_topic(app, SAMPLES)
trainer_topic = raw_topic(app, TRAINER, partitions=TRAINER.partitions)
published_topic = raw_topic(app, PUBLISHED)


async def _announce(outcome: PublishOutcome) -> None:
    name = outcome.manifest.get("model") or ranking.model_name  # the ranking model or its gate
    event = published_event(name, outcome.manifest, outcome.state, datetime.now(timezone.utc))
    await published_topic.send(key=name.encode(), value=codec.encode(PUBLISHED.schema, event))
    EVENTS_OUT.labels(topic=PUBLISHED.name, agent="ranking-trainer").inc()


training = TrainingService(settings, ranking, _announce)


class LabelJoin:
    """ranking.impressions + playback (co-partitioned by viewer) -> labelled samples on ranking.samples."""

    name = "ranking-label-join"
    sources = (IMPRESSIONS, PLAYBACK)

    def __init__(self) -> None:
        self.joins: dict[int, PartitionJoin] = {}

    def assigned(self, partitions: list[int], stores: dict[int, PartitionStore]) -> None:
        for partition in partitions:
            self.joins[partition] = PartitionJoin.restore(partition, ranking.joiner, stores[partition].items())

    def revoked(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.joins.pop(partition, None)

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: Output) -> None:
        join = self.joins.get(partition)
        if join is None:
            join = self.joins[partition] = PartitionJoin.restore(partition, ranking.joiner, store.items())
        kind = "impression" if events[0].topic == IMPRESSIONS.name else "playback"
        for event in events:
            try:
                applied = join.add(kind, event.offset, event.value)
            except Exception as exc:  # noqa: BLE001 - RankingInputError mostly; one bad event must not stop the join
                await out.failed(event, exc)
                applied = True
            join.mark_applied(kind, event.offset)
            if not applied:
                JOIN_REDELIVERED.labels(input=kind).inc()
        samples = join.expire(ranking.lateness)
        for sample in samples:
            impression = sample.impression
            impression["labels"] = {**impression["labels"], "watch_ms": int(sample.watched_ms)}
            # same partition as the impression (keyed by viewer like both inputs)
            await out.send(SAMPLES.name, codec.encode(SAMPLES.schema, impression), key=key_of(SAMPLES, impression),
                           partition=partition)
            LABELLED.labels(played=str(sample.played).lower()).inc()
        join.persist(store)
        JOIN_PENDING.labels(partition=str(partition)).set(join.joiner.pending_impressions)
        watermark = join.watermark(ranking.lateness)
        if watermark is not None:
            JOIN_WATERMARK.labels(partition=str(partition)).set(watermark.timestamp())

    async def tick(self, out: Output, stores: dict[int, PartitionStore]) -> None:
        return None


register(LabelJoin())


@app.agent(samples_topic, name="ranking-samples-to-trainer")
async def funnel_samples(stream):
    async for batch in decoded_batches(app, stream, SAMPLES, "ranking-samples-to-trainer"):
        for event in batch:
            await forward(trainer_topic, TRAINER_KEY, event)
        EVENTS_OUT.labels(topic=TRAINER.name, agent="ranking-samples-to-trainer").inc(len(batch))


@app.agent(trainer_topic, name="ranking-trainer")
async def train(stream):
    async for batch in decoded_batches(app, stream, TRAINER, "ranking-trainer", max_batch=4096):
        accepted = []
        for event in batch:
            problem = sample_problem(event.value, ranking.features)
            if problem is not None:
                TRAIN_SAMPLES.labels(outcome="rejected").inc()
                await dead_letter_failed(app, event, "ranking-trainer", problem)
                continue
            accepted.append(event.value)
        await training.offer(accepted)


class GateSamples:
    """playback -> gate samples (a play's START features + whether it stalled, GRF stage 1) for the gate
    model trained beside the ranking model. Per-viewer state (open plays, recent outcomes) lives in the
    partition's store (``gate_runtime.gate_step``), so a restart or a rebalance loses no play in
    progress. Only the worker holding the trainer partition trains: with several workers, the gate
    learns from the playback partitions of that worker (the others keep their state current)."""

    name = "ranking-gate-samples"
    sources = (PLAYBACK,)

    async def process(self, partition: int, store: PartitionStore, events: list[Inbound], out: Output) -> None:
        states: dict[str, dict] = {}
        samples = []
        for event in events:
            try:
                viewer = viewer_key(event.value)
                state = states[viewer] if viewer in states else store.get(viewer)
                state, sample, changed = gate_step(state, event.value)
            except Exception as exc:  # noqa: BLE001 - RankingInputError mostly: dead-letter the event
                await out.failed(event, exc)
                continue
            if changed:
                states[viewer] = state
            if sample is not None:
                samples.append(sample)
        for viewer, state in states.items():
            store[viewer] = state
        if samples and training.active:
            await training.offer_gate(samples)

    async def tick(self, out: Output, stores: dict[int, PartitionStore]) -> None:
        return None


if ranking.gate:
    register(GateSamples())


@app.timer(interval=2.0)
async def checkpoint_requests() -> None:
    """`vitrina model checkpoint` sets a Redis flag; the worker holding the trainer takes it."""
    if not training.active or training.core is None:
        return
    try:
        requested = await _redis().getdel(model_checkpoint_request_key(ranking.model_name))
    except Exception as exc:  # noqa: BLE001 - Redis away: try again at the next tick
        log.warning("checkpoint_request_check_failed", error=repr(exc))
        return
    if requested:
        log.info("checkpoint_requested", requested_at=requested)
        training.request_checkpoint("requested")


_redis_client = None


def _redis():
    global _redis_client
    if _redis_client is None:
        _redis_client = async_client(settings)
    return _redis_client


_TRAINER_TOPIC = full_name(settings, TRAINER.name)


@app.on_partitions_assigned.connect
async def _on_assigned(sender, assigned: set[TP], **kwargs) -> None:
    training.active = any(tp.topic == _TRAINER_TOPIC for tp in assigned)


@app.on_partitions_revoked.connect
async def _on_revoked(sender, revoked: set[TP], **kwargs) -> None:
    if any(tp.topic == _TRAINER_TOPIC for tp in revoked):
        training.active = False
