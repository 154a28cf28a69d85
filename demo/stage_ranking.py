"""Main-job stage of issue 5: online training of the ranking model and the device runtime.

Uses the stream the foundation stage published (impressions + playback): the worker's label
join has been emitting labelled samples and its trainer learning from them all along. The
stage waits until the labels settle, asks for a checkpoint (as `vitrina model checkpoint`
does), shows the exported version, then plays a device: download the Production TFLite from
S3, check its sha256, rank a pool of 24 candidates with LiteRT.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

from processors.ranking.artifacts import FLOAT_KIND, QUANT_KIND
from processors.ranking.registry import gate_model_name
from processors.ranking.tasks import TASKS
from sinks.device_client import DeviceModelClient, RedisManifestSource
from sinks.model_store import ModelStore
from streams.kafka.codec import default_codec
from streams.kafka.tail import tail
from demo.main import DemoContext, stage, wait_until
from streams.capabilities.ranking.settings import load_ranking_settings


def _settled_samples(ctx: DemoContext, timeout_s: float = 300.0, quiet_s: float = 3.0) -> tuple[int, int]:
    """(labelled, consumed by the trainer) once no new label came for ``quiet_s`` and the trainer caught up."""
    def trained() -> int:
        return int(sum(ctx.worker.counter("vitrina_ranking_train_samples_total", outcome=o)
                       for o in ("trained", "held_out", "duplicate")))

    deadline = time.monotonic() + timeout_s
    previous = -1
    while time.monotonic() < deadline:
        labelled = int(ctx.worker.counter("vitrina_ranking_labelled_total"))
        if labelled and labelled == previous and trained() >= labelled:
            return labelled, trained()
        previous = labelled
        time.sleep(quiet_s)
    return int(ctx.worker.counter("vitrina_ranking_labelled_total")), trained()


def _pool(settings, size: int = 24) -> tuple[dict, list[dict]]:
    """A device's request (the most active viewer's latest impression) and its cached pool of candidates."""
    impressions = [r.value for r in tail(settings, default_codec(), "ranking.impressions") if r.value]
    by_viewer: dict[str, list[dict]] = defaultdict(list)
    for imp in impressions:
        by_viewer[imp["user_id"] or f"device:{imp['device_id']}"].append(imp)
    viewer = max(by_viewer, key=lambda v: len(by_viewer[v]))
    latest = max(by_viewer[viewer], key=lambda i: i["event_time"])
    request = {k: latest[k] for k in ("user_id", "device_id", "device_type", "surface", "recent_watched")}
    request["context"] = {k: v for k, v in latest["context"].items() if k != "item_duration_ms"}
    candidates, seen = [], set()
    for imp in sorted(by_viewer[viewer] + impressions[-2000:], key=lambda i: i["event_time"], reverse=True):
        if imp["item_id"] not in seen:
            seen.add(imp["item_id"])
            candidates.append({"item_id": imp["item_id"], "pxtr": imp["pxtr"],
                               "item_duration_ms": imp["context"]["item_duration_ms"],
                               "cached_ratio": imp["context"]["cached_ratio"]})
        if len(candidates) == size:
            break
    return request, candidates


def _gate(ctx: DemoContext, name: str, client: DeviceModelClient, version: str, request: dict,
          candidates: list[dict]) -> None:
    """The gate model (GRF stage 1) trained beside the ranking model from the playback stalls, published
    as ``<name>-gate`` with the requested checkpoint; the device client uses both models."""
    gates = ModelStore(ctx.settings, gate_model_name(name))
    try:
        wait_until(lambda: any(v.version == version for v in gates.load().versions), 60, "the gate version")
    except TimeoutError:
        ctx.say(f"\n  gate model: no version exported with {version} (too few held-out plays with and without "
                f"a stall yet)")
        return
    record = gates.load().get(version)
    gate = client.refresh_gate()
    if gate is None:
        ctx.say(f"\n  gate model {gates.name} {version}: {record.state.value} (no Production gate to download)")
        return
    manifest = client.gate_manifest or {}
    metrics = manifest.get("metrics") or {}
    ctx.say(f"\n  gate model {gates.name}: {record.state.value} {version} (AUC {_auc(metrics.get('choppy'))}, recall at "
            f"precision 0.7 {_auc(metrics.get('recall_at_p0.7'))}); the device downloaded Production {gate.version} "
            f"beside the ranking model")
    now = datetime.now(timezone.utc)
    pool = [{**c, "cached_at": now} for c in candidates[-4:]]
    decision = client.next_video(request, candidates[:-4], pool, now, pool_capacity=8,
                                 play={"network_kbps": request["context"].get("network_kbps")})
    probs = ", ".join(f"{i} {p:.2f}" for i, p in decision.play.p_choppy.items())
    what = (f"{decision.play.skipped[0]} predicted choppy (>= {gate.threshold:g}): plays {decision.play.item_id} "
            f"from the cached pool" if decision.play.from_pool else f"plays {decision.play.item_id}")
    ctx.say(f"    next video: P(choppy) of the top 3 {probs}; {what}")
    ctx.facts["gate_version"] = gate.version


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@stage(50, "ranking")
def online_ranking(ctx: DemoContext) -> None:
    ranking = load_ranking_settings(ctx.settings)
    ctx.section(f"Online ranking model '{ranking.model_name}' (label join -> online training -> TFLite on S3 -> device)")
    store = ModelStore(ctx.settings, ranking.model_name)
    labelled, consumed = _settled_samples(ctx)
    if not labelled:
        ctx.say("  no labelled samples yet (did the event stream stage run?); skipping")
        return
    played = int(ctx.worker.counter("vitrina_ranking_labelled_total", played="true"))
    pending = int(ctx.worker.counter("vitrina_ranking_join_pending"))
    held_out = int(ctx.worker.counter("vitrina_ranking_train_samples_total", outcome="held_out"))
    ctx.say(f"  label join: {labelled:,} labelled impressions ({played:,} played), {pending:,} still inside the "
            f"window + {ranking.lateness_s / 3600:g} h lateness")
    ctx.say(f"  trainer:    {consumed:,} samples consumed, {held_out:,} held out for evaluation, "
            f"{int(ctx.worker.counter('vitrina_ranking_train_steps_total')):,} steps, "
            f"{ctx.worker.counter('vitrina_ranking_train_samples_per_second'):,.0f} samples/s while training")
    scheduled = len(store.load().versions)
    ctx.say(f"  scheduled checkpoints so far (every {ranking.checkpoint_every_s / 3600:g} h of event time): "
            f"{scheduled}")

    requested_at = datetime.fromisoformat(store.request_checkpoint())

    def forced() -> str | None:
        for record in store.load().versions:
            if record.created_at >= requested_at and \
                    store.manifest(record.version)["stream"].get("checkpoint_reason") == "requested":
                return record.version
        return None

    waited = wait_until(lambda: forced() is not None, 180, "the requested checkpoint")
    version = forced()
    manifest = store.manifest(version)
    record = store.load().get(version)
    ctx.say(f"\n  checkpoint requested -> version {version} exported, verified and published in {waited:.1f}s")
    artifacts = manifest["artifacts"]
    ctx.say(f"    TFLite float32 {artifacts[FLOAT_KIND]['bytes'] / 1e6:.2f} MB (max |TF - LiteRT| "
            f"{artifacts[FLOAT_KIND]['max_abs_diff']:.1e}), dynamic-range int8 "
            f"{artifacts[QUANT_KIND]['bytes'] / 1e6:.2f} MB (max diff {artifacts[QUANT_KIND]['max_abs_diff']:.1e}); "
            f"export {manifest['export_seconds']:.1f}s")
    ctx.say(f"    s3://{manifest['bucket']}/{artifacts[FLOAT_KIND]['key']}  sha256 {artifacts[FLOAT_KIND]['sha256'][:16]}…")
    baseline = manifest["evaluation"].get("pxtr", {})
    ctx.say(f"    AUC on {manifest['evaluation']['window']} held-out samples (model / server pxtr): " + ", ".join(
        f"{t} {_auc(manifest['metrics'][t])}/{_auc(baseline.get(t))}" for t in TASKS)
        + "  (n/a: window too small or one class only)")
    ctx.say(f"    registry: {record.state.value} — {record.transitions[-1].reason}")
    ctx.say("\n  registry (newest first):")
    for entry in sorted(store.load().versions, key=lambda v: v.created_at, reverse=True)[:6]:
        aucs = " ".join(f"{_auc(entry.metrics.get(t)):>5}" for t in TASKS)
        ctx.say(f"    {entry.version:<26} {entry.state.value:<10} AUC evr/lvr/svr/fpr {aucs}")

    client = DeviceModelClient(ctx.settings, RedisManifestSource(ctx.settings), ranking.model_name)
    ranker = client.refresh()
    request, candidates = _pool(ctx.settings)
    started = time.perf_counter()
    ranked = client.rank(request, candidates)
    elapsed_ms = (time.perf_counter() - started) * 1000
    titles = {t["item_id"]: t["title"] for t in ctx.titles}
    viewer = request["user_id"] or f"guest device {request['device_id']}"
    ctx.say(f"\n  device runtime: downloaded Production {ranker.version} from S3, sha256 checked; ranked a pool of "
            f"{len(candidates)} for {viewer} ({request['device_type']}, {request['context']['network_kbps']} kbps) "
            f"in {elapsed_ms:.1f} ms with LiteRT. Top 5:")
    for place, cand in enumerate(ranked[:5], 1):
        p = cand.predictions
        ctx.say(f"    {place}. {cand.item_id:<8} {titles.get(cand.item_id, '?')[:34]:<34} score {cand.score:+.3f}  "
                f"p(evr) {p['evr']:.2f} p(lvr) {p['lvr']:.2f} p(svr) {p['svr']:.2f} p(fpr) {p['fpr']:.2f}")
    ctx.facts["ranking_version"] = ranker.version
    ctx.facts["ranking_top5"] = [c.item_id for c in ranked[:5]]
    _gate(ctx, ranking.model_name, client, version, request, candidates)
    counts = Counter(v.state.value for v in store.load().versions)
    ctx.say(f"\n  versions by state: {dict(counts)}; try `vitrina model list`, `vitrina model rollback`")
