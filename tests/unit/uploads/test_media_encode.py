from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest

from support.media import FixtureMedia, ffprobe_json, media_fixture, shared, video_stream
from processors.media.encode import (EncodeSettings, EncoderPool, build_encode_argv, build_filter_complex,
                                     default_concurrency, encode_renditions, video_filter_chain)
from processors.media.inspect import MediaInfo, inspect
from processors.media.ladder import build_ladder
from processors.media.tools import ToolCancelled, ToolFailed, ToolTimeout

media = pytest.fixture(scope="module")(media_fixture)


def info_of(path) -> MediaInfo:
    info = inspect(path)
    assert isinstance(info, MediaInfo), info
    return info


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".part", ".tmp")))


# ------------------------------------------------------------------ argv (pure)

def test_all_rungs_in_one_invocation(media: FixtureMedia, tmp_path):
    info = info_of(media["landscape.mp4"])
    recipes = build_ladder(info)
    assert len(recipes) == 2
    argv = build_encode_argv("src.mp4", info, [(r, tmp_path / f"{r.name}.mp4") for r in recipes])
    assert argv.count("-i") == 1, "the source is decoded once"
    graph = argv[argv.index("-filter_complex") + 1]
    assert graph.startswith(f"[0:{info.video_stream_index}]split=2[s0][s1];")
    assert f"scale={recipes[0].width}:{recipes[0].height}" in graph and f"scale={recipes[1].width}:{recipes[1].height}" in graph
    assert argv.count("-movflags") == 2 and argv.count("+faststart") == 2
    assert argv.count("libx264") == 2 and argv.count("aac") == 2
    for recipe in recipes:
        assert f"{recipe.video_kbps}k" in argv and f"{recipe.bufsize_kbps}k" in argv
        assert str(tmp_path / f"{recipe.name}.mp4") in argv
    assert argv[argv.index("-preset") + 1] == "veryfast"
    assert "-progress" in argv and "-nostdin" in argv


def test_argv_follows_the_settings(media: FixtureMedia):
    info = info_of(media["landscape.mp4"])
    recipe = build_ladder(info)[0]
    settings = EncodeSettings(ffmpeg="/opt/ffmpeg", preset="slow", crf=30, threads=1)
    argv = build_encode_argv("src.mp4", info, [(recipe, "out.mp4")], settings, progress=False)
    assert argv[0] == "/opt/ffmpeg" and "-progress" not in argv
    assert argv[argv.index("-preset") + 1] == "slow" and argv[argv.index("-crf") + 1] == "30"
    assert argv[argv.index("-threads") + 1] == "1"


def test_no_audio_mapping_without_audio(media: FixtureMedia):
    info = info_of(media["tiny.mp4"])
    argv = build_encode_argv("src.mp4", info, [(r, f"{r.name}.mp4") for r in build_ladder(info)])
    assert "aac" not in argv and "-b:a" not in argv


def test_every_rung_gets_a_constant_rate_capped_by_the_rung(media: FixtureMedia):
    fast = info_of(media["fast60.mp4"])
    assert video_filter_chain(fast, build_ladder(fast)[0]).startswith("fps=30,")
    normal = info_of(media["landscape.mp4"])
    graph = build_filter_complex(normal, build_ladder(normal))
    assert graph.count("fps=25/1,") == len(build_ladder(normal)), "the source's own rate, as a fraction"


def test_surround_is_downmixed_to_stereo(media: FixtureMedia):
    info = info_of(media["surround.mp4"])
    argv = build_encode_argv("src.mp4", info, [(r, f"{r.name}.mp4") for r in build_ladder(info)])
    assert argv[argv.index("-ac") + 1] == "2"


def test_settings_from_env():
    settings = EncodeSettings.from_env({"VITRINA_FFMPEG": "/x/ffmpeg", "VITRINA_ENCODE_PRESET": "ultrafast",
                                        "VITRINA_ENCODE_CRF": "28", "VITRINA_ENCODE_HLS": "1"})
    assert (settings.ffmpeg, settings.preset, settings.crf, settings.hls) == ("/x/ffmpeg", "ultrafast", 28, True)
    assert EncodeSettings.from_env({}) == EncodeSettings()


# ------------------------------------------------------------------ real encodes

