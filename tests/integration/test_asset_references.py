"""Issue 15 (Mail.Ru) on the real stack: one stored copy with user references. Two users upload the same
bytes (one asset), a third adds it to their collection; deleting uploads and removing the reference
deletes the files only with the last reference (tombstone), and the same bytes uploaded afterwards are
transcoded again. Refusals (a private asset of someone else, a delete by a non-uploader) and a
RECOMPUTE_QUALITY event.

A dedicated worker (own app id, topic prefix and data dir) running the uploads and assets agents; the
commands go through the CLI (`vitrina upload delete`, `vitrina collection add|remove|list`,
`vitrina quality recompute --event`) or straight onto assets.commands.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from support.uploads import log_events, poll, private_app, started_worker, unique_clip, views_client
from infra.settings import Settings, to_env
from processors.asset_references import ADD_TO_COLLECTION, DELETE_UPLOAD, command
from sinks.media_store import MediaStore
from sinks.redis_views import (asset_access_key, asset_deleted_key, asset_key, asset_refs_key, collection_key,
                               upload_status_key)
from streams.capabilities.uploads.client import ResultFollower, upload_file
from streams.kafka.producer import EventProducer
from streams.kafka.topics import spec

WORKER_ENV = {"VITRINA_AGENTS": "uploads,assets", "VITRINA_ENCODE_THREADS": "1", "VITRINA_FETCH_MAX_WAIT_MS": "100"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings(stack: Settings, tmp_path_factory) -> Settings:
    return private_app(stack, tmp_path_factory.mktemp("assets-worker"), "assets")


@pytest.fixture(scope="module")
def worker(settings: Settings):
    process = started_worker(settings, "assets-1", WORKER_ENV)
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


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    code = "import sys; from streams.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **to_env(settings)}, cwd=ROOT)


def upload(settings: Settings, producer: EventProducer, path: Path, user: str, private: bool = False) -> dict:
    with ResultFollower(settings) as follower:
        request = upload_file(settings, producer, path, uploader_id=user, private=private)
        answer = follower.wait([request["upload_id"]], 300).get(request["upload_id"])
    assert answer is not None and answer.processed, answer and answer.event
    return answer.event


def publish(settings: Settings, producer: EventProducer, action: str, asset_id: str, **fields: str) -> None:
    producer.publish(spec("assets.commands"), command(action, asset_id, at=datetime.now(timezone.utc), **fields))
    producer.flush(30)


def refused(worker, **fields: str) -> list[dict]:
    return log_events(worker.log_path, "asset_command_refused", **fields)


def test_one_copy_lives_as_long_as_a_reference(settings, worker, producer, views, tmp_path):
    path = unique_clip(tmp_path, 320, 180, 1.0)
    first = upload(settings, producer, path, "alice")
    asset = first["asset_id"]
    second = upload(settings, producer, path, "bob")
    assert second["asset_id"] == asset and second["deduplicated"]
    store = MediaStore(settings)
    originals = [f"originals/{first['upload_id']}/{path.name}", f"originals/{second['upload_id']}/{path.name}"]
    assert all(store.stat(k) is not None for k in originals)
    objects = store.list_keys(f"assets/{asset}/")
    assert f"assets/{asset}/manifest.json" in objects

    run = cli(settings, "collection", "add", asset, "--user", "carol")
    assert run.returncode == 0, run.stderr
    poll(lambda: views.hget(asset_refs_key(asset), "carol"), 60, "carol's reference")
    listed = cli(settings, "collection", "list", "--user", "carol", "--json")
    assert [i["asset_id"] for i in json.loads(listed.stdout)["items"]] == [asset]

    # mallory may not delete alice's upload: refused, nothing changes
    publish(settings, producer, DELETE_UPLOAD, asset, user_id="mallory", upload_id=first["upload_id"])
    poll(lambda: refused(worker, asset_id=asset, refusal="NOT_THE_UPLOADER"), 60, "the refusal")
    assert views.hget(asset_access_key(asset), first["upload_id"]) == "public:alice"

    # alice deletes hers: bob's upload and carol's reference keep the files
    run = cli(settings, "upload", "delete", first["upload_id"], "--user", "alice")
    assert run.returncode == 0, run.stderr
    poll(lambda: json.loads(views.get(upload_status_key(first["upload_id"])))["status"] == "DELETED", 60,
         "alice's upload DELETED")
    assert views.hkeys(asset_access_key(asset)) == [second["upload_id"]]
    assert store.list_keys(f"assets/{asset}/") == objects and views.get(asset_key(asset)) is not None
    assert views.get(asset_deleted_key(asset)) is None

    # bob deletes his, carol removes hers: the last reference, the files and views go, a tombstone stays
    assert cli(settings, "upload", "delete", second["upload_id"], "--user", "bob").returncode == 0
    assert cli(settings, "collection", "remove", asset, "--user", "carol").returncode == 0
    poll(lambda: (views.get(asset_deleted_key(asset)) or "").startswith("reaped"), 120, "the reap")
    assert store.list_keys(f"assets/{asset}/") == []
    assert all(store.stat(k) is None for k in originals)
    assert views.get(asset_key(asset)) is None and not views.exists(asset_access_key(asset))
    assert not views.exists(asset_refs_key(asset)) and views.zscore(collection_key("carol"), asset) is None
    assert json.loads(views.get(upload_status_key(second["upload_id"])))["state"] == "DELETED"

    # the same bytes again: the dedupe table still says DONE, the tombstone says the files are gone
    third = upload(settings, producer, path, "dora")
    assert third["asset_id"] == asset and not third["deduplicated"]
    assert store.read_manifest(asset) is not None and views.get(asset_deleted_key(asset)) is None
    assert views.hgetall(asset_access_key(asset)) == {third["upload_id"]: "public:dora"}
    assert log_events(worker.log_path, "asset_reaped_transcoding_again", asset_id=asset)


def test_private_assets_cannot_be_collected_by_others_and_quality_recomputes_on_an_event(
        settings, worker, producer, views, tmp_path):
    path = unique_clip(tmp_path, 320, 180, 1.0)
    mine = upload(settings, producer, path, "alice", private=True)
    asset = mine["asset_id"]
    publish(settings, producer, ADD_TO_COLLECTION, asset, user_id="carol")
    poll(lambda: refused(worker, asset_id=asset, refusal="FORBIDDEN"), 60, "the FORBIDDEN refusal")
    assert views.hget(asset_refs_key(asset), "carol") is None
    publish(settings, producer, ADD_TO_COLLECTION, asset, user_id="alice")        # her own private video
    poll(lambda: views.hget(asset_refs_key(asset), "alice"), 60, "alice's reference")

    store = MediaStore(settings)
    before = store.read_manifest(asset)
    assert "quality_recomputed_at" not in before
    run = cli(settings, "quality", "recompute", asset, "--event", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["published"]["action"] == "RECOMPUTE_QUALITY"
    after = poll(lambda: (store.read_manifest(asset) or {}).get("quality_recomputed_at") and store.read_manifest(asset),
                 240, "the recomputed manifest")
    assert after["quality_scope"] == "whole_title"
    for rendition in after["fields"]["renditions"]:
        assert rendition["quality"]
    view = json.loads(views.get(asset_key(asset)))
    assert view["fields"]["renditions"] == after["fields"]["renditions"]
    assert log_events(worker.log_path, "quality_recomputed", asset_id=asset)
    assert worker.alive()


def test_cli_errors_name_the_field(settings):
    run = cli(settings, "collection", "add", "x" * 8, "--json")
    assert run.returncode == 1 and "--user" in json.loads(run.stderr.strip().splitlines()[-1])["message"]
    run = cli(settings, "upload", "delete", "no-such-upload-" + uuid.uuid4().hex, "--user", "u", "--json")
    error = json.loads(run.stderr.strip().splitlines()[-1])
    assert run.returncode == 1 and error["error"] == "UNKNOWN_UPLOAD" and "upload_id" in error["message"]


def test_api_lists_the_token_users_collection(stack: Settings, tmp_path):
    import asyncio

    import redis.asyncio as aioredis
    from aiohttp.test_utils import TestClient, TestServer

    from api.app import create_app
    from api.auth import TokenConfig
    from sinks.asset_references import add_reference
    from sinks.upload_views import asset_view, write_upload_views

    user, other = f"coll-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    asset_id = uuid.uuid4().hex + "-42"
    settings = dataclasses.replace(stack, data_dir=tmp_path)

    async def scenario() -> None:
        redis = aioredis.from_url(settings.redis_url, decode_responses=True)
        try:
            await write_upload_views(redis, asset_view(asset_id, {"upload_id": "u", "uploader_id": other},
                                                       {"asset_id": asset_id, "duration_s": 2.5}), [])
            assert await add_reference(redis, asset_id, user, at_ms=1_700_000_000_000)
            tokens = TokenConfig.from_settings(settings)
            async with TestClient(TestServer(create_app(settings))) as client:
                mine = await client.get("/v1/collection", headers={"Authorization": f"Bearer {tokens.mint(user)}"})
                assert mine.status == 200
                body = await mine.json()
                assert body["user_id"] == user
                assert body["items"] == [{"asset_id": asset_id, "added_at_ms": 1_700_000_000_000, "title": None,
                                          "duration_s": 2.5, "available": True}]
                assert (await client.get("/v1/collection")).status == 401
                theirs = await client.get("/v1/collection", params={"user_id": user},
                                          headers={"Authorization": f"Bearer {tokens.mint(other)}"})
                assert theirs.status == 403
        finally:
            await redis.delete(asset_key(asset_id), collection_key(user), asset_refs_key(asset_id))
            await redis.aclose()

    asyncio.run(scenario())


def test_a_malformed_command_goes_to_the_dead_letter_topic(settings, worker, producer):
    from streams.kafka.codec import default_codec
    from streams.kafka.tail import tail

    key = f"bad-{uuid.uuid4().hex[:8]}".encode()
    producer.publish_raw("assets.commands", b"\x00not avro", key)
    producer.flush(30)

    def letter():
        found = [r.value for r in tail(settings, default_codec(), "dlq.assets.commands")
                 if r.value and r.value["key"] == key]
        return found[0] if found else None

    found = poll(letter, 120, "the dead letter")
    assert found["agent"] == "asset-commands" and found["reason_code"] == "BAD_MAGIC"
    assert found["source_topic"] == "assets.commands"
    assert worker.alive()
