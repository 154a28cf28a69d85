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
    # short titles keep the fixed ladder by default ("auto": per_title_min_s)
    assert not EncodeSettings().wants_per_title(3.0) and EncodeSettings().wants_per_title(60.0)
