"""Client side of uploads (the CLI, the main job, tests and the benchmark use it): put an original
into S3, publish UploadRequested, follow uploads.processed / uploads.rejected for the answer."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from confluent_kafka import KafkaError, TopicPartition

from infra.settings import Settings
from sinks.media_store import BytesCallback, MediaStore, original_key
from streams.kafka.codec import Codec, DecodeError, default_codec
from streams.kafka.offsets import partitions_of, probe_consumer
from streams.kafka.producer import EventProducer
from streams.kafka.topics import full_name, spec

PROCESSED, REJECTED = "PROCESSED", "REJECTED"
ANSWER_TOPICS = {"uploads.processed": PROCESSED, "uploads.rejected": REJECTED}
STATUS_TOPIC = "uploads.status"


def new_upload_id() -> str:
    return f"up-{uuid.uuid4().hex}"


def upload_request(upload_id: str, object_key: str, file_name: str, size_bytes: int, *, uploader_id: str = "cli",
                   title: str = "", description: str = "", tags: Iterable[str] = (), age_rating: int = 0,
                   private: bool = False, created_at: datetime | None = None) -> dict[str, Any]:
    """A vitrina.UploadRequested record."""
    return {"upload_id": upload_id, "uploader_id": uploader_id, "object_key": object_key, "file_name": file_name,
            "size_bytes": size_bytes, "title": title, "description": description, "tags": list(tags),
            "age_rating": age_rating, "private": private, "created_at": created_at or datetime.now(timezone.utc)}


def put_original(settings: Settings, path: str | Path, upload_id: str, on_bytes: BytesCallback | None = None,
                 store: MediaStore | None = None) -> tuple[str, int]:
    """Stream the file to originals/<upload_id>/<file name>; returns (object key, size)."""
    path = Path(path)
    key = original_key(upload_id, path.name)
    size = (store or MediaStore(settings)).put_original(path, key, on_bytes)
    return key, size


@dataclass(frozen=True)
class UploadResult:
    upload_id: str
    status: str                 # PROCESSED | REJECTED
    event: dict[str, Any]
    received_at: float          # time.monotonic() when read

    @property
    def processed(self) -> bool:
        return self.status == PROCESSED


class ResultFollower:
    """Reads the answer topics from their ends as of construction: create it BEFORE publishing.
    With statuses=True it also follows uploads.status: `statuses[upload_id]` lists every status event
    (PENDING, INSPECTING, ENCODING with percent, READY / REJECTED) in the order published."""

    def __init__(self, settings: Settings, codec: Codec | None = None, *, statuses: bool = False,
                 on_status: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.codec = codec or default_codec()
        # Tansu holds a fetch for the whole wait even when records arrive: keep the wait short
        self.consumer = probe_consumer(settings, **{"fetch.wait.max.ms": 100})
        names = list(ANSWER_TOPICS) + ([STATUS_TOPIC] if statuses or on_status else [])
        self._names = {full_name(settings, name): name for name in names}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.on_status = on_status
        assignment = []
        for topic in self._names:
            for partition in partitions_of(self.consumer, topic):
                # a stale (low) watermark only means reading a few older answers, which are skipped
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10,
                                                              cached=False)
                assignment.append(TopicPartition(topic, partition, max(high, 0)))
        self.consumer.assign(assignment)
        self.seen: dict[str, UploadResult] = {}

    def poll(self, timeout_s: float = 0.2) -> UploadResult | None:
        msg = self.consumer.poll(timeout_s)
        if msg is None:
            return None
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                return None
            raise RuntimeError(f"reading {msg.topic()}: {msg.error()}")
        name = self._names[msg.topic()]
        try:
            event = self.codec.decode(msg.value(), spec(name).schema)
        except DecodeError:
            return None
        if name == STATUS_TOPIC:
            self.statuses.setdefault(event["upload_id"], []).append(event)
            if self.on_status is not None:
                self.on_status(event)
            return None
        result = UploadResult(event["upload_id"], ANSWER_TOPICS[name], event, time.monotonic())
        self.seen.setdefault(result.upload_id, result)
        return result

    def wait(self, upload_ids: Iterable[str], timeout_s: float = 600.0,
             on_result: Callable[[UploadResult], None] | None = None) -> dict[str, UploadResult]:
        """The first answer for each upload id (those not answered within the timeout are missing)."""
        wanted = set(upload_ids)
        found = {u: self.seen[u] for u in wanted if u in self.seen}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(wanted) and time.monotonic() < deadline:
            result = self.poll(min(0.5, max(0.01, deadline - time.monotonic())))
            if result is not None and result.upload_id in wanted and result.upload_id not in found:
                found[result.upload_id] = result
                if on_result is not None:
                    on_result(result)
        return found

    def wait_final_statuses(self, upload_ids: Iterable[str], timeout_s: float = 60.0) -> dict[str, list[dict]]:
        """Status events of each upload until its READY / REJECTED one (statuses=True)."""
        wanted = set(upload_ids)

        def final(u: str) -> bool:
            return any(e["status"] in ("READY", "REJECTED") for e in self.statuses.get(u, []))
        deadline = time.monotonic() + timeout_s
        while not all(final(u) for u in wanted) and time.monotonic() < deadline:
            self.poll(min(0.5, max(0.01, deadline - time.monotonic())))
        return {u: list(self.statuses.get(u, [])) for u in wanted}

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> "ResultFollower":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_request(producer: EventProducer, request: dict[str, Any]) -> None:
    producer.publish(spec("uploads.requested"), request)
    producer.flush()


def upload_file(settings: Settings, producer: EventProducer, path: str | Path, *, upload_id: str | None = None,
                on_bytes: BytesCallback | None = None, store: MediaStore | None = None,
                **fields: Any) -> dict[str, Any]:
    """Put the original into S3 and publish its UploadRequested; returns the request."""
    path = Path(path)
    upload_id = upload_id or new_upload_id()
    key, size = put_original(settings, path, upload_id, on_bytes, store)
    fields.setdefault("title", path.stem)
    request = upload_request(upload_id, key, path.name, size, **fields)
    publish_request(producer, request)
    return request
