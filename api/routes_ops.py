"""Ops status (ops key, an ops token or Basic auth with the ops key; api/auth.py): GET /ops/status (a self-contained HTML page) and GET /ops/status.json (what it shows).

The JSON has the stack's health (broker metadata, Redis PING, S3 buckets), the consumer lag of the
app's group per topic and partition (verified ends, see streams/ops/lag.py), the last dead letters of each
dead-letter topic, and the ranking model's Production manifest and registry. Unlike the /v1 routes this
reads Kafka and S3, so the blocking calls run in a thread and the answer is cached for a few seconds.
The page's showcase preview calls /v1/showcase from the browser.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from api.app import REDIS, SETTINGS, int_param, json_response
from api.auth import require_ops
from infra.logs import get_logger
from infra.settings import Settings
from sinks.redis_views import model_current_key, model_registry_key

PAGE = Path(__file__).parent / "static" / "status.html"
# Worker metrics shown on the page: family -> how to summarise it (samples summed over labels).
WORKER_METRICS = ("vitrina_events_in_total", "vitrina_events_out_total", "vitrina_dead_letters_total",
                  "vitrina_view_writes_total", "vitrina_consumer_lag", "vitrina_batch_seconds",
                  "vitrina_upload_transcode_queue", "vitrina_upload_transcodes_running", "vitrina_upload_transcode_seconds",
                  "vitrina_ranking_train_samples_per_second", "vitrina_ranking_train_samples_total",
                  "vitrina_model_version_info", "vitrina_replay_suppressed_total")
CACHE_S = 5.0
MODELS = ("ranking",)
_cache: dict[tuple, tuple[float, Any]] = {}
log = get_logger("vitrina.api.ops")


def problem(component: str, exc: BaseException) -> str:
    """What the page shows of a failure: no exception text (it can carry hosts, paths, credentials in
    URLs), a reference to the API log line that has it."""
    import uuid
    ref = uuid.uuid4().hex[:12]
    log.warning("ops_status_check_failed", component=component, ref=ref, error=f"{type(exc).__name__}: {exc}")
    return f"{component} check failed (see the API log, ref {ref})"


def broker_health(settings: Settings) -> dict:
    from streams.kafka.topics import admin_client

    try:
        metadata = admin_client(settings).list_topics(timeout=5)
        return {"name": "broker", "ok": True,
                "detail": f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s) at {settings.kafka_bootstrap}"}
    except Exception as exc:  # noqa: BLE001 - the page reports it
        return {"name": "broker", "ok": False, "detail": problem("broker", exc)}


def s3_health(settings: Settings) -> dict:
    from infra.object_store import app_buckets, object_store

    try:
        client = object_store(settings, connect_timeout=3, read_timeout=5, retries=0)
        missing = [b for b in app_buckets(settings) if not client.bucket_exists(b)]
        return {"name": "s3", "ok": not missing,
                "detail": f"{settings.s3_endpoint}: " + (f"missing bucket(s) {missing}" if missing else "buckets present")}
    except Exception as exc:  # noqa: BLE001
        return {"name": "s3", "ok": False, "detail": problem("s3", exc)}


def worker_urls(settings: Settings) -> list[str]:
    """``settings.status_workers`` (``VITRINA_STATUS_WORKERS``: comma-separated host:port of workers' web
    servers), default the local one."""
    raw = settings.status_workers or f"127.0.0.1:{settings.worker_web_port}"
    return [f"http://{hostport.strip()}/metrics" for hostport in raw.split(",") if hostport.strip()]


def worker_metrics(url: str) -> dict:
    """A worker's Prometheus page summarised: per family the sum of its samples (histograms: count, sum,
    mean), and the label sets of info-style gauges (model versions)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            text = response.read().decode()
    except OSError as exc:
        return {"url": url, "ok": False, "detail": problem("worker metrics", exc), "metrics": {}}
    metrics: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in {m.removesuffix("_total") for m in WORKER_METRICS} and family.name not in WORKER_METRICS:
            continue
        if family.type == "histogram":
            count = sum(s.value for s in family.samples if s.name.endswith("_count"))
            total = sum(s.value for s in family.samples if s.name.endswith("_sum"))
            metrics[family.name] = {"count": count, "sum": round(total, 3),
                                    "mean": round(total / count, 4) if count else None}
        elif family.name.endswith("_info") or family.name == "vitrina_model_version_info":
            metrics[family.name] = [s.labels for s in family.samples if s.value]
        else:
            metrics[family.name] = round(sum(s.value for s in family.samples
                                             if not s.name.endswith("_created")), 3)
    return {"url": url, "ok": True, "detail": "", "metrics": metrics}


def lag_rows(settings: Settings, group: str) -> list[dict]:
    """Per topic partition, the slowest of the app's consumer groups that committed there (the Faust app's
    and each engine processor's, ``<app id>.<processor>``), with its name: several processors read
    playback, each at its own pace. Another ``group`` (?group=) is shown alone."""
    from streams.kafka.topics import TOPICS
    from streams.ops.lag import group_lag
    from streams.runtime.engine import app_groups

    groups = app_groups(settings.app_id) if group == settings.app_id else [group]
    slowest: dict[tuple[str, int], dict] = {}
    ends: dict[tuple[str, int], int] = {}  # each partition's end verified once, for every group
    for name in groups:
        for row in group_lag(settings, name, [t.name for t in TOPICS], only_committed=True, known_ends=ends):
            entry = {**row.as_dict(), "group": name}
            known = slowest.get((row.topic, row.partition))
            if known is None or entry["lag"] > known["lag"]:
                slowest[(row.topic, row.partition)] = entry
    return [slowest[k] for k in sorted(slowest)]


