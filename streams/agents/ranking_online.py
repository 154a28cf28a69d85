"""Per-version online metrics of the serving ranking models (issue 14).

    ranking.samples --> ranking-online-metrics: counters per model version in Redis
                        (streams/capabilities/ranking/online.py)
    timer (every VITRINA_RANKING_ONLINE_EVERY_S, default 30 s, one worker at a time)
                    --> the totals appended to each version's ``online`` history in the registry

Each sample is counted once (offset markers beside the counters, streams/capabilities/ranking/online.py).
Only samples of impressions served by a model version (``model_version`` set: showcase shelves the
builder re-ranked) count; the rates (evr/lvr/svr/fpr) and the AUC of the served score against the
live labels are what `vitrina model list` shows next to the offline AUCs.
"""
from __future__ import annotations

from infra.logs import get_logger
from sinks.redis_views import async_client
from streams.capabilities.ranking.online import OnlineMetricsSink
from streams.capabilities.ranking.settings import load_ranking_settings
from streams.kafka.topics import spec
from streams.runtime import replay_mode
from streams.runtime.app import app, app_settings
from streams.runtime.inbound import decoded_batches, raw_topic
from streams.runtime.metrics import VIEW_WRITES

settings = app_settings()
ranking = load_ranking_settings(settings)
log = get_logger("vitrina.agent.ranking_online", model=ranking.model_name)
SAMPLES = spec("ranking.samples")
EVERY_S = ranking.online_every_s

samples_topic = raw_topic(app, SAMPLES)


def _store():
    from sinks.model_store import ModelStore
    return ModelStore(settings, ranking.model_name)


_sink: OnlineMetricsSink | None = None


def sink() -> OnlineMetricsSink:
    global _sink
    if _sink is None:
        _sink = OnlineMetricsSink(async_client(settings), ranking.model_name, _store, every_s=EVERY_S)
    return _sink


@app.agent(samples_topic, name="ranking-online-metrics")
async def online_metrics(stream):
    async for batch in decoded_batches(app, stream, SAMPLES, "ranking-online-metrics"):
        if replay_mode.active():  # not a view: a replay or rebuild must not count the samples again
            continue
        counted = await sink().add_records([(event.partition, event.offset, event.value) for event in batch])
        if counted:
            VIEW_WRITES.labels(view="ranking_online").inc(counted)


@app.timer(interval=max(1.0, EVERY_S / 3))
async def online_snapshot() -> None:
    if replay_mode.active():
        return
    try:
        await sink().snapshot()
    except Exception as exc:  # noqa: BLE001 - Redis/S3 away: the next tick tries again
        log.warning("online_snapshot_failed", error=repr(exc))
