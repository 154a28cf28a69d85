from __future__ import annotations

import pytest

from support.media import FixtureMedia, media_fixture
from processors.media.encode import EncodeSettings, encode_renditions
from processors.media.inspect import MediaInfo, inspect
from processors.media.ladder import build_ladder
from processors.media.quality import (PSNR, SSIM, VMAF, QualityError, build_quality_argv, default_metrics,
                                      measure_quality, parse_scores)
from processors.media.tools import MediaTools, available_filters

media = pytest.fixture(scope="module")(media_fixture)
DEBIAN = MediaTools(quality_ffmpeg="ffmpeg")


@pytest.fixture(scope="module")
def vmaf_tools() -> MediaTools:
    tools = MediaTools()
    # imageio-ffmpeg (a dependency) ships a static ffmpeg with libvmaf: without it the install is broken
    assert "libvmaf" in available_filters(tools.resolved_quality_ffmpeg()), \
        f"{tools.resolved_quality_ffmpeg()} has no libvmaf filter: reinstall imageio-ffmpeg (bash infra/setup.sh)"
    return tools


def encode_at(source, crf: int, out):
    info = inspect(source)
    assert isinstance(info, MediaInfo)
    result = encode_renditions(source, info, build_ladder(info), out, EncodeSettings(crf=crf))
    return info, result.renditions[-1]


@pytest.fixture(scope="module")
def good_and_bad(media: FixtureMedia, tmp_path_factory):
    source = media["landscape.mp4"]
    info, good = encode_at(source, 18, tmp_path_factory.mktemp("good"))
    _, bad = encode_at(source, 45, tmp_path_factory.mktemp("bad"))
    return source, info, good, bad


def test_filter_detection():
    assert "libvmaf" not in available_filters("ffmpeg")        # Debian 5.1 build
    assert {"ssim", "psnr"} <= available_filters("ffmpeg")
    assert default_metrics("ffmpeg") == (SSIM, PSNR)


def test_vmaf_is_the_default_where_available(vmaf_tools):
    assert default_metrics(vmaf_tools.resolved_quality_ffmpeg()) == (VMAF,)


def test_vmaf_ranks_encodes(good_and_bad, vmaf_tools):
    source, info, good, bad = good_and_bad
    good_score = measure_quality(source, info, good.path, good.recipe, tools=vmaf_tools)
    bad_score = measure_quality(source, info, bad.path, bad.recipe, tools=vmaf_tools)
    assert set(good_score) == {VMAF}
    assert 0 <= bad_score[VMAF] < good_score[VMAF] <= 100
    assert good_score[VMAF] >= 90, "crf 18 at the source size is visually lossless"


def test_ssim_psnr_fallback_ranks_encodes(good_and_bad):
    source, info, good, bad = good_and_bad
    good_score = measure_quality(source, info, good.path, good.recipe, tools=DEBIAN)
    bad_score = measure_quality(source, info, bad.path, bad.recipe, tools=DEBIAN)
    assert set(good_score) == {SSIM, PSNR}
    assert 0 < bad_score[SSIM] < good_score[SSIM] <= 1
    assert 0 < bad_score[PSNR] < good_score[PSNR]


def test_recomputing_without_reencoding_is_stable(good_and_bad):
    source, info, good, _ = good_and_bad
    first = measure_quality(source, info, good.path, good.recipe, tools=DEBIAN)
    assert measure_quality(source, info, good.path, good.recipe, tools=DEBIAN) == first


def test_frames_are_paired_by_index(media: FixtureMedia, tmp_path, vmaf_tools):
    """30 fps in WebM's 1 ms timebase: pairing by timestamp matched neighbouring frames (VMAF ~83
    for a crf 18 encode); pairing by index gives the real score."""
    source = media["webm30.webm"]
    info, rendition = encode_at(source, 18, tmp_path)
    assert measure_quality(source, info, rendition.path, rendition.recipe, tools=vmaf_tools)[VMAF] >= 90


