"""The ranking loop on the real stack (Redis + S3 + a `vitrina api` process): a trained model published
to the registry re-ranks the ML shelves the builder writes; two versions split users in a playoff; the
served page carries a request id and positions; the client's impressions, once labelled, give
per-version online metrics kept in the registry and shown by `vitrina model list`; A/B parameters from
the query or a header reach the next assembly.

Redis database 2 of the session's stack (the session worker uses db 0); model names are unique.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from support.ranking import TINY_FEATURES, TINY_MODEL, labelled_samples

from api.auth import TokenConfig, dev_client
from api.client import ApiError
from demo.showcase_sample import generate_history, sample_world
from infra.ports import pick_free_ports
from infra.settings import Settings, to_env
from processors.ranking.export import ExportConfig, export_version
from processors.ranking.registry import start_playoff
from processors.ranking.serving import assign_arm
from processors.ranking.trainer import OnlineTrainer, TrainerConfig
from processors.showcase.experiments import ab_params_key
from processors.showcase.impressions import autoplay_impression, page_impressions
from sinks.catalogue_views import write_shelves, write_titles
from sinks.model_store import ModelStore
from sinks.redis_views import async_client, history_key, showcase_key, similar_key, user_view_key
from sinks.showcase_views import request_rebuild
from streams.capabilities.ranking.online import OnlineMetricsSink, online_key
from streams.capabilities.ranking.serving import ServingModels
from streams.capabilities.showcase.builder import ShowcaseBuilder
from streams.ops.supervisor import start_api

NOW = datetime.now(timezone.utc).replace(microsecond=0)
VITRINA = str(Path(sys.executable).parent / "vitrina")
USERS = [f"loop-u{i}" for i in range(24)]


def _history_doc(history, device: str) -> dict:
    return {"watched": list(history.watched), "continue": [], "series": {},
            "devices": {device: {"app_version": "3.4.1", "updated_at": NOW.isoformat()}},
            "updated_at": NOW.isoformat()}


def _publish_two(settings: Settings, name: str, out: Path) -> tuple[ModelStore, str, str]:
    store = ModelStore(settings, name)
    store.ensure_bucket()
    samples = list(labelled_samples())
    trainer = OnlineTrainer(TINY_FEATURES, TINY_MODEL, TrainerConfig(holdout_every=4, learning_rate=0.01))
    versions = []
    for n, (start, stop) in enumerate(((0, 600), (600, 1800))):
        for i in range(start, stop, 64):
            trainer.train_step(samples[i:i + 64])
        window = trainer.holdout_samples()[-300:]
        version = f"loop-v{n}"
        export = export_version(trainer, out / version, version, window, ExportConfig(quantize=False),
                                metrics=trainer.evaluate(window))
        manifest = json.loads(Path(export.manifest_path).read_text())
        manifest["stream"] = {"event_time": window[-1]["event_time"].isoformat(), "samples_seen": 0}
        store.publish(version, {k: a.path for k, a in export.artifacts.items()}, export.checkpoint_path, manifest,
                      window, tolerance=1.0, last_n=5)
        versions.append(version)
    return store, versions[0], versions[1]


async def _build(settings: Settings, world, histories: dict[str, dict], models) -> dict[str, dict]:
    """Write the world, build every user's views with ``models``; returns user -> stored TV view."""
    redis = async_client(settings)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            write_titles(pipe, world.titles)
            write_shelves(pipe, world.shelf_defs)
            for item, similar in world.similar.items():
                pipe.set(similar_key(item), json.dumps({"item_id": item, "version": 1, "source": "COVIEW",
                                                        "items": [{"item_id": i, "score": s} for i, s in similar]}))
            for user, doc in histories.items():
                pipe.set(history_key(user), json.dumps(doc))
            await pipe.execute()
        return await _rebuild(redis, list(histories), models)
    finally:
        await redis.aclose()


