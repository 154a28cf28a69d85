"""Online ranking pipeline on the real stack: label join -> ranking.samples -> trainer -> export ->
S3 + registry + Redis pointer -> device client.

The module runs its own worker (own topic prefix, consumer group, data dir and model name, only
the ranking agents) so the schedule can be driven by a small samples threshold and the event
times of the hand-made case are not disturbed by other tests' streams.
"""
from __future__ import annotations

from support.waiting import wait_for as _wait_for

import json
import os
import sys
import subprocess
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.ranking import labelled_samples

from api.auth import dev_client
from infra.ports import pick_free_ports
from infra.settings import to_env
from processors.ranking.artifacts import FLOAT_KIND, QUANT_KIND, sha256_hex
from processors.ranking.errors import ModelIntegrityError
from processors.ranking.labels import JoinerConfig
from processors.ranking.registry import ModelState
from processors.ranking.scoring import final_scores
from demo.ranking_synthetic import SyntheticConfig, generate
from processors.ranking.trainer import is_holdout
from sinks.device_client import DeviceModelClient, RedisManifestSource
from sinks.model_store import ModelStore
from sinks.redis_views import model_current_key
from streams.kafka.codec import default_codec
from streams.kafka.tail import tail
from streams.kafka.producer import EventProducer
from streams.capabilities.ranking.join import LabelJoinState
from streams.ops.supervisor import start_api, start_worker
from streams.kafka.topics import ensure_topics, spec

VITRINA = str(Path(sys.executable).parent / "vitrina")  # the venv running the tests (not activated in CI)
HOLDOUT_EVERY = 4
EVERY_SAMPLES = 1000
T0 = datetime(2024, 2, 1, tzinfo=timezone.utc)


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.5):
    return _wait_for(predicate, what, timeout_s, poll_s)


class Pipeline:
    def __init__(self, settings, env: dict[str, str], name: str) -> None:
        self.settings = settings
        self.env = env
        self.name = name
        self.store = ModelStore(settings, name)
        self.producer = EventProducer(settings)
        self.worker = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        # generous: a restart recovers the join table from its changelog first
        self.worker = start_worker(self.settings, web_port=pick_free_ports(1)[0], name=f"{self.name}-{self.starts}",
                                   extra_env=self.env, ready_timeout_s=400)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def counter(self, metric: str, **labels: str) -> float:
        return self.worker.counter(metric, **labels)

    def samples(self) -> list[dict]:
        return [r.value for r in tail(self.settings, default_codec(), "ranking.samples") if r.value]

    def published(self) -> list[dict]:
        return [r.value for r in tail(self.settings, default_codec(), "models.published")
                if r.value and r.value["model"] == self.name]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([VITRINA, "model", *args, "--name", self.name], capture_output=True, text=True,
                              timeout=120, env={**os.environ, **to_env(self.settings), "VITRINA_LOG_LEVEL": "error"})

    def version_where(self, predicate, timeout_s: float, what: str) -> dict:
        def find():
            for record in sorted(self.store.load().versions, key=lambda v: v.created_at):
                manifest = self.store.manifest(record.version)
                if predicate(manifest):
                    return manifest
            return None
        return wait_for(find, timeout_s, what, poll_s=1.0)


