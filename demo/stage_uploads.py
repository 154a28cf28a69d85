"""Main-job stage of uploads: generated clips in, renditions / dedupe link / rejection out."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

from processors.media.signing import VerifyResult
from sinks.media_store import PlaybackSigner
from demo.main import DemoContext, stage
from demo.upload_samples import make_demo_samples
from streams.capabilities.uploads.client import ResultFollower, UploadResult, new_upload_id, publish_request, upload_file, \
    upload_request

TRANSCODES = "vitrina_upload_transcodes_total"
DEDUPE_HITS = "vitrina_upload_dedupe_hits_total"


def _quality(values: dict[str, float]) -> str:
    if "vmaf" in values:
        return f"VMAF {values['vmaf']:.1f}"
    if "ssim" in values:
        return f"SSIM {values['ssim']:.3f} / PSNR {values.get('psnr', 0):.1f} dB"
    return "-"


def _show_processed(ctx: DemoContext, label: str, result: UploadResult) -> None:
    e = result.event
    if e["deduplicated"]:
        ctx.say(f"  {label}: DUPLICATE of upload {e['original_upload_id']} -> linked to asset {e['asset_id']} "
                f"(no transcode, {len(e['renditions'])} renditions shared)")
        return
    ctx.say(f"  {label}: asset {e['asset_id']}  source {e['source_width']}x{e['source_height']} "
            f"{e['duration_s']:.1f}s, processed in {e['processing_s']:.1f}s")
    ctx.say(f"    {'rung':<6} {'size':<10} {'KB':>7} {'kbps':>6} {'cap':>6}  quality")
    for r in e["renditions"]:
        kbps = r["bytes"] * 8 / max(r["duration_s"], 1e-3) / 1000
        ctx.say(f"    {r['name']:<6} {r['width']}x{r['height']:<5} {r['bytes'] / 1024:>7.0f} {kbps:>6.0f} "
                f"{r['video_kbps']:>6}  {_quality(r['quality'])}")
    ctx.say("    thumbnails: " + ", ".join(f"{t['kind'].lower()} {t['width']}x{t['height']}" for t in e["thumbnails"]))


def _show_followed(ctx: DemoContext, label: str, follower: ResultFollower, upload_id: str) -> None:
    """The upload's uploads.status events, as a client following it saw them."""
    events = follower.wait_final_statuses([upload_id], 30)[upload_id]
    if not events:
        return
    t0 = events[0]["updated_at"]
    steps = [f"{e['status']}{' ' + str(e['percent']) + '%' if e['status'] == 'ENCODING' else ''}"
             f" +{(e['updated_at'] - t0).total_seconds():.1f}s" for e in events]
    ctx.say(f"  {label} followed on uploads.status: " + " -> ".join(steps))


def _show_per_title(ctx: DemoContext, path, result: UploadResult | None) -> None:
    """The per-title caps next to the fixed ladder's for the same source."""
    if result is None or not result.processed:
        return
    from processors.media import build_ladder, inspect
    info = inspect(path)
    if not hasattr(info, "width"):
        return
    fixed = {r.name: r.video_kbps for r in build_ladder(info)}
    ctx.say("  per-title ladder of the 24 s clip (complexity probe -> caps), fixed ladder in brackets: "
            + ", ".join(f"{r['name']} {r['video_kbps']} kbps [{fixed.get(r['name'], '-')}] "
                        f"{r['bytes'] * 8 / max(r['duration_s'], 1e-3) / 1000:.0f} kbps used"
                        for r in result.event["renditions"]))