def test_encode_landscape(media: FixtureMedia, tmp_path):
    info = info_of(media["landscape.mp4"])
    recipes = build_ladder(info)
    seen: list[float] = []
    result = encode_renditions(media["landscape.mp4"], info, recipes, tmp_path, on_progress=seen.append)
    assert [r.recipe.name for r in result.renditions] == [r.name for r in recipes]
    for rendition in result.renditions:
        assert rendition.path.name == f"{rendition.recipe.name}.mp4"
        assert rendition.size_bytes == rendition.path.stat().st_size > 0
        data = ffprobe_json(rendition.path)
        video = video_stream(data)
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", rendition.recipe.width, rendition.recipe.height)
        audio = [s for s in data["streams"] if s["codec_type"] == "audio"]
        assert [a["codec_name"] for a in audio] == ["aac"]
    assert leftovers(tmp_path) == []
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert len(result.commands) == 1 and result.commands[0].count("-i") == 1
    assert result.elapsed_s > 0 and result.media_duration_s == pytest.approx(info.duration_s)


def test_rotated_source_gives_upright_output(tmp_path):
    source = shared("decord__video_90.mov")
    info = info_of(source)
    result = encode_renditions(source, info, build_ladder(info), tmp_path)
    video = video_stream(ffprobe_json(result.renditions[0].path))
    assert (video["width"], video["height"]) == (240, 426)
    assert not any("rotation" in side for side in video.get("side_data_list", []))


def test_fps_cap_is_applied(media: FixtureMedia, tmp_path):
    info = info_of(media["fast60.mp4"])
    result = encode_renditions(media["fast60.mp4"], info, build_ladder(info), tmp_path)
    video = video_stream(ffprobe_json(result.renditions[0].path))
    assert video["avg_frame_rate"] == "30/1"


def test_one_process_per_rung_gives_the_same_files(media: FixtureMedia, tmp_path):
    info = info_of(media["portrait.mp4"])
    recipes = build_ladder(info)
    result = encode_renditions(media["portrait.mp4"], info, recipes, tmp_path, single_pass=False)
    assert len(result.commands) == len(recipes) == 2
    assert all(c.count("-i") == 1 for c in result.commands)
    for rendition in result.renditions:
        video = video_stream(ffprobe_json(rendition.path))
        assert (video["width"], video["height"]) == (rendition.recipe.width, rendition.recipe.height)


def test_hls_from_the_same_encode(media: FixtureMedia, tmp_path):
    info = info_of(media["landscape.mp4"])
    result = encode_renditions(media["landscape.mp4"], info, build_ladder(info), tmp_path, EncodeSettings(hls=True))
    for rendition in result.renditions:
        assert rendition.path.is_file() and rendition.hls_playlist.is_file() and rendition.hls_segments.is_file()
        text = rendition.hls_playlist.read_text()
        assert "#EXT-X-ENDLIST" in text and f"{rendition.recipe.name}.m4s" in text
        assert ffprobe_json(rendition.path)["format"]["format_name"].startswith("mov,mp4")
    assert result.commands[0].count("-i") == 1 and result.commands[0].count("tee") == 2


def test_ffmpeg_failure_leaves_no_partial_files(media: FixtureMedia, tmp_path):
    info = info_of(media["landscape.mp4"])
    with pytest.raises(ToolFailed) as excinfo:
        encode_renditions(media["landscape.mp4"], info, build_ladder(info), tmp_path,
                          EncodeSettings(preset="no-such-preset"))
    assert excinfo.value.returncode not in (0, None)
    assert list(tmp_path.iterdir()) == []


def test_timeout_kills_ffmpeg_and_cleans_up(tmp_path):
    source = shared("moviepy__big_buck_bunny_0_30.webm")
    info = info_of(source)
    with pytest.raises(ToolTimeout):
        encode_renditions(source, info, build_ladder(info), tmp_path, timeout_s=0.3)
    assert list(tmp_path.iterdir()) == []


