"""Quality (Netflix VQS): VMAF of an encode against its source, or SSIM + PSNR when the ffmpeg at hand
has no libvmaf. Separate from encoding so it can be recomputed without re-encoding.

Comparison geometry: the ENCODE is scaled back (bicubic) to the source's displayed size, as Netflix
does for VMAF (the score then answers "how does this rung look on the source-sized screen").
The source is brought to the same displayed size (rotation, square pixels) and, when the rung capped
the frame rate, to the same rate; both start at pts 0. Only the first `max_seconds` are analysed and only
every `n_subsample`-th frame is scored, to keep it cheap.

Frames are aligned BY TIME, then paired by index: both streams first go through `fps=R`, R being the
rendition's own (constant) frame rate, which resamples each onto the same time grid (a VFR source
gets its frames repeated or dropped exactly where the encoder did), and only then get
`settb=1/30,setpts=N`. Pairing by index alone scored a correct rendition of a VFR phone clip 8.8
instead of about 90 (the rendition had frames the source did not); framesync's timestamp pairing
("nearest lower or equal") paired neighbouring frames whenever the source's timestamps were rounded
up (WebM's 1 ms timebase: BBB 720p 70.8 instead of 91.6), which `fps` avoids by rounding to the nearest
slot. The reference also gets the source preparation of the encode (deinterlace, HDR tone mapping),
so a deinterlaced rung is not scored against combed fields, nor an SDR rung against HLG pixels.

Which ffmpeg: `MediaTools.resolved_quality_ffmpeg()` - the imageio-ffmpeg static build (has libvmaf)
when installed, else the Debian ffmpeg (SSIM/PSNR only). Detection parses `ffmpeg -filters`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import ffmpeg

from .encode import TONEMAP_FILTERS, rung_rate, source_filter_chain
from .inspect import MediaInfo, _rate, probe
from .ladder import Recipe
from .tools import MediaTools, available_filters, run_tool

VMAF, SSIM, PSNR = "vmaf", "ssim", "psnr"
_SSIM_RE = re.compile(r"SSIM .*?All:\s*([0-9.]+)")
_PSNR_RE = re.compile(r"PSNR .*?average:\s*([0-9.]+|inf)")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")
# A common timebase with integer pts = frame index: `setpts=N/(30*TB)` alone is NOT enough, because
# each input keeps its own timebase (WebM 1/1000, MP4 1/12288) and the rounding differs.
_BY_INDEX = "settb=1/30,setpts=N"


class QualityError(RuntimeError):
    pass


def default_metrics(ffmpeg_exe: str) -> tuple[str, ...]:
    return (VMAF,) if "libvmaf" in available_filters(ffmpeg_exe) else (SSIM, PSNR)


def build_quality_argv(
    source: str | Path,
    info: MediaInfo,
    rendition: str | Path,
    recipe: Recipe,
    metrics: Sequence[str],
    *,
    ffmpeg_exe: str,
    vmaf_log: str | Path | None = None,
    max_seconds: float | None = 10.0,
    n_subsample: int = 5,
    n_threads: int | None = None,
    rate: str | None = None,
    filters: frozenset[str] | set[str] = frozenset(TONEMAP_FILTERS),
) -> list[str]:
    """`rate`: the rendition's frame rate (both streams are resampled onto it); default: the rung's rate."""
    width, height = info.width - info.width % 2, info.height - info.height % 2
    common = f"scale={width}:{height}:flags=bicubic:out_range=tv,setsar=1,format=yuv420p"
    rate = rate or rung_rate(info, recipe)
    timing = f"fps={rate}," if rate else ""
    prep = source_filter_chain(info, filters)
    ref_chain = (prep + "," if prep else "") + timing
    # SSIM/PSNR are per-frame, so frames can be dropped BEFORE scaling (cheaper). VMAF cannot: its
    # motion feature compares consecutive reference frames (pre-selecting every 5th frame raised
    # BBB 720p from 91.6 to 96.0), so libvmaf gets every frame and subsamples itself (n_subsample).
    vmaf = VMAF in metrics
    pick = f"select=not(mod(n\\,{n_subsample})),{_BY_INDEX}" if n_subsample > 1 and not vmaf else _BY_INDEX
    ref_chain += pick + ","
    n = len(metrics)
    graph = [f"[1:v:0]{timing}{pick},{common}" + (f",split={n}" if n > 1 else "")
             + "".join(f"[d{i}]" for i in range(n)),
             f"[0:{info.video_stream_index}]{ref_chain}{common}" + (f",split={n}" if n > 1 else "")
             + "".join(f"[r{i}]" for i in range(n))]
    for i, metric in enumerate(metrics):
        if metric == VMAF:
            if vmaf_log is None or not _SAFE_PATH.match(str(vmaf_log)):
                raise ValueError(f"vmaf log path must be a plain path: {vmaf_log!r}")
            threads = n_threads or os.cpu_count() or 1
            options = f"log_fmt=json:log_path={vmaf_log}:n_subsample={n_subsample}:n_threads={threads}"
            graph.append(f"[d{i}][r{i}]libvmaf={options}[o{i}]")
        elif metric in (SSIM, PSNR):
            graph.append(f"[d{i}][r{i}]{metric}[o{i}]")
        else:
            raise ValueError(f"unknown metric {metric!r}")
    argv = [ffmpeg_exe, "-nostdin", "-hide_banner", "-nostats", "-v", "info"]
    limit = ["-t", f"{max_seconds:g}"] if max_seconds else []
    argv += limit + ["-i", str(source)] + limit + ["-i", str(rendition)]
    argv += ["-filter_complex", ";".join(graph)]
    for i in range(n):
        argv += ["-map", f"[o{i}]", "-f", "null", "-"]
    return argv


def parse_scores(stderr: str, vmaf_json: str | None, metrics: Sequence[str]) -> dict[str, float]:
    scores: dict[str, float] = {}
    if VMAF in metrics:
        if not vmaf_json:
            raise QualityError("libvmaf wrote no log")
        pooled = json.loads(vmaf_json).get("pooled_metrics", {}).get("vmaf", {})
        if "mean" not in pooled:
            raise QualityError("libvmaf log has no pooled vmaf")
        scores[VMAF] = round(float(pooled["mean"]), 3)
    for metric, pattern in ((SSIM, _SSIM_RE), (PSNR, _PSNR_RE)):
        if metric in metrics:
            found = pattern.findall(stderr)
            if not found:
                raise QualityError(f"no {metric} summary in ffmpeg output")
            value = float(found[-1])    # 'inf' for identical pictures
            scores[metric] = round(value, 4) if value != float("inf") else float("inf")
    return scores


def rendition_rate(rendition: str | Path, tools: MediaTools | None = None) -> str | None:
    """The rendition's average frame rate as ffprobe writes it ("25/1"), None if unknown."""
    try:
        data = probe(rendition, tools)
    except ffmpeg.Error:
        return None
    video = next((s for s in data.get("streams") or [] if s.get("codec_type") == "video"), None)
    text = str((video or {}).get("avg_frame_rate") or "")
    value = _rate(text)
    return text if value and 0 < value <= 1000 else None


