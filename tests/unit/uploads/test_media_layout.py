from __future__ import annotations

import pytest

from processors.media import layout
from processors.media.layout import Variant, avc1_codec, render_master_playlist

ASSET = "0123456789abcdef0123456789abcdef-1055736"


@pytest.mark.parametrize("fn,args,expected", [
    (layout.asset_prefix, (ASSET,), f"assets/{ASSET}/"),
    (layout.rendition_key, (ASSET, "720p"), f"assets/{ASSET}/720p.mp4"),
    (layout.media_playlist_key, (ASSET, "720p"), f"assets/{ASSET}/720p.m3u8"),
    (layout.segment_file_key, (ASSET, "720p"), f"assets/{ASSET}/720p.m4s"),
    (layout.thumbnail_key, (ASSET, "poster"), f"assets/{ASSET}/thumbs/poster.jpg"),
    (layout.master_playlist_key, (ASSET,), f"assets/{ASSET}/master.m3u8"),
])
def test_keys(fn, args, expected):
    assert fn(*args) == expected


@pytest.mark.parametrize("asset_id,name", [
    ("../secrets", "720p"), ("0123-1", "720p"), (ASSET + "/x", "720p"), (ASSET, "../720p"), (ASSET, "a/b"),
    (ASSET, ""), (ASSET, ".hidden"),
])
def test_unsafe_keys_are_refused(asset_id, name):
    with pytest.raises(ValueError):
        layout.rendition_key(asset_id, name)


@pytest.mark.parametrize("key,kind", [("a/720p.mp4", "video/mp4"), ("a/master.m3u8", "application/vnd.apple.mpegurl"),
                                      ("a/thumbs/poster.jpg", "image/jpeg"), ("a/720p.m4s", "video/iso.segment"),
                                      ("a/blob", "application/octet-stream")])
def test_content_types(key, kind):
    assert layout.content_type(key) == kind


@pytest.mark.parametrize("profile,level,expected", [("high", 31, "avc1.64001f"), ("main", 30, "avc1.4d401e"),
                                                    ("baseline", 30, "avc1.42c01e"), ("high", 40, "avc1.640028")])
def test_avc1_codec(profile, level, expected):
    assert avc1_codec(profile, level) == expected


def test_master_playlist():
    variants = [
        Variant("720p.m3u8", 2_928_000, 1_600_000, 1280, 720, "avc1.64001f,mp4a.40.2", 25.0),
        Variant("240p.m3u8", 464_000, 370_000, 426, 240, "avc1.4d4015,mp4a.40.2", 25.0),
    ]
    text = render_master_playlist(variants)
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U" and text.endswith("\n")
    infs = [ln for ln in lines if ln.startswith("#EXT-X-STREAM-INF:")]
    uris = [ln for ln in lines if ln and not ln.startswith("#")]
    assert uris == ["240p.m3u8", "720p.m3u8"]          # lowest bandwidth first
    assert len(infs) == 2
    assert "BANDWIDTH=464000" in infs[0] and "RESOLUTION=426x240" in infs[0]
    assert 'CODECS="avc1.64001f,mp4a.40.2"' in infs[1] and "FRAME-RATE=25.000" in infs[1]
    assert lines.index(infs[0]) + 1 == lines.index("240p.m3u8")


def test_master_playlist_needs_variants():
    with pytest.raises(ValueError):
        render_master_playlist([])
