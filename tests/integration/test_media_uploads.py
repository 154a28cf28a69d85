"""Issue 15 on the real stack: uploads you can follow (uploads.status events and the status view), camera
files through the worker, and a worker killed with SIGKILL mid-encode (its ffmpeg dies with it, the
restarted worker sweeps the `.part` files and finishes the upload).

A dedicated uploads-only worker (own app id, topic prefix and data dir) so the kill does not touch the
session's shared worker.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.media import FixtureMedia, media_fixture
from support.uploads import log_events, poll, private_app, started_worker, unique_clip, views_client
from infra.ports import pick_free_ports
from infra.settings import Settings, to_env
from processors.media.orphans import PID_FILE
from sinks.media_store import MediaStore
from sinks.redis_views import asset_key, upload_status_key
from streams.capabilities.uploads.client import ResultFollower, upload_file
from streams.kafka.producer import EventProducer
from streams.ops.supervisor import start_worker

media = pytest.fixture(scope="module")(media_fixture)
processed_assets: list[str] = []
WORKER_ENV = {"VITRINA_AGENTS": "uploads", "VITRINA_ENCODE_PRESET": "slower", "VITRINA_ENCODE_THREADS": "1",
              "VITRINA_FETCH_MAX_WAIT_MS": "100"}


@pytest.fixture(scope="module")
def settings(stack: Settings, tmp_path_factory) -> Settings:
    return private_app(stack, tmp_path_factory.mktemp("media-worker"), "media")


@pytest.fixture(scope="module")
def worker(settings: Settings):
    process = started_worker(settings, "media-1", WORKER_ENV)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def producer(worker, settings: Settings) -> EventProducer:
    return EventProducer(settings)


@pytest.fixture(scope="module")
def views(settings: Settings):
    client = views_client(settings)
    yield client
    client.close()


def test_an_upload_is_followed_from_pending_to_ready(settings, worker, producer, views, tmp_path):
    path = unique_clip(tmp_path, 640, 360, 4.0)
    seen_views: list[dict] = []
    with ResultFollower(settings, statuses=True) as follower:
        request = upload_file(settings, producer, path, uploader_id="carol", private=True)
        upload_id = request["upload_id"]
        deadline = time.monotonic() + 240
        while upload_id not in follower.seen and time.monotonic() < deadline:
            follower.poll(0.2)
            raw = views.get(upload_status_key(upload_id))
            if raw and (not seen_views or json.loads(raw)["status"] != seen_views[-1]["status"]):
                seen_views.append(json.loads(raw))
        assert upload_id in follower.seen and follower.seen[upload_id].processed
        events = follower.wait_final_statuses([upload_id], 30)[upload_id]
    statuses = [e["status"] for e in events]
    assert statuses[0] == "PENDING" and statuses[-1] == "READY", statuses
    assert "INSPECTING" in statuses and "ENCODING" in statuses
    assert statuses.index("PENDING") < statuses.index("INSPECTING") < statuses.index("ENCODING")
    encoding = [e["percent"] for e in events if e["status"] == "ENCODING"]
    assert encoding == sorted(encoding) and len(encoding) >= 2 and 0 < encoding[-1] < 100
    assert events[-1]["percent"] == 100 and events[-1]["asset_id"] == follower.seen[upload_id].event["asset_id"]
    assert {e["uploader_id"] for e in events} == {"carol"}
    # the status view (what GET /v1/uploads/{id} returns) went through the same states
    view_states = [v["status"] for v in seen_views]
    assert "ENCODING" in view_states, view_states
    processed_assets.append(follower.seen[upload_id].event["asset_id"])
    final = json.loads(views.get(upload_status_key(upload_id)))
    assert (final["status"], final["state"], final["percent"], final["private"]) == ("PROCESSED", "READY", 100, True)


def test_a_bad_file_is_followed_to_rejected_with_its_reason(settings, worker, producer, tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video at all\n" * 50)
    with ResultFollower(settings, statuses=True) as follower:
        request = upload_file(settings, producer, path, uploader_id="dave")
        answer = follower.wait([request["upload_id"]], 120)[request["upload_id"]]
        events = follower.wait_final_statuses([request["upload_id"]], 30)[request["upload_id"]]
    assert answer.status == "REJECTED" and answer.event["reason_code"] == "NOT_A_VIDEO"
    assert [e["status"] for e in events][0] == "PENDING"
    assert events[-1]["status"] == "REJECTED" and events[-1]["reason_code"] == "NOT_A_VIDEO"
    assert worker.alive()


def test_camera_files_through_the_worker(settings, worker, producer, media: FixtureMedia):
    """Interlaced, VFR, two audio tracks, DCI 4K, HLG: each processed (none refused), the extra audio
    track stored beside the renditions."""
    names = ["interlaced_576i.mp4", "vfr_phone.mp4", "two_audio.mp4", "dci_4k.mp4", "hdr_hlg10.mp4"]
    store = MediaStore(settings)
    with ResultFollower(settings) as follower:
        ids = {upload_file(settings, producer, media[n], uploader_id="cam")["upload_id"]: n for n in names}
        answers = follower.wait(ids, 600)
    assert set(answers) == set(ids)
    for upload_id, name in ids.items():
        assert answers[upload_id].processed, (name, answers[upload_id].event)
    by_name = {ids[u]: a.event for u, a in answers.items()}
    assert [r["name"] for r in by_name["dci_4k.mp4"]["renditions"]][-1] == "1080p"
    assert (by_name["dci_4k.mp4"]["renditions"][-1]["width"], by_name["dci_4k.mp4"]["renditions"][-1]["height"]) \
        == (2048, 1080)
    asset = by_name["two_audio.mp4"]["asset_id"]
    assert store.stat(f"assets/{asset}/audio-1.mp4") is not None


def test_quality_recompute_scores_a_stored_asset_again_without_reencoding(settings, worker, views):
    assert processed_assets, "needs the followed upload of the first test"
    asset_id = processed_assets[0]
    store = MediaStore(settings)
    before = store.read_manifest(asset_id)
    assert before["source_object_key"].startswith("originals/")
    sizes = {r["object_key"]: store.stat(r["object_key"]).size for r in before["fields"]["renditions"]}
    env = {**os.environ, **to_env(settings)}
    run = subprocess.run([sys.executable, "-m", "streams.cli", "quality", "recompute", asset_id, "--json",
                          "--n-subsample", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result["renditions"]) == {r["name"] for r in before["fields"]["renditions"]}
    assert result["scope"] == "whole_title"
    after = store.read_manifest(asset_id)
    assert after["quality_scope"] == "whole_title" and after["quality_n_subsample"] == 2
    for rendition in after["fields"]["renditions"]:
        assert set(rendition["quality"]) in ({"vmaf"}, {"ssim", "psnr"})
        assert rendition["quality"] == result["renditions"][rendition["name"]]["after"]
        assert store.stat(rendition["object_key"]).size == sizes[rendition["object_key"]], "not re-encoded"
    view = json.loads(views.get(asset_key(asset_id)))
    assert view["fields"]["renditions"] == after["fields"]["renditions"]
    unknown = subprocess.run([sys.executable, "-m", "streams.cli", "quality", "recompute",
                              "0" * 32 + "-1", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert unknown.returncode == 2 and json.loads(unknown.stdout)["error"] == "UNKNOWN_ASSET"


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_mid_encode_leaves_no_ffmpeg_and_no_part_file(settings, worker, producer, tmp_path):
    work = settings.data_dir / "uploads" / "work"
    path = unique_clip(tmp_path, 640, 360, 10.0)
    with ResultFollower(settings) as follower:
        request = upload_file(settings, producer, path, uploader_id="erin")
        pid_file = poll(lambda: next(iter(work.glob(f"*/{PID_FILE}")), None), 120, "an encode to start")
        ffmpeg_pid = int(poll(lambda: pid_file.read_text().strip() if pid_file.is_file() else None, 10, "pid"))
        poll(lambda: list(work.glob("*/*.part")), 30, "the .part files")
        assert running(ffmpeg_pid)
        worker.kill()                                            # SIGKILL, no shutdown hook runs
        poll(lambda: not running(ffmpeg_pid), 5, "ffmpeg to die with its worker")
        assert list(work.glob("*/*.part")), "the crash left its partial files behind"
        restarted = start_worker(settings, web_port=pick_free_ports(1)[0], name="media-2", extra_env=WORKER_ENV)
        try:
            swept = log_events(restarted.log_path, "swept_orphaned_work")
            assert swept and swept[-1]["part_files"] >= 1
            assert not list(work.glob("*/*.part")) or all(
                p.parent.stat().st_mtime > time.time() - 60 for p in work.glob("*/*.part")), "old parts remain"
            answer = follower.wait([request["upload_id"]], 300).get(request["upload_id"])
            assert answer is not None and answer.processed, answer and answer.event
            leftovers = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.split()
            assert leftovers == [] or leftovers == [str(os.getpid())]
            assert not list(work.glob("*/*.part"))
        finally:
            restarted.stop()