@stage(30, "uploads")
def uploads(ctx: DemoContext) -> None:
    ctx.section("Uploads: transcode + dedupe (agents upload-hasher -> upload-transcoder, S3, Redis)")
    run = uuid.uuid4().hex[:8]
    samples = make_demo_samples(ctx.settings.data_dir / "demo-media" / run, tag=run)
    transcodes_before = ctx.worker.counter(TRANSCODES, outcome="processed")
    hits_before = ctx.worker.counter(DEDUPE_HITS)
    with ResultFollower(ctx.settings, statuses=True) as follower:
        started = time.monotonic()
        sent = {
            "landscape 720p": upload_file(ctx.settings, ctx.producer, samples["landscape"], uploader_id="demo-alice"),
            "same file again (in flight)": upload_file(ctx.settings, ctx.producer, samples["landscape"],
                                                       uploader_id="demo-bob"),
            "portrait phone clip": upload_file(ctx.settings, ctx.producer, samples["portrait"], uploader_id="demo-carol"),
            "audio-only file": upload_file(ctx.settings, ctx.producer, samples["audio"], uploader_id="demo-dave"),
            "24 s clip (per-title ladder)": upload_file(ctx.settings, ctx.producer, samples["long"],
                                                        uploader_id="demo-gina"),
        }
        missing = upload_request(new_upload_id(), f"originals/{run}/never-uploaded.mp4", "never-uploaded.mp4", 1000,
                                 uploader_id="demo-erin")
        publish_request(ctx.producer, missing)
        sent["request without an original"] = missing
        for label, request in sent.items():
            ctx.say(f"  published {request['upload_id']}  {label}  ({request['size_bytes']:,} bytes)")
        found = follower.wait([r["upload_id"] for r in sent.values()], 600)
        ctx.say(f"  all answered {time.monotonic() - started:.1f}s after the first upload")
        for label, request in sent.items():
            result = found.get(request["upload_id"])
            if result is None:
                ctx.say(f"  {label}: no answer within 600 s")
            elif result.processed:
                _show_processed(ctx, label, result)
            else:
                ctx.say(f"  {label}: REJECTED {result.event['reason_code']}: {result.event['message']}")
        _show_per_title(ctx, samples["long"], found.get(sent["24 s clip (per-title ladder)"]["upload_id"]))
        _show_followed(ctx, "landscape 720p", follower, sent["landscape 720p"]["upload_id"])

        # a later re-upload of the same bytes: the dedupe table answers without any transcoding
        t0 = time.monotonic()
        again = upload_file(ctx.settings, ctx.producer, samples["landscape"], uploader_id="demo-frank")
        published = time.monotonic()
        late = follower.wait([again["upload_id"]], 120).get(again["upload_id"])
    if late is not None:
        _show_processed(ctx, "landscape uploaded again later", late)
        ctx.say(f"    answered {late.received_at - published:.2f}s after publishing "
                f"(upload to S3 took {published - t0:.2f}s)")
    transcodes = ctx.worker.counter(TRANSCODES, outcome="processed") - transcodes_before
    hits = ctx.worker.counter(DEDUPE_HITS) - hits_before
    ctx.say(f"  transcodes: {transcodes:.0f} for 5 video uploads of 3 distinct videos; dedupe hits: {hits:.0f}")

    first = found.get(sent["landscape 720p"]["upload_id"])
    if first is not None and first.processed:
        signer = PlaybackSigner.from_settings(ctx.settings)
        top = first.event["renditions"][-1]
        url = signer.url(top["object_key"], ttl_s=3600)
        ctx.say(f"  signed playback URL ({top['name']}, valid 1 h; served by `vitrina api` at /media):")
        ctx.say(f"    {url}")
        bare = url.split("?", 1)[0]
        tampered = url.replace(top["name"] + ".mp4", first.event["renditions"][0]["name"] + ".mp4")
        expired = signer.url(top["object_key"], ttl_s=60, now=datetime.now(timezone.utc) - timedelta(hours=1))
        for what, candidate in (("signed URL", url), ("bare object key", bare), ("signature moved to another rung",
                                                                                 tampered), ("expired URL", expired)):
            verdict = signer.verify(candidate)
            ctx.say(f"    {what:<32} -> {'PLAY' if verdict is VerifyResult.OK else 'REFUSED ' + verdict.value}")
    ctx.facts["uploads"] = {label: (found[r["upload_id"]].status if r["upload_id"] in found else None)
                            for label, r in sent.items()}
