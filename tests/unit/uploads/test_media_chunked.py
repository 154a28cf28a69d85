"""Chunked parallel encoding (Netflix VES): keyframe-aligned chunks encoded in parallel, joined without
seams: the same frames, timestamps and duration as the single pass."""
from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from support.media import ffprobe_json, video_stream
from processors.media import EncodeSettings, inspect
from processors.media.encode import chunk_windows, encode_chunked, encode_renditions
from processors.media.ladder import build_ladder
from processors.media.pipeline import ProcessResult, process_upload


def test_chunk_windows_are_keyframe_aligned_and_cover_the_title():
    assert chunk_windows(9.0, 2.0) == [(0.0, 2.0), (2.0, 2.0), (4.0, 2.0), (6.0, 2.0), (8.0, 1.0)]
    assert chunk_windows(8.5, 2.0) == [(0.0, 2.0), (2.0, 2.0), (4.0, 2.0), (6.0, 2.5)]   # no 0.5 s sliver
    assert chunk_windows(61.0, 25.0)[1] == (24.0, 24.0)                                     # whole GOPs
    assert sum(length for _, length in chunk_windows(123.4, 30.0)) == pytest.approx(123.4)


@pytest.fixture(scope="module")
def nine_seconds(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chunked") / "nine.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25:duration=9", "-f", "lavfi", "-i", "sine=duration=9",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                    str(path)], check=True, timeout=120)
    return path


def frame_times(path: Path) -> list[float]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=pts_time",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=60).stdout
    return [float(x.strip(",")) for x in out.split() if x.strip(",")]


def test_chunked_output_matches_the_single_pass_without_seams(nine_seconds: Path, tmp_path: Path):
    info = inspect(nine_seconds)
    recipes = build_ladder(info)
    single = encode_renditions(nine_seconds, info, recipes, tmp_path / "single")
    chunked = encode_chunked(nine_seconds, info, recipes, tmp_path / "chunked", chunk_s=2.0, workers=2)
    assert len([c for c in chunked.commands if "-ss" in c]) == 5, "five chunks"
    assert not (tmp_path / "chunked" / ".chunks").exists() and not list((tmp_path / "chunked").glob("*.part"))
    for a, b in zip(single.renditions, chunked.renditions):
        pa, pb = ffprobe_json(a.path), ffprobe_json(b.path)
        assert video_stream(pb)["nb_frames"] == video_stream(pa)["nb_frames"] == "225"
        assert float(pb["format"]["duration"]) == pytest.approx(float(pa["format"]["duration"]), abs=0.05)
        assert [s["codec_type"] for s in pb["streams"]] == ["video", "audio"]
        times = frame_times(b.path)
        steps = {round(t1 - t0, 3) for t0, t1 in zip(times, times[1:])}
        assert steps == {0.04}, f"gaps or repeats at the seams: {sorted(steps)}"
        psnr = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-i", str(b.path), "-i", str(nine_seconds),
                               "-lavfi", f"[1:v]scale={b.recipe.width}:{b.recipe.height}[r];[0:v][r]psnr=stats_file=-",
                               "-f", "null", "-"], capture_output=True, text=True, timeout=120)
        per_frame = [float(x) for x in re.findall(r"psnr_avg:([0-9.]+)", psnr.stdout)]
        assert len(per_frame) == 225 and min(per_frame) > 30, "a seam frame is broken"


def test_process_upload_chooses_chunks_by_length(nine_seconds: Path, tmp_path: Path):
    settings = dataclasses.replace(EncodeSettings(), chunked_min_s=5.0, chunk_s=4.0)
    result = process_upload(nine_seconds, tmp_path / "work", settings=settings, measure=False)
    assert isinstance(result, ProcessResult), result
    assert sum(1 for c in result.encode_commands if "-ss" in c) == 3       # 0-4, 4-8, 8-9 s
    short = dataclasses.replace(EncodeSettings(), chunked_min_s=60.0)
    assert not short.wants_chunked(result.media) and settings.wants_chunked(result.media)