BUILDERS: dict[str, ShowcaseBuilder] = {}


async def _rebuild(redis, users: list[str], models) -> dict[str, dict]:
    builder = BUILDERS["last"] = ShowcaseBuilder(redis, settle_s=0, settled_s=0, models=models)
    builder.catalogue.debounce_s = 0
    await builder.tick(NOW)
    await request_rebuild(redis, users, force=True)  # like an ops --force rebuild
    while True:
        report = await builder.tick(NOW)
        if not report.users:
            break
    views = {}
    for user in users:
        raw = await redis.get(showcase_key(user_view_key(user, "TV")))
        views[user] = json.loads(raw) if raw else None
    return views


def _ml(view: dict, kind: str) -> dict | None:
    return next((s for s in view["shelves"] if s["kind"] == kind), None)


@pytest.fixture(scope="module")
def loop(stack: Settings, tmp_path_factory) -> Iterator[dict]:
    settings = replace(stack, redis_url=stack.redis_url.rsplit("/", 1)[0] + "/2")
    name = f"loop-{uuid.uuid4().hex[:8]}"
    asyncio.run(asyncio.wait_for(_flush(settings), 30))
    store, v0, v1 = _publish_two(settings, name, tmp_path_factory.mktemp("loop-export"))
    world = sample_world(1500, seed=11, now=NOW)
    rng = random.Random(4)
    grown = [t for t in world.titles if not t["kids"] and not t["adult"] and t["age_rating"] <= 16]
    histories = {u: _history_doc(generate_history(grown, rng, size=rng.randint(4, 12)), "TV") for u in USERS}
    unranked = asyncio.run(_build(settings, world, histories, None))
    models = ServingModels(async_client(settings), name, settings=settings, check_every_s=0)
    ranked = asyncio.run(_build(settings, world, histories, models))
    assert models.arms == (v1,), (models.arms, models._failed)
    index = BUILDERS["last"].catalogue.index
    api = start_api(settings, port=pick_free_ports(1)[0], name="api-loop")
    try:
        yield {"settings": settings, "store": store, "name": name, "v0": v0, "v1": v1, "world": world,
               "unranked": unranked, "ranked": ranked, "client": dev_client(settings, api.base_url),
               "base_url": api.base_url, "histories": histories, "index": index, "models": models}
    finally:
        api.stop()


async def _flush(settings: Settings) -> None:
    redis = async_client(settings)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


def _expected(loop, user: str, models, params=None):
    """The view the builder should have written: the pure assemble with the serving model's scores."""
    from processors.showcase import UserHistory, Viewer, assemble, to_view
    from streams.capabilities.showcase.builder import model_scores_for

    index = loop["index"]
    history = UserHistory(watched=tuple(loop["histories"][user]["watched"]))
    scores = model_scores_for(models, index, index.policy, user, "TV", history.recent, loop["world"].similar, NOW)
    viewer = Viewer(user_id=user, device_type="TV", now=NOW, app_version="3.4.1")
    return to_view(assemble(index, viewer, history, similar=loop["world"].similar, model=scores, params=params))


def test_the_production_model_reranks_the_ml_shelves(loop):
    production = loop["store"].load().production().version
    assert production == loop["v1"]
    changed = stamped = 0
    for user in USERS:
        ranked, plain = loop["ranked"][user], loop["unranked"][user]
        assert ranked is not None and plain is not None
        expected = _expected(loop, user, loop["models"])
        for kind in ("ML_WATCH_ALSO", "ML_FOR_YOU"):
            shelf, want = _ml(ranked, kind), _ml(expected, kind)
            assert (shelf or {}).get("items") == (want or {}).get("items"), (user, kind)
            if shelf is None:
                continue
            stamped += 1
            assert shelf["meta"]["model_version"] == production and shelf["meta"]["model"] == loop["name"]
            scores = shelf["meta"]["model_scores"]
            assert len(scores) == len(shelf["items"]) and all(isinstance(s, float) for s in scores)
            changed += shelf["items"] != (_ml(plain, kind) or {}).get("items")
    assert stamped >= len(USERS) and changed >= 3, (stamped, changed)
    assert all("model_version" not in s["meta"] for v in loop["unranked"].values() for s in v["shelves"])