def test_downscaled_rung_is_compared_at_source_size(media: FixtureMedia, tmp_path):
    source = media["landscape.mp4"]
    info = inspect(source)
    result = encode_renditions(source, info, build_ladder(info), tmp_path, EncodeSettings(crf=18))
    small, full = result.renditions[0], result.renditions[-1]
    assert (small.recipe.width, full.recipe.width) == (426, 640)
    small_score = measure_quality(source, info, small.path, small.recipe, tools=DEBIAN)
    full_score = measure_quality(source, info, full.path, full.recipe, tools=DEBIAN)
    assert small_score[PSNR] < full_score[PSNR], "upscaled 240p loses detail against the 360p source"


def test_fps_capped_rung(media: FixtureMedia, tmp_path):
    source = media["fast60.mp4"]
    info, rendition = encode_at(source, 18, tmp_path)
    argv = build_quality_argv(source, info, rendition.path, rendition.recipe, [SSIM], ffmpeg_exe="ffmpeg")
    assert "fps=30" in argv[argv.index("-filter_complex") + 1]
    score = measure_quality(source, info, rendition.path, rendition.recipe, tools=DEBIAN)
    assert score[SSIM] > 0.95, "reference resampled to the rung's 30 fps before pairing"


def test_argv_shape(media: FixtureMedia):
    info = inspect(media["landscape.mp4"])
    recipe = build_ladder(info)[0]
    argv = build_quality_argv("src.mp4", info, "enc.mp4", recipe, [VMAF, SSIM], ffmpeg_exe="ff",
                              vmaf_log="/tmp/x/vmaf.json", max_seconds=4, n_subsample=3)
    graph = argv[argv.index("-filter_complex") + 1]
    assert argv.count("-t") == 2 and argv[argv.index("-t") + 1] == "4"
    assert argv.index("src.mp4") < argv.index("enc.mp4")
    assert graph.count("settb=1/30,setpts=N") == 2
    assert f"scale={info.width}:{info.height}" in graph
    assert "n_subsample=3" in graph and "select" not in graph     # VMAF needs every frame
    assert argv.count("null") == 2
    ssim_only = build_quality_argv("src.mp4", info, "enc.mp4", recipe, [SSIM], ffmpeg_exe="ff", n_subsample=3)
    assert "select=not(mod(n\\,3))" in ssim_only[ssim_only.index("-filter_complex") + 1]
    with pytest.raises(ValueError):
        build_quality_argv("src.mp4", info, "enc.mp4", recipe, [VMAF], ffmpeg_exe="ff", vmaf_log="/tmp/a b:c.json")
    with pytest.raises(ValueError):
        build_quality_argv("src.mp4", info, "enc.mp4", recipe, ["mos"], ffmpeg_exe="ff")


def test_parse_scores():
    stderr = ("[Parsed_ssim_4 @ 0x1] SSIM Y:0.990 (20.0) U:0.99 (20.0) V:0.99 (20.0) All:0.991234 (20.5)\n"
              "[Parsed_psnr_5 @ 0x2] PSNR y:40.1 u:45.0 v:45.0 average:41.23456 min:38.0 max:44.0\n")
    assert parse_scores(stderr, None, [SSIM, PSNR]) == {SSIM: 0.9912, PSNR: 41.2346}
    assert parse_scores("PSNR y:inf average:inf min:inf max:inf", None, [PSNR]) == {PSNR: float("inf")}
    assert parse_scores("", '{"pooled_metrics": {"vmaf": {"mean": 93.21234}}}', [VMAF]) == {VMAF: 93.212}
    with pytest.raises(QualityError):
        parse_scores("", None, [SSIM])
    with pytest.raises(QualityError):
        parse_scores("", None, [VMAF])


def test_vmaf_on_an_ffmpeg_without_it_is_an_error(good_and_bad):
    source, info, good, _ = good_and_bad
    with pytest.raises(QualityError):
        measure_quality(source, info, good.path, good.recipe, metrics=[VMAF], tools=DEBIAN)
