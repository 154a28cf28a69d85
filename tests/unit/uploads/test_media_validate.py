from __future__ import annotations

from dataclasses import replace

import pytest

from support.media import FixtureMedia, ffprobe_json, media_fixture
from processors.media.encode import EncodeSettings, encode_renditions
from processors.media.inspect import MediaInfo, inspect
from processors.media.ladder import build_ladder
from processors.media.rejection import RejectionCode
from processors.media.thumbnails import make_thumbnails, plan_thumbnails
from processors.media.validate import (Tolerance, check_media_playlist, check_rendition, check_thumbnail,
                                       moov_before_mdat, rejection_for, validate_outputs)

media = pytest.fixture(scope="module")(media_fixture)


@pytest.fixture(scope="module")
def encoded(media: FixtureMedia, tmp_path_factory):
    source = media["landscape.mp4"]
    info = inspect(source)
    assert isinstance(info, MediaInfo)
    out = tmp_path_factory.mktemp("validate")
    result = encode_renditions(source, info, build_ladder(info), out, EncodeSettings(hls=True))
    specs = plan_thumbnails(info, build_ladder(info))
    thumbs = make_thumbnails(source, info, specs, out / "thumbs")
    return info, result, thumbs


def checks(violations) -> set[str]:
    return {v.check for v in violations}


def test_outputs_pass(encoded):
    info, result, thumbs = encoded
    assert validate_outputs(info, [(r.recipe, r.path) for r in result.renditions],
                            [(t.spec, t.path) for t in thumbs]) == []
    for r in result.renditions:
        assert check_media_playlist(r.hls_playlist.read_text(), r.recipe, info, r.hls_segments.stat().st_size) == []


def test_wrong_dimensions_are_caught(encoded):
    info, result, _ = encoded
    r = result.renditions[0]
    wrong = replace(r.recipe, width=r.recipe.width + 2)
    found = check_rendition(ffprobe_json(r.path), wrong, info)
    assert checks(found) == {"dimensions"}
    assert "dimensions" in str(found[0]) and r.recipe.name in str(found[0])


def test_audio_must_match_the_source(encoded, media: FixtureMedia):
    info, result, _ = encoded
    r = result.renditions[0]
    assert checks(check_rendition(ffprobe_json(r.path), replace(r.recipe, audio_kbps=None), info)) == {"audio_streams"}
    silent = inspect(media["tiny.mp4"])
    silent_out = encode_renditions(media["tiny.mp4"], silent, build_ladder(silent), r.path.parent / "silent")
    needs_audio = replace(silent_out.renditions[0].recipe, audio_kbps=64)
    assert checks(check_rendition(ffprobe_json(silent_out.renditions[0].path), needs_audio, silent)) == {"audio_streams"}


def test_duration_tolerance(encoded):
    info, result, _ = encoded
    r = result.renditions[0]
    data = ffprobe_json(r.path)
    assert check_rendition(data, r.recipe, replace(info, duration_s=info.duration_s + 0.4)) == []
    assert checks(check_rendition(data, r.recipe, replace(info, duration_s=info.duration_s + 1.0))) == {"duration"}
    strict = Tolerance(duration_abs_s=0.0, duration_rel=0.0)
    assert checks(check_rendition(data, r.recipe, replace(info, duration_s=info.duration_s + 0.2), strict)) == {"duration"}


def test_codec_profile_fps_and_bitrate(encoded):
    info, result, _ = encoded
    r = result.renditions[0]
    data = ffprobe_json(r.path)
    assert checks(check_rendition(data, replace(r.recipe, profile="high"), info)) == {"profile"}
    assert checks(check_rendition(data, replace(r.recipe, codec="hevc"), info)) == {"video_codec"}
    assert checks(check_rendition(data, replace(r.recipe, fps_cap=10.0), info)) == {"fps"}
    assert checks(check_rendition(data, replace(r.recipe, video_kbps=1), info)) == {"video_kbps"}


def test_faststart_is_checked(encoded, media: FixtureMedia):
    _, result, _ = encoded
    assert moov_before_mdat(result.renditions[0].path) is True
    assert moov_before_mdat(media["tail_moov.mp4"]) is False
    info, r = encoded[0], result.renditions[0]
    assert checks(check_rendition(ffprobe_json(r.path), r.recipe, info, faststart=False)) == {"faststart"}


def test_not_an_mp4(encoded, media: FixtureMedia):
    info, result, _ = encoded
    found = check_rendition(ffprobe_json(media["webm30.webm"]), result.renditions[0].recipe, info)
    assert {"container", "video_codec", "dimensions"} <= checks(found)


def test_missing_and_unreadable_outputs(encoded, tmp_path):
    info, result, thumbs = encoded
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    found = validate_outputs(info, [(result.renditions[0].recipe, tmp_path / "gone.mp4"),
                                    (result.renditions[1].recipe, garbage)],
                             [(thumbs[0].spec, tmp_path / "gone.jpg")])
    assert [(v.output, v.check) for v in found] == [(result.renditions[0].recipe.name, "exists"),
                                                    (result.renditions[1].recipe.name, "readable"),
                                                    (thumbs[0].spec.name, "exists")]


def test_thumbnail_dimensions(encoded):
    _, _, thumbs = encoded
    poster = thumbs[2]
    assert check_thumbnail(ffprobe_json(poster.path), poster.spec) == []
    assert checks(check_thumbnail(ffprobe_json(poster.path), replace(poster.spec, width=poster.spec.width * 2))) == {"dimensions"}


def test_media_playlist_checks(encoded):
    info, result, _ = encoded
    r = result.renditions[0]
    text = r.hls_playlist.read_text()
    size = r.hls_segments.stat().st_size
    assert checks(check_media_playlist(text.replace("#EXT-X-ENDLIST", ""), r.recipe, info, size)) == {"endlist"}
    assert checks(check_media_playlist(text, r.recipe, info, size - 100)) == {"byte_range"}
    assert checks(check_media_playlist(text.replace(f"{r.recipe.name}.m4s", "other.m4s"), r.recipe, info, size)) == {"segment_uri"}
    assert checks(check_media_playlist(text, r.recipe, replace(info, duration_s=10.0), size)) == {"duration"}
    assert checks(check_media_playlist("garbage", r.recipe, info, size)) == {"playlist"}


def test_rejection_for():
    assert rejection_for([]) is None
    from processors.media.validate import Violation
    rejection = rejection_for([Violation("240p", "dimensions", "426x240", "428x240")])
    assert rejection.code == RejectionCode.VALIDATION_FAILED and "240p" in rejection.message
    assert rejection.details["violations"] == ["240p: dimensions expected '426x240', got '428x240'"]
