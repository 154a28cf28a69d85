from __future__ import annotations

import pytest

from support.media import make_info as info
from processors.media.ladder import DEFAULT_RUNGS, Recipe, build_ladder, even, scaled_size, top_recipe


LADDER_CASES = [
    # (source w, h) -> [(rung, w, h), ...]
    ((1920, 1080), [("240p", 426, 240), ("360p", 640, 360), ("480p", 854, 480), ("720p", 1280, 720), ("1080p", 1920, 1080)]),
    ((3840, 2160), [("240p", 426, 240), ("360p", 640, 360), ("480p", 854, 480), ("720p", 1280, 720), ("1080p", 1920, 1080)]),
    ((1280, 720), [("240p", 426, 240), ("360p", 640, 360), ("480p", 854, 480), ("720p", 1280, 720)]),
    ((1280, 700), [("240p", 438, 240), ("360p", 658, 360), ("480p", 878, 480)]),
    ((640, 360), [("240p", 426, 240), ("360p", 640, 360)]),
    ((640, 480), [("240p", 320, 240), ("360p", 480, 360), ("480p", 640, 480)]),
    ((1080, 1920), [("240p", 240, 426), ("360p", 360, 640), ("480p", 480, 854), ("720p", 720, 1280), ("1080p", 1080, 1920)]),
    ((320, 568), [("240p", 240, 426)]),                     # decord__video_90.mov displayed
    ((300, 200), [("200p", 300, 200)]),                     # below the lowest rung: own size
    ((193, 144), [("144p", 192, 144)]),                     # carphone, square pixels: odd width floored
    ((112, 80), [("80p", 112, 80)]),                        # moviepy__clip1024.flv
    ((65, 49), [("48p", 64, 48)]),
    ((240, 240), [("240p", 240, 240)]),
    ((1281, 721), [("240p", 426, 240), ("360p", 640, 360), ("480p", 852, 480), ("720p", 1280, 720)]),
]


@pytest.mark.parametrize("source,expected", LADDER_CASES, ids=[f"{w}x{h}" for (w, h), _ in LADDER_CASES])
def test_ladder_table(source, expected):
    recipes = build_ladder(info(*source))
    assert [(r.name, r.width, r.height) for r in recipes] == expected


@pytest.mark.parametrize("source", [s for s, _ in LADDER_CASES] + [(720, 1280), (2000, 100), (100, 2000), (7, 5)])
def test_ladder_invariants(source):
    src = info(*source)
    recipes = build_ladder(src)
    assert recipes, "at least one rendition always"
    assert any(r.short_side < 720 for r in recipes), "at least one SD rung"
    for r in recipes:
        assert r.width % 2 == 0 and r.height % 2 == 0
        assert r.width <= src.width and r.height <= src.height, "never upscale"
        assert (r.width > r.height) == (src.width > src.height) or r.width == r.height
        # aspect kept to within the even rounding of the long side
        if src.width >= src.height:
            assert abs(r.width - src.width * r.height / src.height) <= 2
        else:
            assert abs(r.height - src.height * r.width / src.width) <= 2
        assert r.codec == "h264" and r.video_kbps > 0 and r.bufsize_kbps == 2 * r.video_kbps
        assert (r.short_side >= 720) == (r.profile == "high")
    assert [r.video_kbps for r in recipes] == sorted(r.video_kbps for r in recipes)
    assert len({r.name for r in recipes}) == len(recipes)
    hd = [r for r in recipes if r.short_side >= 720]
    assert bool(hd) == (src.short_side >= 720)


def test_audio_follows_the_source():
    assert all(r.audio_kbps is None and r.audio_channels is None for r in build_ladder(info(1280, 720, audio_channels=None)))
    assert all(r.audio_channels == 2 for r in build_ladder(info(1280, 720, audio_channels=6)))
    assert all(r.audio_channels == 1 for r in build_ladder(info(1280, 720, audio_channels=1)))
    assert all(r.audio_kbps for r in build_ladder(info(1280, 720)))


def test_fps_caps():
    recipes = build_ladder(info(1920, 1080, fps=60))
    assert {r.name: r.fps_cap for r in recipes} == {"240p": 30, "360p": 30, "480p": 30, "720p": 60, "1080p": 60}


def test_tiny_source_cap_scales_with_pixels():
    small = build_ladder(info(112, 80))[0]
    lowest = min(DEFAULT_RUNGS, key=lambda r: r.short_side)
    assert 0 < small.video_kbps < lowest.video_kbps


@pytest.mark.parametrize("value,expected", [(0, 2), (1, 2), (2.9, 2), (3.1, 4), (426.67, 426), (853.33, 854)])
def test_even(value, expected):
    assert even(value) == expected


def test_scaled_size_keeps_orientation():
    assert scaled_size(1920, 1080, 360) == (640, 360)
    assert scaled_size(1080, 1920, 360) == (360, 640)


def test_top_recipe_is_the_largest():
    recipes = build_ladder(info(1920, 1080))
    assert top_recipe(recipes).name == "1080p"
    assert isinstance(recipes[0], Recipe) and recipes[0].as_dict()["name"] == "240p"