def recent_dead_letters(settings: Settings, per_topic: int) -> dict[str, list[dict]]:
    """The last ``per_topic`` letters of every dead-letter topic that has any (newest first)."""
    from confluent_kafka import TopicPartition

    from streams.kafka.codec import DecodeError, default_codec
    from streams.ops.dlq import dlq_topics
    from streams.kafka.offsets import end_offsets, probe_consumer
    from streams.kafka.topics import full_name

    codec = default_codec()
    consumer = probe_consumer(settings)
    out: dict[str, list[dict]] = {}
    try:
        existing = set(consumer.list_topics(timeout=10).topics)
        names = {topic: full_name(settings, topic) for topic in dlq_topics() if full_name(settings, topic) in existing}
        ends = end_offsets(consumer, [(name, 0) for name in names.values()])
        for topic, name in names.items():
            end = ends[(name, 0)]
            if end == 0:
                continue
            start = max(0, end - per_topic)
            consumer.assign([TopicPartition(name, 0, start)])
            letters: list[dict] = []
            deadline = time.monotonic() + 10
            while len(letters) < end - start and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                try:
                    letter = codec.decode(message.value(), "vitrina.DeadLetter")
                except DecodeError as exc:
                    letter = {"reason_code": "UNREADABLE_LETTER", "error": exc.message}
                letters.append({"offset": message.offset(), "source_topic": letter.get("source_topic"),
                                "source_partition": letter.get("source_partition"),
                                "source_offset": letter.get("source_offset"), "agent": letter.get("agent"),
                                "reason_code": letter.get("reason_code"), "error": letter.get("error"),
                                "attempts": letter.get("attempts"),
                                "key": (letter.get("key") or b"").decode("utf-8", "replace"),
                                "failed_at": str(letter.get("failed_at") or "")})
            out[topic] = sorted(letters, key=lambda l: -l["offset"])
    finally:
        consumer.close()
    return out


async def models(redis) -> dict[str, dict]:
    out = {}
    for name in MODELS:
        current, registry = await redis.mget(model_current_key(name), model_registry_key(name))
        document = json.loads(registry) if registry else None
        versions = [{"version": v.get("version"), "state": v.get("state")} for v in (document or {}).get("versions", [])]
        out[name] = {"current": json.loads(current) if current else None,
                     "revision": (document or {}).get("revision"), "versions": versions}
    return out


async def _cached(key: tuple, compute) -> Any:
    hit = _cache.get(key)
    if hit and time.monotonic() - hit[0] < CACHE_S:
        return hit[1]
    value = await asyncio.get_running_loop().run_in_executor(None, compute)
    _cache[key] = (time.monotonic(), value)
    return value


def register(routes: web.RouteTableDef) -> None:
    @routes.get("/ops/status")
    async def status_page(request: web.Request) -> web.Response:
        require_ops(request)
        return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")

    @routes.get("/ops/status.json")
    async def status(request: web.Request) -> web.Response:
        require_ops(request)
        settings: Settings = request.app[SETTINGS]
        letters_per_topic = int_param(request, "dead_letters", 5, 1, 100)
        group = request.query.get("group") or settings.app_id
        redis = request.app[REDIS]
        started = time.monotonic()
        try:
            await asyncio.wait_for(redis.ping(), 3.0)  # the client retries for ~30 s; the page must not wait
            redis_row = {"name": "redis", "ok": True, "detail": f"PING OK ({settings.redis_url.rsplit('@', 1)[-1]})"}
        except Exception as exc:  # noqa: BLE001
            redis_row = {"name": "redis", "ok": False, "detail": problem("redis", exc)}
        broker, s3 = await asyncio.gather(_cached(("broker",), lambda: broker_health(settings)),
                                          _cached(("s3",), lambda: s3_health(settings)))
        payload: dict[str, Any] = {"health": [broker, redis_row, s3], "group": group}
        for name, compute in (("lag", lambda: lag_rows(settings, group)),
                              ("dead_letters", lambda: recent_dead_letters(settings, letters_per_topic))):
            if not broker["ok"]:
                payload[name], payload[f"{name}_error"] = ([] if name == "lag" else {}), "broker unavailable"
                continue
            try:
                payload[name] = await _cached((name, group, letters_per_topic), compute)
            except Exception as exc:  # noqa: BLE001
                payload[name], payload[f"{name}_error"] = ([] if name == "lag" else {}), problem(name, exc)
        payload["workers"] = await _cached(("workers",), lambda: [worker_metrics(u) for u in worker_urls(settings)])
        try:
            payload["models"] = await models(redis) if redis_row["ok"] else {}
        except Exception as exc:  # noqa: BLE001
            payload["models"], payload["models_error"] = {}, problem("models", exc)
        payload["seconds"] = round(time.monotonic() - started, 3)
        return json_response(payload)