@pytest.fixture(scope="module")
def pipeline(topics, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    settings = replace(topics, topic_prefix=f"rk{tag}.", app_id=f"vitrina-rk{tag}",
                       data_dir=tmp_path_factory.mktemp(f"rk{tag}"))
    ensure_topics(settings)
    env = {
        "VITRINA_AGENTS": "ranking",
        "VITRINA_RANKING_MODEL_NAME": f"rk-{tag}",
        "VITRINA_RANKING_MODEL": "tiny",
        "VITRINA_CHECKPOINT_EVERY_S": "0",
        "VITRINA_CHECKPOINT_EVERY_SAMPLES": str(EVERY_SAMPLES),
        "VITRINA_CHECKPOINT_MIN_WALL_S": "0",
        "VITRINA_LABEL_LATENESS_S": "60",
        "VITRINA_RANKING_LEARNING_RATE": "0.01",
        "VITRINA_RANKING_BATCH": "64",
        "VITRINA_RANKING_HOLDOUT_EVERY": str(HOLDOUT_EVERY),
        "VITRINA_RANKING_PROMOTION_TOLERANCE": "0.02",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    pipe = Pipeline(settings, env, f"rk-{tag}")
    pipe.start()
    try:
        yield pipe
    finally:
        pipe.stop()
        pipe.producer.flush()
        pipe.producer = None  # no librdkafka reconnect noise after the stack stops


def _impression(viewer: str, item: str, position: int, at: datetime, duration_ms: int) -> dict:
    return {
        "impression_id": f"{viewer}-{item}-{position}-{uuid.uuid4().hex[:6]}", "request_id": f"req-{viewer}",
        "user_id": viewer, "device_id": f"d-{viewer}", "device_type": "TV", "item_id": item, "position": position,
        "surface": "HOME", "recent_watched": ["seen-1", "seen-2"],
        "pxtr": {"evr": 0.5, "lvr": 0.3, "svr": 0.2, "fpr": 0.1},
        "context": {"network_kbps": 8000, "device_score": 0.7, "cached_ratio": 0.1, "item_duration_ms": duration_ms,
                    "hour_of_day": at.hour},
        "labels": None, "event_time": at,
    }


def _play(viewer: str, session: str, item: str, kind: str, position_ms: int, at: datetime, duration_ms: int) -> dict:
    return {
        "event_id": uuid.uuid4().hex, "session_id": session, "user_id": viewer, "device_id": f"d-{viewer}",
        "device_type": "TV", "os": "tizen 7", "app_version": "4.1.2", "item_id": item, "event_type": kind,
        "position_ms": position_ms, "duration_ms": duration_ms, "network_kbps": 8000, "buffered_ratio": 0.5,
        "stall_ms": 0, "bitrate_kbps": 6000, "event_time": at,
    }


def test_join_state_snapshot_restores_identical_labels():
    """Pure check of the durable-state path: a crash after a persisted batch, with the uncommitted tail
    of the input redelivered, yields exactly the labels of an uninterrupted run."""
    stream = generate(SyntheticConfig(seed=3, users=40, items=80, clusters=4, requests=400))
    events = list(stream.events())
    every = 97

    def run(crash_after_batch: int | None) -> dict[str, list]:
        table: dict = {}
        state = LabelJoinState(JoinerConfig(), timedelta(minutes=1), table)
        out: dict[str, list] = {}
        offset = 0
        crashed = False
        while offset < len(events):
            kind, event = events[offset]
            state.add(kind, 0, offset, event)
            state.mark_applied(kind, 0, offset)
            if offset % every == every - 1:
                for sample in state.expire(0):
                    out.setdefault(sample.impression["impression_id"], []).append(sample.impression["labels"])
                state.persist(0)
                if not crashed and offset // every == crash_after_batch:
                    crashed = True  # restart from the persisted table; the last 40 events are delivered again
                    state = LabelJoinState(JoinerConfig(), timedelta(minutes=1), json.loads(json.dumps(table)))
                    offset -= 40
            offset += 1
        return out

    uninterrupted = run(None)
    assert len(uninterrupted) > 2000 and all(len(v) == 1 for v in uninterrupted.values())
    assert run(len(events) // every // 2) == uninterrupted


def test_hand_made_labels_survive_a_worker_crash(pipeline):
    viewer = f"u-hand-{uuid.uuid4().hex[:6]}"
    minute = 60_000
    shown = {item: _impression(viewer, item, pos, T0, dur)
             for pos, (item, dur) in enumerate([("A", 10 * minute), ("B", 10 * minute), ("C", 10 * minute),
                                                ("D", 20_000)])}
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    plays = [
        _play(viewer, "s1", "B", "START", 0, at(10), 10 * minute),
        _play(viewer, "s1", "B", "HEARTBEAT", 30_000, at(40), 10 * minute),
        _play(viewer, "s1", "B", "STOP", 90_000, at(100), 10 * minute),  # 90 s: effective + long view
        _play(viewer, "s1", "C", "START", 0, at(120), 10 * minute),
        _play(viewer, "s1", "C", "STOP", 2_000, at(122), 10 * minute),  # 2 s: short view
        _play(viewer, "s1", "D", "START", 0, at(130), 20_000),
        _play(viewer, "s1", "D", "COMPLETE", 20_000, at(150), 20_000),  # finished a 20 s clip
        _play(viewer, "s1", "E", "START", 0, at(160), 10 * minute),  # never shown: no sample
        _play(viewer, "s1", "E", "STOP", 50_000, at(210), 10 * minute),
    ]
    pipeline.producer.publish_many(spec("ranking.impressions"), list(shown.values()))
    pipeline.producer.publish_many(spec("playback"), plays)
    pipeline.producer.flush()
    wait_for(lambda: pipeline.counter("vitrina_events_in_total", agent="ranking-label-join", topic="playback") >= len(plays)
             and pipeline.counter("vitrina_events_in_total", agent="ranking-label-join", topic="ranking.impressions") >= len(shown),
             90, "the join to consume the hand-made events")
    time.sleep(2)
    assert pipeline.counter("vitrina_ranking_labelled_total") == 0  # window still open at the watermark

    pipeline.worker.kill()  # crash (kill -9): state comes back from the table, input offsets may be redelivered
    pipeline.start()

    later = T0 + timedelta(hours=3)  # both inputs move past the window: the watermark closes it
    pipeline.producer.publish(spec("ranking.impressions"), _impression(viewer, "Z", 0, later, 10 * minute))
    pipeline.producer.publish(spec("playback"), _play(viewer, "s2", "Z", "START", 0, later, 10 * minute))
    pipeline.producer.flush()

    ids = {s["impression_id"]: item for item, s in shown.items()}
    got = wait_for(lambda: (lambda out: out if len(out) >= 4 else None)(
        [s for s in pipeline.samples() if s["impression_id"] in ids]), 120, "4 labelled samples")
    time.sleep(2)
    got = [s for s in pipeline.samples() if s["impression_id"] in ids]
    assert len(got) == 4, "each impression is labelled exactly once"
    labels = {ids[s["impression_id"]]: s["labels"] for s in got}
    as_tuple = lambda lab: (lab["evr"], lab["lvr"], lab["svr"], lab["fpr"], lab["watch_ms"])  # noqa: E731
    assert as_tuple(labels["A"]) == (False, False, False, False, 0)
    assert as_tuple(labels["B"]) == (True, True, False, False, 90_000)
    assert as_tuple(labels["C"]) == (False, False, True, False, 2_000)
    assert as_tuple(labels["D"]) == (True, True, False, True, 20_000)
    assert all(s["item_id"] == ids[s["impression_id"]] and s["pxtr"]["evr"] == pytest.approx(0.5) for s in got)
    impressions_partition = {r.partition for r in tail(pipeline.settings, default_codec(), "ranking.impressions")
                             if r.value["impression_id"] in ids}
    sample_partition = {r.partition for r in tail(pipeline.settings, default_codec(), "ranking.samples")
                        if r.value["impression_id"] in ids}
    assert sample_partition == impressions_partition  # keyed and partitioned like the impressions


def _publish_synthetic(pipeline: Pipeline, seed: int, requests: int) -> int:
    stream = generate(SyntheticConfig(seed=seed, users=80, items=150, clusters=4, requests=requests))
    for kind, event in stream.events():
        pipeline.producer.publish(spec("ranking.impressions" if kind == "impression" else "playback"), event)
    pipeline.producer.flush()
    return len(stream.impressions)


def _settled(pipeline: Pipeline, quiet_s: float = 4.0, timeout_s: float = 240) -> int:
    """Wait until every labelled sample was consumed by the trainer and no new label came for ``quiet_s``."""
    def trained() -> float:
        return sum(pipeline.counter("vitrina_ranking_train_samples_total", outcome=o) for o in ("trained", "held_out"))

    deadline = time.monotonic() + timeout_s
    previous = -1.0
    while time.monotonic() < deadline:
        labelled = pipeline.counter("vitrina_ranking_labelled_total")
        if labelled and labelled == previous and trained() >= labelled:
            return int(trained())
        previous = labelled
        time.sleep(quiet_s)
    raise AssertionError("labelled samples did not settle")


def test_first_checkpoint_is_exported_verified_published_and_promoted(pipeline):
    _publish_synthetic(pipeline, seed=11, requests=350)
    total = _settled(pipeline)
    assert total >= 2 * EVERY_SAMPLES
    # the gate model's samples come from the same playback (agent ranking-gate-samples, trainer's worker)
    wait_for(lambda: pipeline.counter("vitrina_events_in_total", topic="playback", agent="ranking-gate-samples") > 0,
             60, "the gate sample agent to read playback")

    first = pipeline.version_where(lambda m: True, 120, "a first exported version")
    assert first["stream"]["checkpoint_reason"] == "samples" and first["stream"]["samples_seen"] >= EVERY_SAMPLES
    registry = pipeline.store.load()
    record = registry.get(first["version"])
    assert [(t.to_state.value, t.reason) for t in record.transitions][:2] == [
        ("STAGING", "staged"), ("PRODUCTION", "no_production_history")]
    # verified TFLite twins, uploaded, sha256 as in the manifest
    assert first["artifacts"][FLOAT_KIND]["max_abs_diff"] <= 1e-4
    assert first["artifacts"][QUANT_KIND]["max_abs_diff"] <= 0.05
    for kind, file_name in ((FLOAT_KIND, "model.tflite"), (QUANT_KIND, "model_quant.tflite")):
        key = f"{pipeline.name}/{first['version']}/{file_name}"
        assert first["artifacts"][kind]["key"] == key
        assert sha256_hex(pipeline.store.get_bytes(key)) == first["artifacts"][kind]["sha256"]
    assert {e["name"] for e in first["input_signature"]} >= {"item_id", "recent_ids", "pxtr"}
    assert set(first["metrics"]) == {"evr", "lvr", "svr", "fpr"} and first["evaluation"]["window"] > 0
    # the pointer follows the registry's production version
    pointer = json.loads(pipeline.store.redis.get(model_current_key(pipeline.name)))
    assert pointer["version"] == registry.production().version and pointer["state"] == "PRODUCTION"
    events = wait_for(lambda: [e for e in pipeline.published() if e["version"] == first["version"]], 30,
                      "models.published for the first version")
    assert events[0]["state"] == "PRODUCTION" and events[0]["sha256"] == first["artifacts"][FLOAT_KIND]["sha256"]
    assert events[0]["tflite_key"] == first["artifacts"][FLOAT_KIND]["key"]

    # an operator's checkpoint request closes the window on exactly what was trained so far
    assert pipeline.cli("checkpoint").returncode == 0
    forced = pipeline.version_where(lambda m: m["stream"]["checkpoint_reason"] == "requested", 60,
                                    "the requested checkpoint")
    assert forced["stream"]["samples_seen"] == total


def test_worse_candidate_is_not_promoted(pipeline):
    production = pipeline.store.load().production().version
    seen_before = max(pipeline.store.manifest(v.version)["stream"]["samples_seen"]
                      for v in pipeline.store.load().versions)
    # a poisoned stretch of the stream: trained rows carry inverted labels, held-out rows the truth
    poisoned = []
    for sample in list(labelled_samples(requests=400, seed=21))[:EVERY_SAMPLES]:
        sample = {**sample, "impression_id": f"p2-{uuid.uuid4().hex}"}
        if not is_holdout(sample, HOLDOUT_EVERY):
            sample["labels"] = {task: not value for task, value in sample["labels"].items()}
        poisoned.append({**sample, "labels": {**sample["labels"], "watch_ms": 0}})
    pipeline.producer.publish_many(spec("ranking.samples"), poisoned)
    pipeline.producer.flush()
    candidate = pipeline.version_where(lambda m: m["stream"]["samples_seen"] == seen_before + EVERY_SAMPLES, 180,
                                       "the checkpoint after the poisoned samples")
    registry = pipeline.store.load()
    record = registry.get(candidate["version"])
    assert record.state.value == "ARCHIVED"
    reason = record.transitions[-1].reason
    assert "dropped" in reason, reason
    assert registry.production().version == production
    assert json.loads(pipeline.store.redis.get(model_current_key(pipeline.name)))["version"] == production
    # the production model was evaluated on the candidate's window too (KION: its last N evaluations)
    assert registry.get(production).evaluations[-1].at == record.transitions[-1].at
    events = wait_for(lambda: [e for e in pipeline.published() if e["version"] == candidate["version"]], 30,
                      "models.published for the rejected candidate")
    assert events[0]["state"] == "ARCHIVED"


def test_operator_promote_then_rollback_restores_previous_version_and_pointer(pipeline):
    registry = pipeline.store.load()
    production = registry.production().version
    rejected = sorted(registry.in_state(ModelState.ARCHIVED), key=lambda v: v.created_at)[-1].version
    done = pipeline.cli("promote", rejected)
    assert done.returncode == 0, done.stderr
    assert json.loads(pipeline.store.redis.get(model_current_key(pipeline.name)))["version"] == rejected
    back = pipeline.cli("rollback")
    assert back.returncode == 0, back.stderr
    pointer = json.loads(pipeline.store.redis.get(model_current_key(pipeline.name)))
    assert pointer["version"] == production and pointer["promotion_reason"] == "rollback"
    assert pipeline.store.load().get(rejected).state.value == "ARCHIVED"
    states = [(e["version"], e["state"]) for e in pipeline.published()][-2:]
    assert states == [(rejected, "PRODUCTION"), (production, "PRODUCTION")]


def _pool(n: int = 24):
    samples = list(labelled_samples(requests=400, seed=21))
    first = samples[0]
    request = {k: first[k] for k in ("user_id", "device_id", "device_type", "surface", "recent_watched")}
    request["context"] = {k: v for k, v in first["context"].items() if k != "item_duration_ms"}
    candidates, seen = [], set()
    for s in samples:
        if s["item_id"] not in seen:
            seen.add(s["item_id"])
            candidates.append({"item_id": s["item_id"], "pxtr": s["pxtr"],
                               "item_duration_ms": s["context"]["item_duration_ms"]})
        if len(candidates) == n:
            return request, candidates
    raise AssertionError("not enough distinct items")


def test_device_client_downloads_checks_sha256_and_ranks_24(pipeline, tmp_path):
    api = start_api(pipeline.settings, port=pick_free_ports(1)[0], name=f"api-{pipeline.name}")
    try:
        client = DeviceModelClient(pipeline.settings, dev_client(api.settings, api.base_url), pipeline.name,
                                   cache_dir=tmp_path / "cache")
        ranker = client.refresh()
        production = pipeline.store.load().production().version
        assert ranker.version == production
        request, candidates = _pool(24)
        ranked = client.rank(request, candidates)
        assert len(ranked) == 24 and {r.item_id for r in ranked} == {c["item_id"] for c in candidates}
        scores = [r.score for r in ranked]
        assert scores == sorted(scores, reverse=True)
        from processors.ranking.features import candidate_impressions
        expected = final_scores(ranker.predict(candidate_impressions(request, candidates)))
        assert sorted(expected.tolist(), reverse=True) == pytest.approx(scores)
        assert [r.item_id for r in client.rank(request, candidates, top_k=5)] == [r.item_id for r in ranked[:5]]
        # the backend's Redis source gives the same manifest
        assert RedisManifestSource(pipeline.settings).current_model(pipeline.name)["version"] == production

        # tampered bytes in object storage: rejected, nothing cached, the running model is kept
        key = client.manifest["artifacts"][FLOAT_KIND]["key"]
        original = pipeline.store.get_bytes(key)
        tampered = bytearray(original)
        tampered[len(tampered) // 2] ^= 0xFF
        pipeline.store.put_bytes(key, bytes(tampered))
        try:
            fresh = DeviceModelClient(pipeline.settings, dev_client(api.settings, api.base_url), pipeline.name,
                                      cache_dir=tmp_path / "cache2")
            with pytest.raises(ModelIntegrityError) as rejected:
                fresh.refresh()
            assert rejected.value.code == "sha256_mismatch"
            assert fresh.ranker is None and not (tmp_path / "cache2").exists()
        finally:
            pipeline.store.put_bytes(key, original)
        assert client.rank(request, candidates, top_k=1)[0].item_id == ranked[0].item_id
    finally:
        api.stop()


def test_trainer_restores_its_checkpoint_after_a_restart(pipeline):
    latest = max(pipeline.store.load().versions, key=lambda v: v.created_at)
    seen = pipeline.store.manifest(latest.version)["stream"]["samples_seen"]
    pipeline.stop()
    pipeline.start()
    extra = [{**s, "impression_id": f"r-{uuid.uuid4().hex}", "labels": {**s["labels"], "watch_ms": 0}}
             for s in list(labelled_samples(requests=400, seed=21))[:10]]
    pipeline.producer.publish_many(spec("ranking.samples"), extra)
    pipeline.producer.flush()
    wait_for(lambda: pipeline.counter("vitrina_ranking_model_samples") >= seen + len(extra), 120,
             "the restored trainer to count on from its checkpoint")
    assert pipeline.counter("vitrina_ranking_model_samples") == seen + len(extra)
