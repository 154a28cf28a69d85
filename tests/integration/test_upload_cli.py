"""`vitrina upload` as a user runs it: a subprocess against the test stack and the session worker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.uploads import unique_audio, unique_clip
from infra.settings import Settings
from processors.media.content_key import content_key_of_path
from sinks.media_store import MediaStore


def vitrina(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    # not `-m streams.cli`: plugin commands register on the imported streams.cli module
    code = "import sys; from streams.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "VITRINA_LOG_JSON": "1"}, cwd=Path(__file__).resolve().parents[2])


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-media")


def test_upload_and_wait_prints_the_processed_result(worker, stack: Settings, media_dir: Path):
    path = unique_clip(media_dir, 320, 180, 1.0)
    run = vitrina("upload", str(path), "--title", "Cat video", "--uploader", "cli-user", "--tags", "cats, funny",
                  "--age-rating", "6", "--wait", "--json")
    assert run.returncode == 0, run.stderr
    request, answer = json_lines(run.stdout)
    request = request["request"]
    assert request["title"] == "Cat video" and request["uploader_id"] == "cli-user"
    assert request["tags"] == ["cats", "funny"] and request["age_rating"] == 6
    assert request["object_key"] == f"originals/{request['upload_id']}/{path.name}"
    assert request["size_bytes"] == path.stat().st_size
    assert MediaStore(stack).stat(request["object_key"]).size == path.stat().st_size
    assert answer["status"] == "PROCESSED"
    event = answer["event"]
    assert event["upload_id"] == request["upload_id"] and event["asset_id"] == str(content_key_of_path(path))
    assert [r["name"] for r in event["renditions"]] == ["180p"]

    again = vitrina("upload", str(path), "--wait", "--urls")        # human output of a duplicate
    assert again.returncode == 0, again.stderr
    assert f"linked to upload {request['upload_id']}, not transcoded" in again.stdout
    assert "180p" in again.stdout and "sig=" in again.stdout and "kid=" in again.stdout


def test_rejected_upload_exits_2_with_the_reason(worker, media_dir: Path):
    run = vitrina("upload", str(unique_audio(media_dir)), "--wait", "--json")
    assert run.returncode == 2, run.stderr
    answer = json_lines(run.stdout)[-1]
    assert answer["status"] == "REJECTED" and answer["event"]["reason_code"] == "NO_VIDEO_STREAM"
    human = vitrina("upload", str(unique_audio(media_dir)), "--wait")
    assert human.returncode == 2 and "NO_VIDEO_STREAM" in human.stdout


def test_without_wait_it_only_publishes(worker, media_dir: Path):
    path = unique_clip(media_dir, 160, 120, 1.0, audio=False)
    run = vitrina("upload", str(path), "--json")
    assert run.returncode == 0, run.stderr
    (line,) = json_lines(run.stdout)
    assert line["request"]["file_name"] == path.name


def test_missing_local_file_is_a_clear_error(stack, media_dir: Path):
    run = vitrina("upload", str(media_dir / "nope.mp4"), "--json")
    assert run.returncode == 1
    error = json.loads(run.stderr.strip().splitlines()[-1])
    assert error["error"] == "FILE_NOT_FOUND" and "nope.mp4" in error["message"]