def test_served_pages_carry_a_request_id_and_positions(loop):
    client, user = loop["client"], USERS[0]
    first, second = client.showcase(user, "TV"), client.showcase(user, "TV")
    assert first["request_id"] != second["request_id"] and first["surface"] == "HOME"
    rows = [s["row"] for s in first["showcase"]["shelves"]]
    assert rows == sorted(rows) and len(set(rows)) == len(rows)
    impressions = page_impressions(first, user_id=user, device_id="dev-1", device_type="TV", shown_at=NOW, visible=6)
    assert impressions and all(i["request_id"] == first["request_id"] for i in impressions)
    assert any(i["model_version"] == loop["v1"] for i in impressions)
    watched = loop["histories"][user]["watched"][0]
    auto = client.autoplay_next(watched, user_id=user)
    assert auto["request_id"] and auto["surface"] == "AUTOPLAY" and auto["position"] == 0
    if auto["next"]:
        assert autoplay_impression(auto, user_id=user, device_id="dev-1", device_type="TV",
                                   shown_at=NOW)["request_id"] == auto["request_id"]


def test_playoff_splits_users_and_online_metrics_reach_the_registry(loop):
    store, settings, name = loop["store"], loop["settings"], loop["name"]
    store.update(lambda r: (start_playoff(r, [loop["v0"]]), None))
    models = ServingModels(async_client(settings), name, settings=settings, check_every_s=0)
    views = asyncio.run(_rebuild(async_client(settings), USERS, models))
    arms = (loop["v1"], loop["v0"])
    seen = set()
    for user, view in views.items():
        shelf = _ml(view, "ML_WATCH_ALSO") or _ml(view, "ML_FOR_YOU")
        if shelf is None or "model_version" not in shelf["meta"]:
            continue
        assert shelf["meta"]["model_version"] == assign_arm(f"user:{user}", arms)
        seen.add(shelf["meta"]["model_version"])
    assert seen == set(arms)
    # the client's impressions of those pages, labelled (here: by a rule instead of playback), counted
    samples = []
    for user in USERS:
        page = loop["client"].showcase(user, "TV")
        for imp in page_impressions(page, user_id=user, device_id=f"d-{user}", device_type="TV", shown_at=NOW,
                                    visible=6):
            if imp["model_version"]:
                good = imp["model_version"] == loop["v1"] and imp["position"] < 3
                samples.append({**imp, "labels": {"evr": good, "lvr": False, "svr": not good, "fpr": False}})
    sink = OnlineMetricsSink(async_client(settings), name, lambda: store, every_s=1)

    async def count_and_snapshot() -> int:
        await sink.redis.delete(online_key(name), online_key(name) + ":snapshot-lock")
        await sink.add(samples)
        return await sink.snapshot()

    assert asyncio.run(count_and_snapshot()) == 2
    # from the stream: (partition, offset) records counted once, a redelivered batch skipped
    records = [(i % 2, i // 2, s) for i, s in enumerate(samples)]

    async def redelivered() -> tuple[int, int, int, dict]:
        counter = OnlineMetricsSink(async_client(settings), name, lambda: store)  # a client of this loop
        await counter.redis.delete(online_key(name), counter.applied_key)
        first = await counter.add_records(records[: len(records) // 2 + 3])
        again = await counter.add_records(records)  # the first part comes again after a "crash"
        twice = await counter.add_records(records)
        return first, again, twice, await counter.summary()

    first, again, twice, summary = asyncio.run(redelivered())
    assert first + again == len(samples) and twice == 0
    assert sum(v["impressions"] for v in summary.values()) == len(samples)
    registry = store.load()
    for version in arms:
        online = registry.get(version).online[-1]
        mine = [s for s in samples if s["model_version"] == version]
        assert online["impressions"] == len(mine)
        assert online["evr"] == pytest.approx(sum(s["labels"]["evr"] for s in mine) / len(mine), abs=1e-4)
    listed = subprocess.run([VITRINA, "model", "list", "--name", name], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **to_env(settings), "VITRINA_LOG_LEVEL": "error"})
    assert listed.returncode == 0, listed.stderr
    line = next(l for l in listed.stdout.splitlines() if l.startswith(loop["v0"]))
    assert "arm" in line and str(registry.get(loop["v0"]).online[-1]["impressions"]) in line
    assert "playoff:" in listed.stdout
    env = {**os.environ, **to_env(settings), "VITRINA_LOG_LEVEL": "error"}
    refused = subprocess.run([VITRINA, "model", "promote", loop["v0"], "--online", "--name", name],
                             capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2 and "not_significant" in refused.stderr and "too_few_impressions" in refused.stderr
    stopped = subprocess.run([VITRINA, "model", "playoff", "--stop", "--name", name], capture_output=True, text=True,
                             timeout=120, env=env)
    assert stopped.returncode == 0 and store.load().serving() == (loop["v1"],)


def test_ab_parameters_from_query_or_header_reach_the_next_assembly(loop):
    client, settings, user = loop["client"], loop["settings"], USERS[1]
    first = client.showcase(user, "TV", **{"ab_for_you.mmr_lambda": "0.3"})
    assert first["ab"] == {"params": {"for_you.mmr_lambda": "0.3"}, "applies": True, "rebuild_queued": True}
    again = client.showcase(user, "TV", **{"ab_for_you.mmr_lambda": "0.3"})
    assert again["ab"]["rebuild_queued"] is False
    token = TokenConfig.from_settings(settings).mint(user)
    request = urllib.request.Request(f"{loop['base_url']}/v1/showcase?device_type=TV",
                                     headers={"Authorization": f"Bearer {token}",
                                              "X-Vitrina-AB": "for_you.mmr_lambda=1.0; for_you.novelty=0"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.loads(response.read())
    assert body["ab"]["params"] == {"for_you.mmr_lambda": "1.0", "for_you.novelty": "0"}
    assert body["ab"]["rebuild_queued"] is True
    import redis as syncredis
    stored = syncredis.Redis.from_url(settings.redis_url, decode_responses=True).get(ab_params_key(user))
    assert json.loads(stored) == {"for_you.mmr_lambda": "1.0", "for_you.novelty": "0"}
    # the builder assembles the user's next view with them (no serving model here): a direct assemble agrees
    views = asyncio.run(_rebuild(async_client(settings), [user], None))
    expected = _expected(loop, user, None, params={"for_you.mmr_lambda": "1.0", "for_you.novelty": "0"})
    default = _expected(loop, user, None)
    assert _ml(views[user], "ML_FOR_YOU")["items"] == _ml(expected, "ML_FOR_YOU")["items"]
    assert _ml(expected, "ML_FOR_YOU")["items"] != _ml(default, "ML_FOR_YOU")["items"]
    with pytest.raises(ApiError) as bad:
        client.showcase(user, "TV", **{"ab_for_you.mmr_lambda": "7"})
    assert bad.value.status == 400
    with pytest.raises(ApiError) as unknown:
        client.showcase(user, "TV", **{"ab_nothing": "1"})
    assert unknown.value.status == 400


def test_the_cache_pool_is_replenished_through_the_api(loop):
    from processors.ranking.cache_pool import add_to_pool, plan_pool

    client, user = loop["client"], USERS[2]
    plan = plan_pool([{"item_id": "old", "cached_at": NOW.replace(year=NOW.year - 1)}], [NOW] * 9, NOW)
    assert plan.evicted == ["old"] and plan.replenish == 9
    answer = client.get("/v1/cache-pool", user_id=user, device_type="TV", count=plan.replenish)
    items = [i["item_id"] for i in answer["items"]]
    assert answer["request_id"] and answer["view_key"].startswith(f"user:{user}:") and len(items) == 9
    assert len(set(items)) == 9 and answer["items"][0]["model_version"]  # the model-ranked shelves come first
    watched = set(loop["histories"][user]["watched"])
    assert not set(items) & watched
    pool = add_to_pool(plan.keep, answer["items"], NOW, plan.capacity)
    again = client.get("/v1/cache-pool", user_id=user, device_type="TV", count=5,
                       exclude=",".join(e["item_id"] for e in pool))
    assert not {i["item_id"] for i in again["items"]} & {e["item_id"] for e in pool}
    from api.client import VitrinaClient
    with pytest.raises(ApiError) as anonymous:  # a personal pool needs the user's own token
        VitrinaClient(loop["base_url"]).get("/v1/cache-pool", user_id=user, device_type="TV")
    assert anonymous.value.status == 401


def test_the_device_client_keeps_its_pool_with_the_policy_and_the_api(loop):
    """The device client applies the pool policy itself: evicts, asks the API below 0.75 x Cu for the
    missing titles it does not hold, and keeps its pool when the server cannot be reached."""
    from api.client import VitrinaClient
    from sinks.device_client import DeviceModelClient, RedisManifestSource

    client, user, settings = loop["client"], USERS[2], loop["settings"]
    device = DeviceModelClient(settings, RedisManifestSource(settings), loop["name"])
    plays = [NOW - timedelta(days=1)] * 8  # Cu = 8
    pool = [{"item_id": "stale", "cached_at": NOW - timedelta(days=15)},
            *({"item_id": f"kept{i}", "cached_at": NOW - timedelta(days=1)} for i in range(3))]
    asked: list[tuple[int, list[str]]] = []

    def replenish(count, exclude):
        asked.append((count, exclude))
        return client.cache_pool(user, "TV", count, exclude)

    upkeep = device.maintain_pool(pool, plays, NOW, replenish)
    assert upkeep.plan.capacity == 8 and upkeep.plan.evicted == ["stale"]
    assert asked == [(5, ["kept0", "kept1", "kept2"])] and upkeep.fetched == 5 and not upkeep.offline
    ids = [e["item_id"] for e in upkeep.pool]
    assert len(ids) == len(set(ids)) == 8 and {"kept0", "kept1", "kept2"} <= set(ids) and "stale" not in ids
    again = device.maintain_pool(upkeep.pool, plays, NOW, replenish)  # full: no request
    assert len(asked) == 1 and again.fetched == 0 and len(again.pool) == 8
    down = VitrinaClient("http://127.0.0.1:9", timeout_s=1.0)  # nothing listens on port 9: the device is offline
    offline = device.maintain_pool(pool, plays, NOW, lambda n, ex: down.cache_pool(user, "TV", n, ex))
    assert offline.offline and [e["item_id"] for e in offline.pool] == ["kept0", "kept1", "kept2"]


def test_the_gate_ships_beside_the_ranking_model_and_the_device_uses_both(loop, tmp_path):
    """GRF 002 stage 1: the gate trained as the trainer trains it (``GateCore``), published under its
    own name with KION's rule, downloaded by the device client next to the ranking model; a video the
    gate flags is skipped for the best cached title and goes back into the pool."""
    from demo.ranking_synthetic import SyntheticConfig, generate
    from processors.ranking.gate_runtime import GateSampleBuilder
    from processors.ranking.registry import gate_model_name
    from sinks.device_client import DeviceModelClient, RedisManifestSource
    from sinks.model_store import published_event
    from streams.capabilities.ranking.training import GateCore

    settings, name = loop["settings"], loop["name"]
    stream = generate(SyntheticConfig(seed=11, users=200, items=100, clusters=4, requests=2_500))
    builder = GateSampleBuilder()
    core = GateCore()
    samples = [s for e in stream.playbacks if (s := builder.add_playback(e)) is not None]
    for i in range(0, len(samples), 256):
        core.train(samples[i:i + 256])
    job = core.export(tmp_path, "gate-v1", "test")
    assert job is not None
    gates = ModelStore(settings, gate_model_name(name))
    outcome = gates.publish_gate(job.version, job.tflite_path, job.manifest, job.eval_samples, tolerance=0.05,
                                 last_n=5)
    assert outcome.state == "PRODUCTION" and outcome.manifest["model"] == f"{name}-gate"
    assert published_event(gates.name, outcome.manifest, outcome.state, NOW)["metrics"]["auc_choppy"] > 0.6
    # a second gate is judged against the first one's AUC on the same window (KION's rule, task "choppy")
    core.train(samples[:256])
    second = core.export(tmp_path, "gate-v2", "test")
    again = gates.publish_gate(second.version, second.tflite_path, second.manifest, second.eval_samples,
                               tolerance=1.0, last_n=5, checkpoint_prefix=second.checkpoint_prefix)
    assert again.state == "PRODUCTION" and again.production_before == "gate-v1"
    # the next holder of the trainer continues from the newest gate checkpoint (gate-v1 has none)
    successor = GateCore()
    assert successor.restore(gates) == "gate-v2" and successor.trained == core.trained
    probe = second.eval_samples[:30]
    np.testing.assert_allclose(successor.trainer.predict(probe), core.trainer.predict(probe), atol=1e-6)
    assert int(successor.trainer.step.numpy()) == int(core.trainer.step.numpy()) > 0
    assert again.production_metrics is not None and again.production_metrics["choppy"] is not None
    assert gates.load().get("gate-v1").state.value == "ARCHIVED"

    client = DeviceModelClient(settings, RedisManifestSource(settings), name, cache_dir=tmp_path / "cache")
    ranker, gate = client.refresh_all()
    assert ranker.version == loop["v1"] and gate is not None and gate.version == "gate-v2"
    window = second.eval_samples[:30]
    np.testing.assert_allclose(gate.predict(window), core.trainer.predict(window), atol=1e-4)
    assert client.refresh_all() == (ranker, gate)  # unchanged: nothing downloaded again
    samples_r = list(labelled_samples())
    first = samples_r[0]
    request = {k: first[k] for k in ("user_id", "device_id", "device_type", "surface", "recent_watched")}
    request["context"] = {"hour_of_day": 20}
    candidates = [{"item_id": s["item_id"], "item_duration_ms": s["context"]["item_duration_ms"],
                   "bitrate_kbps": 3_000} for s in samples_r[1:40:3]]
    pool = [{"item_id": s["item_id"], "cached_at": NOW, "item_duration_ms": 60_000} for s in samples_r[60:64]]
    top = ranker.rank(request, candidates)[0].item_id
    gate.threshold = 1.01  # nothing is choppy: the best-ranked candidate plays
    calm = client.next_video(request, candidates, pool, NOW, pool_capacity=8, play={"network_kbps": 900})
    assert calm.play.item_id == top and not calm.play.from_pool and len(calm.play.p_choppy) == 3
    gate.threshold = 0.0  # everything is choppy: the best cached title plays, the candidate joins the pool
    choppy = client.next_video(request, candidates, pool, NOW, pool_capacity=8, play={"network_kbps": 900})
    assert choppy.play.from_pool and choppy.play.skipped == (top,)
    assert choppy.play.item_id in {e["item_id"] for e in pool}
    assert top in {e["item_id"] for e in choppy.pool} and choppy.play.item_id not in {e["item_id"] for e in choppy.pool}