def measure_quality(
    source: str | Path,
    info: MediaInfo,
    rendition: str | Path,
    recipe: Recipe,
    *,
    metrics: Sequence[str] | None = None,
    tools: MediaTools | None = None,
    max_seconds: float | None = 10.0,
    n_subsample: int = 5,
    timeout_s: float = 600.0,
    cancel: threading.Event | None = None,
) -> dict[str, float]:
    """{metric: value}: {"vmaf": 0..100} or {"ssim": 0..1, "psnr": dB}. Raises QualityError/ToolFailed."""
    tools = tools or MediaTools()
    exe = tools.resolved_quality_ffmpeg()
    chosen = tuple(metrics) if metrics else default_metrics(exe)
    if VMAF in chosen and "libvmaf" not in available_filters(exe):
        raise QualityError(f"{exe} has no libvmaf")
    rate = rendition_rate(rendition, tools)
    filters = available_filters(exe) if info.hdr else frozenset(TONEMAP_FILTERS)
    workdir = tempfile.mkdtemp(prefix="vitrina-vmaf-")
    try:
        log = Path(workdir) / "vmaf.json"
        argv = build_quality_argv(source, info, rendition, recipe, chosen, ffmpeg_exe=exe, vmaf_log=log,
                                  max_seconds=max_seconds, n_subsample=n_subsample, rate=rate, filters=filters)
        run = run_tool(argv, timeout_s=timeout_s, cancel=cancel)
        return parse_scores(run.stderr, log.read_text() if log.is_file() else None, chosen)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