def test_cancel_kills_ffmpeg_and_cleans_up(tmp_path):
    source = shared("moviepy__big_buck_bunny_0_30.webm")
    info = info_of(source)
    cancel = threading.Event()

    def on_progress(fraction: float) -> None:
        cancel.set()   # cancel as soon as ffmpeg reports anything

    with pytest.raises(ToolCancelled):
        encode_renditions(source, info, build_ladder(info), tmp_path, on_progress=on_progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_missing_source_is_a_tool_failure(media: FixtureMedia, tmp_path):
    info = info_of(media["tiny.mp4"])
    with pytest.raises(ToolFailed):
        encode_renditions(tmp_path / "gone.mp4", info, build_ladder(info), tmp_path / "out")
    assert leftovers(tmp_path / "out") == []


# ------------------------------------------------------------------ pool

def test_default_concurrency_from_settings(monkeypatch):
    from infra.settings import Settings

    monkeypatch.setenv("VITRINA_ENCODER_CONCURRENCY", "3")
    configured = Settings().encoder_concurrency
    assert default_concurrency(configured) == 3 and EncoderPool(default_concurrency(configured)).size == 3
    assert default_concurrency("0") == 1  # at least one
    monkeypatch.delenv("VITRINA_ENCODER_CONCURRENCY")
    assert Settings().encoder_concurrency == "" and default_concurrency(Settings().encoder_concurrency) >= 1
    assert EncoderPool().size == default_concurrency()


async def test_pool_bounds_concurrency():
    pool = EncoderPool(size=2)
    lock = threading.Lock()
    running = {"now": 0, "max": 0}
    release = threading.Event()

    def job(i: int) -> int:
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        release.wait(5)
        with lock:
            running["now"] -= 1
        return i * 10

    tasks = [asyncio.create_task(pool.run(job, i)) for i in range(5)]
    while running["now"] < 2:
        await asyncio.sleep(0.01)
    assert pool.active == 2
    release.set()
    assert await asyncio.gather(*tasks) == [0, 10, 20, 30, 40]
    assert running["max"] == 2 and pool.active == 0


async def test_pool_cancellation_reaches_the_worker():
    pool = EncoderPool(size=1)
    started = threading.Event()
    seen: dict[str, bool] = {}

    def job(cancel: threading.Event) -> None:
        started.set()
        seen["cancelled"] = cancel.wait(5)

    task = asyncio.create_task(pool.run(job))
    while not started.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen["cancelled"] is True and pool.active == 0


async def test_pool_delivers_progress_on_the_loop_thread(media: FixtureMedia, tmp_path):
    info = info_of(media["tiny.mp4"])
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    fractions: list[float] = []

    def on_progress(fraction: float) -> None:
        threads.add(threading.get_ident())
        fractions.append(fraction)

    result = await EncoderPool(size=1).run(encode_renditions, media["tiny.mp4"], info, build_ladder(info), tmp_path,
                                           on_progress=on_progress)
    await asyncio.sleep(0.05)   # let call_soon_threadsafe callbacks run
    assert result.renditions[0].path.is_file()
    assert fractions and fractions[-1] == 1.0 and threads == {loop_thread}


def test_source_metadata_is_not_copied(media: FixtureMedia, tmp_path):
    source = media["tagged.mp4"]
    assert ffprobe_json(source)["format"]["tags"]["title"] == "private title"
    info = info_of(source)
    result = encode_renditions(source, info, build_ladder(info), tmp_path)
    tags = ffprobe_json(result.renditions[0].path)["format"].get("tags", {})
    assert "title" not in tags and "location" not in tags and "comment" not in tags


def test_recipe_change_changes_the_output(media: FixtureMedia, tmp_path):
    info = info_of(media["tiny.mp4"])
    recipe = replace(build_ladder(info)[0], width=32, height=24, name="24p")
    result = encode_renditions(media["tiny.mp4"], info, [recipe], tmp_path)
    video = video_stream(ffprobe_json(result.renditions[0].path))
    assert (video["width"], video["height"]) == (32, 24)


def test_full_range_source_becomes_limited_range(tmp_path):
    """filetype__sample.mp4 is flagged full range ("pc"): the rendition must still be plain yuv420p."""
    source = shared("filetype__sample.mp4")
    assert video_stream(ffprobe_json(source)).get("color_range") == "pc"
    info = info_of(source)
    result = encode_renditions(source, info, build_ladder(info), tmp_path)
    video = video_stream(ffprobe_json(result.renditions[0].path))
    assert video["pix_fmt"] == "yuv420p" and video.get("color_range") == "tv"


def test_a_failing_progress_callback_stops_ffmpeg(tmp_path):
    source = shared("moviepy__big_buck_bunny_0_30.webm")
    info = info_of(source)

    def broken(fraction: float) -> None:
        raise RuntimeError("callback bug")

    with pytest.raises(RuntimeError, match="callback bug"):
        encode_renditions(source, info, build_ladder(info), tmp_path, on_progress=broken)
    assert list(tmp_path.iterdir()) == []


def test_missing_ffmpeg_is_an_environment_error(media: FixtureMedia, tmp_path):
    from processors.media.tools import ToolMissing
    info = info_of(media["tiny.mp4"])
    with pytest.raises(ToolMissing):
        encode_renditions(media["tiny.mp4"], info, build_ladder(info), tmp_path, EncodeSettings(ffmpeg="/nonexistent/ffmpeg"))
