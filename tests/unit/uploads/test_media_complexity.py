"""Per-title ladder (Netflix CAS + LGS): the rate-quality probe and the ladder built from it."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from support.media import make_info
from processors.media import EncodeSettings, inspect
from processors.media.complexity import (Complexity, ProbePoint, per_title_ladder, probe_complexity,
                                         sample_windows)
from processors.media.ladder import MIN_VIDEO_KBPS, build_ladder
from processors.media.pipeline import ProcessResult, process_upload
from processors.media.tools import MediaTools, available_filters

CURVE = Complexity(640, 360, (ProbePoint(20, 800.0, 97.0), ProbePoint(26, 400.0, 93.0), ProbePoint(32, 200.0, 85.0)),
                   6.0, 1.0)


def test_the_quality_ffmpeg_has_libvmaf():
    """The probe needs VMAF; infra/setup.sh installs the imageio-ffmpeg build that has it. A missing
    libvmaf is a broken install, so it fails here instead of skipping the probe tests below."""
    assert "libvmaf" in available_filters(MediaTools().resolved_quality_ffmpeg())


def test_curve_interpolation():
    assert CURVE.crf_for(95.0) == pytest.approx(23.0)
    assert CURVE.crf_for(89.0) == pytest.approx(29.0)
    assert CURVE.crf_for(99.0) < 20 and CURVE.crf_for(80.0) > 32      # extrapolated
    assert CURVE.kbps_at(26) == pytest.approx(400.0)
    assert CURVE.kbps_at(23) == pytest.approx((800 * 400) ** 0.5)     # log-linear


def test_sample_windows_spread_over_long_titles_and_whole_short_ones():
    assert sample_windows(5.0) == [(0.0, 5.0)]
    windows = sample_windows(60.0)
    assert len(windows) == 3 and all(length == 2.0 for _, length in windows)
    assert windows[0][0] == pytest.approx(9.0) and windows[-1][0] == pytest.approx(49.0)


def test_per_title_ladder_uses_the_curve_and_stays_within_bounds():
    info = make_info(1920, 1080)
    fixed = build_ladder(info)
    ladder = per_title_ladder(info, CURVE, target_vmaf=95.0)
    assert [r.name for r in ladder] == [r.name for r in fixed]
    assert {r.crf for r in ladder} == {23}
    for rung, base in zip(ladder, fixed):
        assert max(MIN_VIDEO_KBPS, base.video_kbps) <= rung.video_kbps <= 1.5 * base.video_kbps
        assert (rung.width, rung.height) == (base.width, base.height)
    assert [r.video_kbps for r in ladder] == sorted(r.video_kbps for r in ladder)
    easy = Complexity(640, 360, tuple(dataclasses.replace(p, kbps=p.kbps / 4, vmaf=min(100.0, p.vmaf + 4))
                                      for p in CURVE.points), 6.0, 1.0)
    cheaper = per_title_ladder(info, easy, target_vmaf=95.0)
    assert all(a.video_kbps <= b.video_kbps for a, b in zip(cheaper, ladder))
    assert cheaper[0].crf > 23
    assert easy.kbps_at(cheaper[0].crf) < CURVE.kbps_at(23) / 4


def clip(path: Path, source: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", "3",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", "-pix_fmt", "yuv420p", str(path)],
                   check=True, timeout=120)
    return path


def test_a_cartoon_gets_fewer_bits_than_a_noisy_match(tmp_path: Path):
    cartoon = clip(tmp_path / "cartoon.mp4", "testsrc=size=640x360:rate=25")   # flat colours, sharp edges
    match = clip(tmp_path / "match.mp4", "testsrc2=size=640x360:rate=25,noise=alls=30:allf=t+u")
    chosen = {}
    for path in (cartoon, match):
        info = inspect(path)
        complexity = probe_complexity(path, info)
        assert complexity is not None and len(complexity.points) == 3
        assert [p.kbps for p in complexity.points] == sorted((p.kbps for p in complexity.points), reverse=True)
        crf = per_title_ladder(info, complexity)[-1].crf
        chosen[path.stem] = (crf, complexity.kbps_at(crf))
    assert chosen["cartoon"][0] >= chosen["match"][0], chosen
    assert chosen["cartoon"][1] < chosen["match"][1] / 2, f"bits at the target quality: {chosen}"


def test_the_probe_trial_encodes_each_candidate_and_a_failing_one_is_only_skipped(tmp_path: Path):
    """The ffmpeg side of the encoder choice: every candidate is encoded on the same sample at the probe's
    CRFs and scored; a candidate ffmpeg refuses (an unknown tune) is recorded as skipped, not fatal."""
    from processors.media.complexity import EffortBudget, EncoderConfig, config
    path = clip(tmp_path / "cartoon.mp4", "testsrc=size=640x360:rate=25")
    info = inspect(path)
    candidates = [config("veryfast"), config("medium"), EncoderConfig("veryfast", tune="no-such-tune")]
    complexity = probe_complexity(path, info, candidates=candidates, budget=EffortBudget(min_s=600.0))
    assert complexity is not None and complexity.choice is not None
    trials = {t.config.name: t for t in complexity.trials}
    assert list(trials) == ["veryfast", "medium", "veryfast+no-such-tune"]
    assert complexity.points == trials["veryfast"].points                  # the default curve
    for name in ("veryfast", "medium"):
        assert [p.crf for p in trials[name].points] == [20, 26, 32] and trials[name].encode_s > 0
        assert all(p.kbps > 0 and 0 <= p.vmaf <= 100 for p in trials[name].points)
    assert trials["medium"].points != trials["veryfast"].points             # really another encoder
    assert trials["veryfast+no-such-tune"].skipped.startswith("trial failed")
    assert {"trials", "vmaf", "medium:trials", "medium:vmaf"} <= set(complexity.steps_s)
    rows = {r["name"]: r for r in complexity.choice.as_dict()["candidates"]}
    assert rows["medium"]["predicted_encode_s"] > 0 and "saved_vs_default" in rows["medium"]
    assert rows["veryfast+no-such-tune"]["verdict"].startswith("not trialled: trial failed")
    # a budget the default's measured speed cannot stretch to: medium is not even trial-encoded
    tight = probe_complexity(path, info, candidates=candidates[:2], budget=EffortBudget(min_s=0.0, per_source_s=0.0))
    assert tight.trials[1].skipped.startswith("predicted") and not tight.choice.changed


def test_process_upload_builds_the_per_title_ladder_when_asked(tmp_path: Path):
    path = clip(tmp_path / "cartoon.mp4", "testsrc=size=640x360:rate=25")
    settings = dataclasses.replace(EncodeSettings(), per_title="1")
    result = process_upload(path, tmp_path / "work", settings=settings, measure=False)
    assert isinstance(result, ProcessResult), result
    assert result.complexity is not None and "complexity" in result.timings_s
    fixed = {r.name: r.video_kbps for r in build_ladder(result.media)}
    crfs = {r.recipe.crf for r in result.renditions}
    assert len(crfs) == 1 and 18 <= crfs.pop() <= 30
    assert all(fixed[r.recipe.name] <= r.recipe.video_kbps <= 1.5 * fixed[r.recipe.name] for r in result.renditions)
    argv = result.encode_commands[0]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-crf"] == [str(r.recipe.crf) for r in result.renditions]
    # the encoder choice was made by measurement and travels with the result (manifest / asset record)
    decision = result.as_event_fields()["ladder"]
    assert decision["per_title"] and decision["crf"] == result.renditions[0].recipe.crf
    encoder = decision["encoder"]
    names = [c["name"] for c in encoder["candidates"]]
    assert names[0] == "veryfast" and len(names) == 6 and encoder["chosen"]["name"] in names
    measured = [c for c in encoder["candidates"] if "kbps_at_vmaf" in c]
    assert measured and all(c["predicted_encode_s"] > 0 for c in measured)
    chosen = encoder["chosen"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-preset"] == [chosen["preset"]] * len(result.renditions)
    # short titles keep the fixed ladder by default ("auto": per_title_min_s)
    assert not EncodeSettings().wants_per_title(3.0) and EncodeSettings().wants_per_title(60.0)


# ---------------------------------------------------------------- equal-VMAF comparison (bench.transcode)

from processors.media.complexity import DEFAULT_TARGET_VMAF, bits_saved_at_equal_vmaf, kbps_at_vmaf  # noqa: E402

FIXED_CURVE = [(200.0, 80.0), (400.0, 88.0), (800.0, 94.0)]


def test_kbps_at_vmaf_interpolates_log_rate_and_never_extrapolates():
    assert kbps_at_vmaf(FIXED_CURVE, 88.0) == pytest.approx(400.0)
    assert kbps_at_vmaf(FIXED_CURVE, 84.0) == pytest.approx((200 * 400) ** 0.5)   # halfway in log rate
    assert kbps_at_vmaf(FIXED_CURVE, 91.0) == pytest.approx((400 * 800) ** 0.5)
    assert kbps_at_vmaf(FIXED_CURVE, 79.9) is None and kbps_at_vmaf(FIXED_CURVE, 94.1) is None
    assert kbps_at_vmaf(list(reversed(FIXED_CURVE)), 88.0) == pytest.approx(400.0)   # order does not matter
    # a dearer point scoring below a cheaper one (measurement noise) is dropped: the curve stays monotonic
    assert kbps_at_vmaf(FIXED_CURVE + [(500.0, 87.0)], 88.0) == pytest.approx(400.0)
    assert kbps_at_vmaf([], 50.0) is None


def test_bits_saved_at_equal_vmaf_is_zero_on_the_reference_curve_and_pools_by_rate():
    on_curve = bits_saved_at_equal_vmaf([(400.0, 88.0, FIXED_CURVE), (800.0, 94.0, FIXED_CURVE)])
    assert on_curve["saved"] == pytest.approx(0.0) and on_curve["out_of_range"] == 0
    # lower quality for fewer bits along the same curve is NOT a saving at equal VMAF
    cheaper_worse = bits_saved_at_equal_vmaf([(200.0, 80.0, FIXED_CURVE)])
    assert cheaper_worse["saved"] == pytest.approx(0.0)
    better = bits_saved_at_equal_vmaf([(200.0, 88.0, FIXED_CURVE), (800.0, 94.0, FIXED_CURVE),
                                       (100.0, 99.0, FIXED_CURVE)])
    assert better["per_rung"][:2] == [pytest.approx(0.5), pytest.approx(0.0)]
    assert better["per_rung"][2] is None and better["out_of_range"] == 1 and better["rungs_used"] == 2
    assert better["saved"] == pytest.approx(1 - 1000 / 1200)                  # pooled by rate, not averaged
    assert bits_saved_at_equal_vmaf([(1.0, 10.0, FIXED_CURVE)])["saved"] is None


def test_default_target_keeps_a_typical_title_at_the_fixed_crf():
    """The target is calibrated on the fixed ladder (CRF 23): a typical clip's probe scores ~90 at CRF 23,
    so it keeps CRF 23; an easy one gets a higher CRF (fewer bits), a hard one a lower CRF (>= 18)."""
    info = make_info(1280, 720)
    assert EncodeSettings().per_title_target_vmaf == DEFAULT_TARGET_VMAF == 90.0
    typical = Complexity(640, 360, (ProbePoint(20, 660.0, 93.1), ProbePoint(26, 300.0, 85.3),
                                    ProbePoint(32, 145.0, 70.2)), 6.0, 1.0)       # Big Buck Bunny's probe
    easy = Complexity(640, 360, (ProbePoint(20, 1300.0, 98.6), ProbePoint(26, 520.0, 96.3),
                                 ProbePoint(32, 220.0, 86.0)), 2.4, 1.0)          # fire2's probe
    hard = Complexity(640, 360, (ProbePoint(20, 3000.0, 84.0), ProbePoint(26, 1500.0, 75.0),
                                 ProbePoint(32, 700.0, 62.0)), 6.0, 1.0)
    crfs = {name: per_title_ladder(info, c)[0].crf for name, c in (("typical", typical), ("easy", easy),
                                                                  ("hard", hard))}
    assert crfs["typical"] in (22, 23, 24) and crfs["easy"] == 27 and crfs["hard"] == 18, crfs   # CRF_BOUNDS


def test_the_chosen_encoder_sets_the_recipes_and_its_own_curve_sets_the_crf():
    """The probe's encoder choice reaches every rung (preset, tune, aq-mode) and the ffmpeg arguments; the CRF
    comes from the chosen configuration's curve; without a choice (or apply_choice=False) nothing changes."""
    from processors.media.complexity import CandidateTrial, choose_encoder, config
    from processors.media.encode import output_args
    settings = EncodeSettings()
    short = make_info(1280, 720)                                    # 10 s
    fast = CandidateTrial(config("veryfast"), CURVE.points, 1.0)
    better = CandidateTrial(config("slower", tune="animation"),
                            tuple(dataclasses.replace(p, kbps=p.kbps * 0.7, vmaf=p.vmaf + 1) for p in CURVE.points), 4.0)
    choice = choose_encoder([fast, better], target_vmaf=95.0, duration_s=10.0, sampled_s=6.0,
                            reference_pixels=640 * 360, ladder_pixels=sum(r.width * r.height for r in build_ladder(short)))
    assert choice.changed and choice.config.name == "slower+animation"
    complexity = dataclasses.replace(CURVE, trials=(fast, better), choice=choice)
    ladder = per_title_ladder(short, complexity, target_vmaf=95.0)
    assert {(r.preset, r.tune, r.aq_mode) for r in ladder} == {("slower", "animation", None)}
    assert {r.crf for r in ladder} == {round(complexity.chosen_curve().crf_for(95.0))} == {24}   # its own curve
    plain = per_title_ladder(short, complexity, target_vmaf=95.0, apply_choice=False)
    assert {(r.preset, r.tune, r.aq_mode) for r in plain} == {(None, None, None)} and {r.crf for r in plain} == {23}
    assert {r.preset for r in per_title_ladder(short, CURVE)} == {None}                  # no choice: untouched
    args = output_args(short, ladder[0], 0, settings)
    assert args[args.index("-preset") + 1] == "slower" and args[args.index("-tune") + 1] == "animation"
    assert "-aq-mode" not in args
    args = output_args(short, dataclasses.replace(build_ladder(short)[0], aq_mode=3), 0, settings)
    assert args[args.index("-preset") + 1] == settings.preset and args[args.index("-aq-mode") + 1] == "3"
    assert "-tune" not in args
    assert complexity.as_dict()["encoder"]["chosen"]["name"] == "slower+animation"


