from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone

import pytest
from fastavro import parse_schema
from fastavro.schema import load_schema
from fastavro.validation import validate

from support.media import FixtureMedia, ffprobe_json, media_fixture, shared, video_stream
from processors.media import (ContentKey, EncodeSettings, EncoderPool, ProcessResult, Progress, Rejection,
                              RejectionCode, ToolCancelled, content_key_of_path, process_upload)
from processors.media.quality import PSNR, SSIM, VMAF
from processors.media.tools import MediaTools
from processors.media.validate import Tolerance
from schemas import schema_path

media = pytest.fixture(scope="module")(media_fixture)
HLS = EncodeSettings(hls=True)


@pytest.fixture(scope="module")
def landscape_result(media: FixtureMedia, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("work")
    progress: list[Progress] = []
    result = process_upload(media["landscape.mp4"], workdir, settings=HLS, on_progress=progress.append)
    assert isinstance(result, ProcessResult), result
    return result, workdir, progress


def test_outputs_and_keys(landscape_result, media: FixtureMedia):
    result, workdir, _ = landscape_result
    assert result.content_key == content_key_of_path(media["landscape.mp4"])
    assert [r.recipe.name for r in result.renditions] == ["240p", "360p"]
    assert [t.spec.kind for t in result.thumbnails] == ["PREVIEW", "PREVIEW", "POSTER"]
    prefix = f"assets/{result.asset_id}/"
    files = result.files()
    assert len(files) == 2 + 3 + 2 * 2 + 1 and len({f.object_key for f in files}) == len(files)
    for f in files:
        assert f.object_key.startswith(prefix)
        assert f.path.is_file() and f.path.stat().st_size == f.size_bytes > 0
        assert workdir in f.path.parents
    assert files[-1].object_key == f"{prefix}master.m3u8", "playlists are uploaded last"
    assert {f.content_type for f in files} == {"video/mp4", "image/jpeg", "video/iso.segment",
                                               "application/vnd.apple.mpegurl"}
    assert not [p for p in workdir.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_renditions_carry_measurements(landscape_result):
    result, _, _ = landscape_result
    for r in result.renditions:
        assert r.duration_s == pytest.approx(result.media.duration_s, abs=0.5)
        assert r.video_kbps_measured > 0
        assert r.codecs.startswith("avc1.4d")       # main profile for SD rungs
        assert set(r.quality) in ({VMAF}, {SSIM, PSNR})
        video = video_stream(ffprobe_json(r.file.path))
        assert (video["width"], video["height"]) == (r.recipe.width, r.recipe.height)
    assert result.quality_errors == {}


def test_master_playlist_lists_every_rung(landscape_result):
    result, _, _ = landscape_result
    text = result.master_playlist.path.read_text()
    assert [ln for ln in text.splitlines() if ln.endswith(".m3u8")] == ["240p.m3u8", "360p.m3u8"]
    for r in result.renditions:
        assert f"RESOLUTION={r.recipe.width}x{r.recipe.height}" in text and r.codecs in text


def test_progress_is_ordered_and_complete(landscape_result):
    _, _, progress = landscape_result
    stages = [p.stage for p in progress]
    order = ["inspect", "encode", "thumbnails", "validate", "quality", "done"]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == order
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(0.0 <= p.stage_fraction <= 1.0 for p in progress)


def test_event_fields_match_the_avro_contract(landscape_result):
    result, _, _ = landscape_result
    schema = load_schema(str(schema_path("vitrina.UploadProcessed")))
    record = {"upload_id": "u-1", "uploader_id": "user-1", "deduplicated": False, "original_upload_id": None,
              "processed_at": datetime.now(timezone.utc), **result.as_event_fields()}
    assert validate(record, parse_schema(schema), raise_errors=True)
    assert record["hls_master_key"] == result.master_playlist.object_key
    assert record["processing_s"] > 0
    assert {r["name"] for r in record["renditions"]} == {"240p", "360p"}


def test_without_hls_or_quality(media: FixtureMedia, tmp_path):
    key = ContentKey("f" * 32, 123)   # a caller that hashed while downloading passes its key
    result = process_upload(media["tiny.mp4"], tmp_path, content_key=key, measure=False)
    assert isinstance(result, ProcessResult)
    assert result.asset_id == str(key) and result.master_playlist is None
    assert [r.quality for r in result.renditions] == [{}]
    assert [(r.recipe.name, r.recipe.width, r.recipe.height) for r in result.renditions] == [("48p", 64, 48)]
    assert len(result.files()) == 1 + 3


def test_real_portrait_three_frame_clip(tmp_path):
    result = process_upload(shared("decord__video_90.mov"), tmp_path)
    assert isinstance(result, ProcessResult), result
    assert (result.media.width, result.media.height) == (320, 568)
    assert [(r.recipe.width, r.recipe.height) for r in result.renditions] == [(240, 426)]
    poster = result.thumbnails[-1]
    assert (poster.spec.width, poster.spec.height) == (240, 426)


@pytest.mark.parametrize("name,code", [("audio.wav", RejectionCode.NO_VIDEO_STREAM),
                                       ("empty.mp4", RejectionCode.EMPTY_FILE),
                                       ("text_renamed.mp4", RejectionCode.NOT_A_VIDEO)])
def test_rejected_uploads_produce_nothing(media: FixtureMedia, tmp_path, name, code):
    result = process_upload(media[name], tmp_path / "work")
    assert isinstance(result, Rejection) and result.code == code and not result.retriable
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_validation_failure_rejects_and_cleans_up(media: FixtureMedia, tmp_path):
    impossible = Tolerance(duration_abs_s=-1.0, duration_rel=-1.0)   # no duration can pass
    result = process_upload(media["tiny.mp4"], tmp_path, tolerance=impossible, measure=False)
    assert isinstance(result, Rejection) and result.code == RejectionCode.VALIDATION_FAILED
    assert any("duration" in v for v in result.details["violations"])
    assert list(tmp_path.rglob("*.*")) == []


def test_encoder_failure_is_a_retriable_rejection(media: FixtureMedia, tmp_path):
    result = process_upload(media["tiny.mp4"], tmp_path, settings=EncodeSettings(preset="bogus"))
    assert isinstance(result, Rejection) and result.code == RejectionCode.ENCODE_FAILED and result.retriable
    assert list(tmp_path.rglob("*.*")) == []


def test_cancel_stops_and_cleans_up(media: FixtureMedia, tmp_path):
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.stage == "encode":
            cancel.set()

    with pytest.raises(ToolCancelled):
        process_upload(media["landscape.mp4"], tmp_path, on_progress=on_progress, cancel=cancel)
    assert list(tmp_path.rglob("*.*")) == []


async def test_from_asyncio_through_the_pool(media: FixtureMedia, tmp_path):
    loop_thread = threading.get_ident()
    seen: list[tuple[int, str]] = []
    result = await EncoderPool(size=1).run(process_upload, media["tiny.mp4"], tmp_path, measure=False,
                                           on_progress=lambda p: seen.append((threading.get_ident(), p.stage)))
    await asyncio.sleep(0.05)
    assert isinstance(result, ProcessResult)
    assert seen and {t for t, _ in seen} == {loop_thread} and seen[-1][1] == "done"


def test_ssim_psnr_when_vmaf_is_unavailable(media: FixtureMedia, tmp_path):
    result = process_upload(media["tiny.mp4"], tmp_path, tools=MediaTools(quality_ffmpeg="ffmpeg"))
    assert isinstance(result, ProcessResult)
    assert set(result.renditions[0].quality) == {SSIM, PSNR}


async def test_cancelling_the_task_kills_the_pipeline(tmp_path):
    """The pool hands process_upload a cancel event; cancelling the awaiting task stops ffmpeg. (The
    per-title probe is off: it would take ~30 s of this 30 s clip before the encode starts.)"""
    pool = EncoderPool(size=1)
    encoding = asyncio.Event()

    def on_progress(p: Progress) -> None:
        if p.stage == "encode":
            encoding.set()

    task = asyncio.create_task(pool.run(process_upload, shared("moviepy__big_buck_bunny_0_30.webm"), tmp_path,
                                        settings=EncodeSettings(per_title="0"), on_progress=on_progress))
    await asyncio.wait_for(encoding.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.active == 0
    assert list(tmp_path.rglob("*.*")) == []