def _rung_scores(path: Path, tmp: Path) -> dict:
    from processors.media.quality import measure_quality
    # the per-title CRF curve only, not the encoder choice (six candidates' trial encodes, tested by
    # test_process_upload_builds_the_per_title_ladder_when_asked): the bits and VMAF per rung depend on the curve
    settings = dataclasses.replace(EncodeSettings(), per_title="1", per_title_candidates="")
    result = process_upload(path, tmp, settings=settings, measure=False)
    assert isinstance(result, ProcessResult), result
    return {r.recipe.name: (r.file.size_bytes, measure_quality(path, result.media, r.file.path, r.recipe, max_seconds=None,
                                                          n_subsample=2)["vmaf"], r.recipe.crf)
            for r in result.renditions}


def test_per_title_encode_gives_a_flat_clip_fewer_bits_than_a_noisy_one_at_comparable_vmaf(tmp_path: Path):
    """End to end with ffmpeg: the per-title ladder encoded and scored per rung (VMAF at the source size)."""
    flat = clip(tmp_path / "flat.mp4", "testsrc=size=640x360:rate=25")
    noisy = clip(tmp_path / "noisy.mp4", "testsrc2=size=640x360:rate=25,noise=alls=20:allf=t+u")
    got = {p.stem: _rung_scores(p, tmp_path / p.stem) for p in (flat, noisy)}
    assert set(got["flat"]) == set(got["noisy"]) == {"240p", "360p"}
    for rung in ("240p", "360p"):
        (flat_bytes, flat_vmaf, flat_crf), (noisy_bytes, noisy_vmaf, noisy_crf) = got["flat"][rung], got["noisy"][rung]
        assert flat_crf >= noisy_crf, got
        assert flat_bytes < noisy_bytes / 2, got
        assert abs(flat_vmaf - noisy_vmaf) <= 8 or flat_vmaf > noisy_vmaf, got   # comparable (or better) quality
