"""Uploads (issue 3): hash, dedupe and transcode user uploads.

    uploads.requested (key upload_id)
      -> upload-hasher: stream the original from S3 to local disk while computing its content key
         (MD5 + size; MISSING_OBJECT / TOO_LARGE_BYTES answered here), then forward the request
         unchanged to uploads.by-content keyed by the asset id '<md5>-<size>'
    uploads.by-content (key asset id: every upload of the same bytes lands on one partition)
      -> upload-transcoder: dedupe table per asset (processors.upload_dedupe). A DONE asset is
         linked (UploadProcessed deduplicated=true, original_upload_id) without transcoding; an
         asset in progress collects waiters answered when it finishes; a new asset becomes a job:
         S3 manifest check -> process_upload in the EncoderPool (a thread running ffmpeg, so the
         agent keeps consuming) -> outputs to S3 (content-addressed, same-size objects skipped) ->
         manifest -> Redis views -> uploads.processed / uploads.rejected.

At-least-once: an event that starts or joins a job holds an extra reference on its Kafka message,
released when the job has written the table and sent its answers, so its offset is committed only
then (Faust flushes the producer, incl. the table changelog, before committing). A crash
mid-transcode therefore redelivers the event; the recovered table says IN_PROGRESS with no job
running here, and the job restarts (``attempts`` bounds restarts). Jobs of partitions that move to
another worker are cancelled (ffmpeg killed); that worker gets the uncommitted events.
"""
from __future__ import annotations

import asyncio
import functools
import contextlib
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from infra.logs import get_logger
from processors.media import (ContentKey, EncodeSettings, EncoderPool, Limits, MediaTools, ProcessResult, Progress,
                              Rejection, RejectionCode, process_upload)
from processors.media.encode import default_concurrency
from processors.media.orphans import claim, sweep_orphans
from processors.upload_status import (FINAL, PENDING, READY, REJECTED, Throttle, progress_view, status_event,
                                      status_of_progress)
from processors.upload_dedupe import DONE as ASSET_DONE, REJECTED as ASSET_REJECTED
from processors.upload_dedupe import (ENCODE_FAILED, IN_PROGRESS, Decision, Uploader, finished, is_new_waiter,
                                      on_request, processed_event, recipients, refused, rejected_event, retry)
from sinks.media_store import MediaStore, MissingObject, safe_file_name
from sinks.asset_references import clear_reaped_tombstone, tombstone
from sinks.redis_views import asset_deleted_key, async_client
from sinks.upload_views import (asset_view, claim_access_entry, processed_status, rejected_status,
                                write_progress_views, write_upload_views)
from streams.runtime.app import app, app_settings
from streams.kafka.codec import default_codec
from streams.runtime.inbound import ORIGIN_HEADER, Inbound, dead_letter_failed, decoded_batches, raw_topic
from streams.runtime.metrics import EVENTS_OUT
from streams.runtime.tables import json_table
from streams.kafka.topics import spec

settings = app_settings()
log = get_logger("vitrina.agent.uploads")

REQUESTED = spec("uploads.requested")
BY_CONTENT = spec("uploads.by-content")
PROCESSED = spec("uploads.processed")
REJECTED_TOPIC = spec("uploads.rejected")
STATUS = spec("uploads.status")
HASHER, TRANSCODER = "upload-hasher", "upload-transcoder"

CONTENT_KEY_HEADER = "vitrina-content-key"
LOCAL_COPY_HEADER = "vitrina-local-copy"   # "<host>\n<path>" of the hashed download
HOST = socket.gethostname()

requested_topic = raw_topic(app, REQUESTED)
by_content_topic = raw_topic(app, BY_CONTENT, partitions=BY_CONTENT.partitions)
processed_topic = raw_topic(app, PROCESSED)
rejected_topic = raw_topic(app, REJECTED_TOPIC)
status_topic = raw_topic(app, STATUS)
assets_table = json_table(app, "upload-assets", BY_CONTENT.partitions)

UPLOAD_ROOT = settings.data_dir / "uploads"
ORIGINALS_DIR = UPLOAD_ROOT / "originals"
WORK_DIR = UPLOAD_ROOT / "work"
STALE_AFTER_S = 24 * 3600
BATCH_WITHIN_S = 0.05          # upload events are few: answer a dedupe hit without the default 0.2 s batching
S3_ATTEMPTS = 5

pool = EncoderPool(default_concurrency(settings.encoder_concurrency))
download_slots = asyncio.Semaphore(2)
limits = Limits.from_env()
encode_settings = EncodeSettings.from_env()
media_tools = MediaTools.from_env()

TRANSCODES = Counter("vitrina_upload_transcodes_total",
                     "process_upload runs: processed, rejected (bad file), failed (retriable)", ["outcome"])
DEDUPE_HITS = Counter("vitrina_upload_dedupe_hits_total",
                      "Uploads answered without transcoding: table (asset DONE), in_flight (waited for the "
                      "running job), store (manifest found in S3)", ["source"])
REJECTIONS = Counter("vitrina_upload_rejections_total", "Uploads refused", ["reason"])
REJECTED_ORIGINALS = Counter("vitrina_upload_rejected_originals_total",
                             "Originals of rejected uploads: deleted, skipped (not under the upload's prefix or "
                             "already gone), failed (left in S3)", ["outcome"])
TRANSCODE_QUEUE = Gauge("vitrina_upload_transcode_queue", "Transcode jobs waiting for or holding an encoder slot")
TRANSCODES_RUNNING = Gauge("vitrina_upload_transcodes_running", "Transcode jobs holding an encoder slot")
TRANSCODE_SECONDS = Histogram("vitrina_upload_transcode_seconds", "Transcode time per pipeline stage", ["stage"],
                              buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
DOWNLOAD_SECONDS = Histogram("vitrina_upload_download_seconds", "Streaming an original from S3 while hashing",
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))

T = TypeVar("T")


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def now_ms() -> int:
    return int(time.time() * 1000)




@functools.cache
def store() -> MediaStore:
    return MediaStore(settings)


@functools.cache
def redis() -> Any:
    return async_client(settings)


# -- message references (at-least-once across long jobs) -------------------------------------

def hold(event: Inbound) -> None:
    """Keep the offset uncommitted after the batch is done, until release()."""
    event.source.message.incref()


def release(events: list[Inbound]) -> None:
    for event in events:
        event.source.ack()


def headers_of(event: Inbound) -> dict[str, bytes]:
    raw = event.source.message.headers if event.source is not None else None
    items = raw.items() if isinstance(raw, dict) else (raw or ())
    return {name: value for name, value in items}


def local_copy_of(event: Inbound) -> Path | None:
    value = headers_of(event).get(LOCAL_COPY_HEADER)
    if not value:
        return None
    host, _, path = value.decode("utf-8", "replace").partition("\n")
    return Path(path) if host == HOST and path else None


def discard(path: Path | None, keep: Path | None = None) -> None:
    if path is None or path == keep or ORIGINALS_DIR not in path.parents:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def sweep_stale(root: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Leftovers of crashed jobs or of originals hashed here but transcoded by another worker."""
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for entry in root.iterdir():
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                removed += 1
    return removed


async def with_retries(what: str, call: Callable[[], Awaitable[T]], attempts: int = S3_ATTEMPTS) -> T:
    """Retry transient storage errors with backoff; MissingObject is an answer, not an error."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except (MissingObject, ValueError, asyncio.CancelledError):
            raise                   # an answer (or a bad name), not a transient error
        except Exception as exc:  # noqa: BLE001 - S3/urllib3 errors of every kind
            if attempt == attempts:
                raise
            delay = min(10.0, 0.5 * 2 ** (attempt - 1))
            log.warning("storage_retry", what=what, attempt=attempt, delay_s=delay, error=repr(exc))
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


class ByteProgress:
    """Logs a transfer's progress at most every few seconds (called from a worker thread)."""

    def __init__(self, event: str, total: int, every_s: float = 2.0, **context: Any) -> None:
        self.event, self.total, self.every_s, self.context = event, max(total, 1), every_s, context
        self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            log.info(self.event, bytes=done, percent=round(100 * done / self.total, 1), **self.context)


# -- answers ----------------------------------------------------------------------------------

async def send_processed(answers: list[dict], asset: dict | None) -> None:
    codec = default_codec()
    for answer in answers:
        await processed_topic.send(key=answer["upload_id"].encode(), value=codec.encode(PROCESSED.schema, answer))
        log.info("upload_processed", upload_id=answer["upload_id"], asset_id=answer["asset_id"],
                 deduplicated=answer["deduplicated"], original_upload_id=answer["original_upload_id"])
    EVENTS_OUT.labels(topic=PROCESSED.name, agent=TRANSCODER).inc(len(answers))
    await write_views(asset, [processed_status(a) for a in answers])
    await publish_final([status_event(a["upload_id"], a["uploader_id"], READY, percent=100,
                                      asset_id=a["asset_id"]) for a in answers], TRANSCODER)


async def publish_final(events: list[dict], agent: str) -> None:
    """The READY / REJECTED status events, after the answer itself (which is the record)."""
    try:
        await publish_statuses(events, agent=agent)
    except Exception as exc:  # noqa: BLE001 - the answer went out; a missing status event is not worth a redo
        log.error("status_publish_failed", error=repr(exc), uploads=[e["upload_id"] for e in events])


async def publish_statuses(events: list[dict], private: dict[str, bool] | None = None,
                           agent: str = TRANSCODER) -> None:
    """uploads.status events (every change) and, for uploads still in flight, their Redis status view
    (a final view is never replaced: sinks.upload_views.write_progress_views)."""
    codec = default_codec()
    for event in events:
        await status_topic.send(key=event["upload_id"].encode(), value=codec.encode(STATUS.schema, event))
    EVENTS_OUT.labels(topic=STATUS.name, agent=agent).inc(len(events))
    in_flight = [progress_view(e, (private or {}).get(e["upload_id"], False)) for e in events
                 if e["status"] not in FINAL]
    if in_flight:
        try:
            await write_progress_views(redis(), in_flight)
        except Exception as exc:  # noqa: BLE001 - the events are the record
            log.error("upload_views_failed", error=repr(exc))


async def send_rejected(who: list[Uploader], reason_code: str, message: str, asset_id: str | None,
                        agent: str = TRANSCODER) -> None:
    codec = default_codec()
    statuses = []
    for uploader in who:
        event = rejected_event(uploader, reason_code, message, now_utc())
        await rejected_topic.send(key=uploader.upload_id.encode(), value=codec.encode(REJECTED_TOPIC.schema, event))
        REJECTIONS.labels(reason=reason_code).inc()
        log.info("upload_rejected", upload_id=uploader.upload_id, asset_id=asset_id, reason_code=reason_code,
                 message=message)
        statuses.append(rejected_status(event, asset_id))
    EVENTS_OUT.labels(topic=REJECTED_TOPIC.name, agent=agent).inc(len(who))
    await write_views(None, statuses)
    await publish_final([status_event(u.upload_id, u.uploader_id, REJECTED, percent=100, asset_id=asset_id,
                                      reason_code=reason_code, message=message) for u in who], agent)


# Rejections that are a verdict on the bytes: their originals are never read again (a later upload of the same
# bytes is answered from the table, or transcoded from its own original), so they are deleted. MISSING_OBJECT
# (nothing there, or it changed) and ENCODE_FAILED (gave up, internal error: a redrive needs it) keep theirs.
KEEPS_ORIGINAL = {RejectionCode.MISSING_OBJECT.value, ENCODE_FAILED}


async def delete_rejected_originals(requests: list[dict], reason_code: str) -> None:
    """Delete the originals of rejected upload requests (after their answer is sent), best effort: a failure
    is logged and counted and leaves the object."""
    if reason_code in KEEPS_ORIGINAL:
        return
    seen: set[tuple[str, str]] = set()
    for request in requests:
        upload_id, key = request.get("upload_id"), request.get("object_key")
        if not upload_id or not key or (upload_id, key) in seen:
            continue
        seen.add((upload_id, key))
        try:
            deleted = await with_retries("delete rejected original", lambda u=upload_id, k=key: asyncio.to_thread(
                store().delete_rejected_original, u, k))
        except Exception as exc:  # noqa: BLE001 - storage away: the original stays, the answer is already out
            REJECTED_ORIGINALS.labels(outcome="failed").inc()
            log.warning("rejected_original_delete_failed", upload_id=upload_id, object_key=key, error=repr(exc))
            continue
        REJECTED_ORIGINALS.labels(outcome="deleted" if deleted else "skipped").inc()
        log.info("rejected_original_deleted" if deleted else "rejected_original_skipped", upload_id=upload_id,
                 object_key=key, reason_code=reason_code)


async def write_views(asset: dict | None, statuses: list[dict]) -> None:
    try:
        refused = await write_upload_views(redis(), asset, statuses)
        if refused:   # the asset was reaped meanwhile (sinks.asset_references): say so, do not resurrect it
            log.error("access_entry_refused_asset_reaped", asset_id=asset["asset_id"] if asset else None,
                      uploads=refused)
    except Exception as exc:  # noqa: BLE001 - the events are the record; views are rebuilt from them
        log.error("upload_views_failed", error=repr(exc))


# -- stage 1: hash while downloading ----------------------------------------------------------

@dataclass
class Download:
    upload_id: str
    events: list[Inbound]
    task: asyncio.Task | None = None

    @property
    def tp(self) -> Any:
        return self.events[0].source.message.tp


downloads: dict[str, Download] = {}


def original_path(upload_id: str, file_name: str) -> Path:
    suffix = Path(safe_file_name(file_name)).suffix[:10]
    return ORIGINALS_DIR / safe_file_name(upload_id) / f"original{suffix}"


async def fetch_original(request: dict) -> tuple[ContentKey, Path] | Rejection:
    key = request["object_key"]
    context = {"upload_id": request["upload_id"], "object_key": key}
    try:
        info = await with_retries("stat original", lambda: asyncio.to_thread(store().stat, key))
    except ValueError as exc:  # minio refuses the name itself (empty, bad characters)
        return Rejection(RejectionCode.MISSING_OBJECT, f"invalid object key {key!r}: {exc}", {"object_key": key})
    if info is None:
        return Rejection(RejectionCode.MISSING_OBJECT, f"the original is not in storage: {key}",
                         {"bucket": settings.media_bucket, "object_key": key})
    if info.size > limits.max_bytes:
        return Rejection(RejectionCode.TOO_LARGE_BYTES, f"{info.size} bytes exceeds {limits.max_bytes}",
                         {"size_bytes": info.size, "max_bytes": limits.max_bytes})
    if info.size != request["size_bytes"]:
        log.warning("size_claim_mismatch", claimed=request["size_bytes"], actual=info.size, **context)
    dest = original_path(request["upload_id"], request["file_name"])
    progress = ByteProgress("download_progress", info.size, **context)
    started = time.monotonic()
    log.info("download_started", bytes=info.size, **context)
    try:
        content_key = await with_retries(
            "download original", lambda: asyncio.to_thread(store().download_hashing, key, dest, progress))
    except MissingObject:
        return Rejection(RejectionCode.MISSING_OBJECT, f"the original disappeared from storage: {key}",
                         {"object_key": key})
    elapsed = time.monotonic() - started
    DOWNLOAD_SECONDS.observe(elapsed)
    log.info("download_finished", asset_id=str(content_key), bytes=content_key.size, elapsed_s=round(elapsed, 3),
             **context)
    return content_key, dest


async def forward_by_content(event: Inbound, content_key: ContentKey, path: Path) -> None:
    asset_id = str(content_key)
    headers = [(ORIGIN_HEADER, f"{event.origin_partition}:{event.origin_offset}".encode()),
               (CONTENT_KEY_HEADER, asset_id.encode()),
               (LOCAL_COPY_HEADER, f"{HOST}\n{path}".encode())]
    await by_content_topic.send(key=asset_id.encode(), value=event.raw, headers=headers)
    EVENTS_OUT.labels(topic=BY_CONTENT.name, agent=HASHER).inc()


async def run_download(job: Download) -> None:
    event = job.events[0]
    try:
        outcome = await fetch_original(event.value)
        if isinstance(outcome, Rejection):
            await send_rejected([Uploader.of(event.value)], outcome.code.value, outcome.message, None, HASHER)
            await delete_rejected_originals([e.value for e in job.events], outcome.code.value)
        else:
            await forward_by_content(event, *outcome)
        release(job.events)
    except asyncio.CancelledError:
        raise                       # not acknowledged: the partition's new owner gets the event again
    except Exception as exc:        # noqa: BLE001 - storage down beyond the retries: keep it for a redrive
        await dead_letter_failed(app, event, HASHER, exc)
        release(job.events)
    finally:
        if downloads.get(job.upload_id) is job:
            del downloads[job.upload_id]
        download_slots.release()


@app.agent(requested_topic, name=HASHER)
async def hash_uploads(stream):
    async for batch in decoded_batches(app, stream, REQUESTED, HASHER, max_batch=200, within_s=BATCH_WITHIN_S):
        for event in batch:
            upload_id = event.value["upload_id"]
            running = downloads.get(upload_id)
            if running is not None:      # the same request again while it downloads: one download
                hold(event)
                running.events.append(event)
                continue
            request = event.value
            with contextlib.suppress(Exception):   # progress is advisory: never blocks the upload
                await publish_statuses([status_event(upload_id, request["uploader_id"], PENDING)],
                                       {upload_id: bool(request.get("private"))}, agent=HASHER)
            await download_slots.acquire()
            hold(event)
            job = Download(upload_id, [event])
            downloads[upload_id] = job
            job.task = asyncio.ensure_future(run_download(job))


# -- stage 2: dedupe and transcode ------------------------------------------------------------

@dataclass
class AssetJob:
    asset_id: str
    content_key: ContentKey
    owner_event: Inbound                 # the event that started the job: its partition holds the state
    local_copy: Path | None
    events: list[Inbound] = field(default_factory=list)
    task: asyncio.Task | None = None

    @property
    def request(self) -> dict:
        return self.owner_event.value

    @property
    def tp(self) -> Any:
        return self.owner_event.source.message.tp


@dataclass(frozen=True)
class Done:
    owner: Uploader
    fields: dict
    source: str                          # "transcode" or "store"


@dataclass(frozen=True)
class Refused:
    reason_code: str
    message: str
    remember: bool = True                # a verdict on the bytes (kept in the table) or on this upload only


class RetriableFailure(RuntimeError):
    pass


jobs: dict[str, AssetJob] = {}
TRANSCODE_QUEUE.set_function(lambda: len(jobs))
TRANSCODES_RUNNING.set_function(lambda: pool.active)


def content_key_of(event: Inbound) -> ContentKey:
    raw = headers_of(event).get(CONTENT_KEY_HEADER) or event.key or b""
    return ContentKey.parse(raw.decode("utf-8", "replace"))


def state_of(job: AssetJob) -> dict | None:
    job.owner_event.bind()
    return assets_table.get(job.asset_id)


def set_state(job: AssetJob, state: dict | None) -> None:
    job.owner_event.bind()
    if state is None:
        if assets_table.get(job.asset_id) is not None:
            del assets_table[job.asset_id]
    else:
        assets_table[job.asset_id] = state


class StageProgress:
    """process_upload progress (called on the event loop) -> structlog lines and uploads.status events
    INSPECTING / ENCODING with a percent for every upload waiting on the job (each stage start and
    every 10 %), published in order by one task at a time."""

    def __init__(self, upload_id: str, asset_id: str, job: "AssetJob | None" = None) -> None:
        self.upload_id, self.asset_id, self.job = upload_id, asset_id, job
        self.throttle = Throttle(step=10)
        self.tasks: list[asyncio.Task] = []
        self.lock = asyncio.Lock()

    def __call__(self, progress: Progress) -> None:
        status, percent = status_of_progress(progress.stage, progress.fraction)
        stage = None if status != "ENCODING" else progress.stage
        if not self.throttle.due(status, stage, percent):
            return
        log.info("transcode_progress", upload_id=self.upload_id, asset_id=self.asset_id, stage=progress.stage,
                 percent=percent)
        requests = [e.value for e in self.job.events] if self.job is not None else []
        if not requests:
            return
        events, seen = [], set()
        for request in requests:
            if request["upload_id"] not in seen:
                seen.add(request["upload_id"])
                events.append(status_event(request["upload_id"], request["uploader_id"], status, percent=percent,
                                           stage=stage, asset_id=self.asset_id))
        private = {r["upload_id"]: bool(r.get("private")) for r in requests}
        self.tasks = [t for t in self.tasks if not t.done()]
        self.tasks.append(asyncio.ensure_future(self._publish(events, private)))

    async def _publish(self, events: list[dict], private: dict[str, bool]) -> None:
        async with self.lock:
            try:
                await publish_statuses(events, private)
            except Exception as exc:  # noqa: BLE001 - progress is advisory
                log.warning("status_publish_failed", upload_id=self.upload_id, error=repr(exc))

    async def drain(self) -> None:
        """Wait for the progress events already scheduled (so the final status comes after them)."""
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=10)


async def obtain_original(job: AssetJob) -> Path | Refused:
    path = job.local_copy
    if path is not None and path.is_file() and path.stat().st_size == job.content_key.size:
        return path
    # hashed on another worker (or its copy is gone): fetch again and check it is the same bytes
    request = job.request
    dest = original_path(request["upload_id"], request["file_name"])
    try:
        found = await with_retries("download original", lambda: asyncio.to_thread(
            store().download_hashing, request["object_key"], dest,
            ByteProgress("download_progress", job.content_key.size, upload_id=request["upload_id"])))
    except MissingObject:
        return Refused(RejectionCode.MISSING_OBJECT.value, f"the original is not in storage: {request['object_key']}",
                       remember=False)
    job.local_copy = dest
    if found != job.content_key:
        return Refused(RejectionCode.MISSING_OBJECT.value,
                       f"the original changed after it was hashed ({found} != {job.content_key})", remember=False)
    return dest


def _transcode(local: Path, workdir: Path, *, content_key: ContentKey, on_progress: Any,
               cancel: Any = None) -> ProcessResult | Rejection:
    return process_upload(local, workdir, limits, tools=media_tools, settings=encode_settings,
                          content_key=content_key, on_progress=on_progress, cancel=cancel)


async def produce_asset(job: AssetJob) -> Done | Refused:
    """One attempt. Raises RetriableFailure (or a storage error) when trying again may help."""
    manifest = await with_retries("read manifest", lambda: asyncio.to_thread(store().read_manifest, job.asset_id))
    if manifest is not None:
        DEDUPE_HITS.labels(source="store").inc()
        log.info("dedupe_hit", source="store", asset_id=job.asset_id, upload_id=job.request["upload_id"],
                 original_upload_id=manifest["owner"]["upload_id"])
        return Done(Uploader.of(manifest["owner"]), manifest["fields"], "store")
    local = await obtain_original(job)
    if isinstance(local, Refused):
        return local
    workdir = claim(WORK_DIR / f"{job.asset_id}-{uuid.uuid4().hex[:8]}")   # swept if this process dies
    upload_id = job.request["upload_id"]
    progress = StageProgress(upload_id, job.asset_id, job)
    try:
        log.info("transcode_queued", upload_id=upload_id, asset_id=job.asset_id, queue=len(jobs))
        result = await pool.run(_transcode, local, workdir, content_key=job.content_key, on_progress=progress)
        await progress.drain()
        if isinstance(result, Rejection):
            TRANSCODES.labels(outcome="failed" if result.retriable else "rejected").inc()
            if result.retriable:
                raise RetriableFailure(f"{result.code.value}: {result.message}")
            return Refused(result.code.value, result.message)
        TRANSCODES.labels(outcome="processed").inc()
        for stage, seconds in result.timings_s.items():
            TRANSCODE_SECONDS.labels(stage=stage).observe(seconds)
        TRANSCODE_SECONDS.labels(stage="total").observe(result.processing_s)
        state = state_of(job)
        owner = Uploader.of(state["owner"]) if state and state.get("status") == IN_PROGRESS \
            else Uploader.of(job.request)
        fields = result.as_event_fields()
        files = result.files()
        put, skipped = await with_retries("upload outputs", lambda: asyncio.to_thread(store().upload_outputs, files))
        await with_retries("write manifest", lambda: asyncio.to_thread(
            store().write_manifest, job.asset_id, owner.as_dict(), fields, job.request["object_key"]))
        log.info("transcode_finished", upload_id=upload_id, asset_id=job.asset_id, timings_s=result.timings_s,
                 renditions=[r["name"] for r in fields["renditions"]], objects_put=put, objects_skipped=skipped)
        return Done(owner, fields, "transcode")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def run_job(job: AssetJob) -> None:
    upload_id = job.request["upload_id"]
    outcome: Done | Refused | None = None
    give_up = ""
    try:
        while outcome is None:
            try:
                outcome = await produce_asset(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - ffmpeg failure, storage outage, a bug: retry, then refuse
                state = state_of(job)
                following = retry(state, now_ms()) if state and state.get("status") == IN_PROGRESS else None
                log.warning("transcode_attempt_failed", upload_id=upload_id, asset_id=job.asset_id, error=repr(exc),
                            attempts=state.get("attempts") if state else None, giving_up=following is None)
                if following is None:
                    give_up = f"processing failed after retries: {exc}"
                    break
                set_state(job, following)
                await asyncio.sleep(min(30.0, 2.0 * following["attempts"]))
        await finish(job, outcome, give_up)
    except asyncio.CancelledError:
        log.warning("transcode_cancelled", upload_id=upload_id, asset_id=job.asset_id)
        raise
    except Exception as exc:  # noqa: BLE001 - answering failed (broker down?): leave it to redelivery
        log.error("job_failed", upload_id=upload_id, asset_id=job.asset_id, error=repr(exc))
    finally:
        if jobs.get(job.asset_id) is job:
            del jobs[job.asset_id]


async def finish(job: AssetJob, outcome: Done | Refused | None, give_up: str) -> None:
    # read the waiters and write the final state without awaiting in between: an upload arriving
    # later sees DONE/REJECTED and is answered by the agent itself
    state = state_of(job)
    live = state if state and state.get("status") == IN_PROGRESS else None
    who = recipients(live, also=Uploader.of(job.request))
    if isinstance(outcome, Done):
        done = finished(outcome.owner, outcome.fields)
        set_state(job, done)
    elif isinstance(outcome, Refused) and outcome.remember:
        owner = Uploader.of(live["owner"]) if live else Uploader.of(job.request)
        set_state(job, refused(owner, outcome.reason_code, outcome.message))
    else:
        set_state(job, None)   # retriable, or not about the bytes: the next upload of them tries again
    if jobs.get(job.asset_id) is job:
        del jobs[job.asset_id]
    if isinstance(outcome, Done):
        answers = [processed_event(done, w, now_utc()) for w in who]
        waited = [a for a in answers if a["deduplicated"] and a["upload_id"] != job.request["upload_id"]]
        if waited:
            DEDUPE_HITS.labels(source="in_flight").inc(len(waited))
        await send_processed(answers, asset_view(job.asset_id, outcome.owner.as_dict(), outcome.fields))
    elif isinstance(outcome, Refused):
        await send_rejected(who, outcome.reason_code, outcome.message, job.asset_id)
        if outcome.remember:
            await delete_rejected_originals([e.value for e in job.events], outcome.reason_code)
    else:
        await send_rejected(who, ENCODE_FAILED, give_up, job.asset_id)
    release(job.events)
    for event in job.events:
        discard(local_copy_of(event))
    discard(job.local_copy)


REAP_WAIT_S = 300.0


async def run_job_after_reap(job: AssetJob) -> None:
    """The asset was deleted (its last reference went) and this upload brings its bytes again: wait until the
    reaper has finished deleting the old files (tombstone "reaped"), clear the tombstone, then transcode."""
    deadline = time.monotonic() + REAP_WAIT_S
    try:
        while True:
            try:
                if await clear_reaped_tombstone(redis(), job.asset_id):
                    break
            except Exception as exc:  # noqa: BLE001 - Redis away: try again until the deadline
                log.warning("reap_wait_failed", asset_id=job.asset_id, error=repr(exc))
            if time.monotonic() > deadline:
                log.error("reap_wait_timeout", asset_id=job.asset_id, waited_s=REAP_WAIT_S)
                with contextlib.suppress(Exception):
                    await redis().delete(asset_deleted_key(job.asset_id))
                break
            await asyncio.sleep(0.5)
    except BaseException:
        if jobs.get(job.asset_id) is job:
            del jobs[job.asset_id]
        raise
    await run_job(job)


def start_job(event: Inbound, content_key: ContentKey, after_reap: bool = False) -> None:
    job = AssetJob(str(content_key), content_key, event, local_copy_of(event), [event])
    hold(event)
    jobs[job.asset_id] = job
    job.task = asyncio.ensure_future(run_job_after_reap(job) if after_reap else run_job(job))
    log.info("transcode_started", upload_id=event.value["upload_id"], asset_id=job.asset_id, after_reap=after_reap)


async def asset_was_reaped(asset_id: str, state: dict, who: Uploader) -> bool:
    """A DONE (or REJECTED) table state of an asset that has since been deleted (tombstone). For DONE this
    also writes the upload's access entry first, with the tombstone check in the same Lua script
    (sinks.upload_views.claim_access_entry): either the entry lands before the reaper looks (the asset is
    referenced again and is not reaped) or the reaper's tombstone is there and the entry is refused."""
    try:
        if state.get("status") == ASSET_DONE:
            return not await claim_access_entry(redis(), asset_id, who.upload_id, who.uploader_id, who.private)
        return await tombstone(redis(), asset_id) is not None
    except Exception as exc:  # noqa: BLE001 - Redis away: answer from the table as before
        log.warning("tombstone_check_failed", asset_id=asset_id, error=repr(exc))
        return False


async def route(event: Inbound) -> None:
    content_key = content_key_of(event)
    asset_id = str(content_key)
    who = Uploader.of(event.value)
    event.bind()
    state = assets_table.get(asset_id)
    if state is not None and state.get("status") in (ASSET_DONE, ASSET_REJECTED) \
            and await asset_was_reaped(asset_id, state, who):
        # its last reference went and its files were deleted: this upload brought its own original
        event.bind()  # again after the await: the table writes below belong to this event's partition
        log.info("asset_reaped_transcoding_again", upload_id=who.upload_id, asset_id=asset_id,
                 previous=state.get("status"))
        del assets_table[asset_id]
        fresh, _ = on_request(None, who, job_running=False, now_ms=now_ms())
        assets_table[asset_id] = fresh
        start_job(event, content_key, after_reap=True)
        return
    event.bind()  # the tombstone check may have awaited
    job = jobs.get(asset_id)
    running = job is not None and job.task is not None and not job.task.done()
    new_state, decision = on_request(state, who, job_running=running, now_ms=now_ms())
    if decision is Decision.START:
        assets_table[asset_id] = new_state
        start_job(event, content_key)
    elif decision is Decision.JOIN:
        assert job is not None
        if new_state != state:
            assets_table[asset_id] = new_state
        hold(event)
        job.events.append(event)
        if is_new_waiter(state, new_state):
            log.info("dedupe_wait", source="in_flight", upload_id=who.upload_id, asset_id=asset_id,
                     original_upload_id=state["owner"]["upload_id"])
        discard(local_copy_of(event), keep=job.local_copy)
    elif decision is Decision.ANSWER_DONE:
        answer = processed_event(state, who, now_utc())
        if answer["deduplicated"]:
            DEDUPE_HITS.labels(source="table").inc()
            log.info("dedupe_hit", source="table", upload_id=who.upload_id, asset_id=asset_id,
                     original_upload_id=answer["original_upload_id"])
        await send_processed([answer], asset_view(asset_id, state["owner"], state["fields"]))
        discard(local_copy_of(event))
    elif decision is Decision.ANSWER_REJECTED:
        await send_rejected([who], state["reason_code"], state["message"], asset_id)
        await delete_rejected_originals([event.value], state["reason_code"])
        discard(local_copy_of(event))
    else:  # GIVE_UP
        if state is not None:
            del assets_table[asset_id]
        await send_rejected(recipients(state, also=who), ENCODE_FAILED,
                            f"gave up after {state['attempts'] if state else '?'} attempts (worker restarts)", asset_id)
        discard(local_copy_of(event))


@app.agent(by_content_topic, name=TRANSCODER)
async def transcode_uploads(stream):
    # work directories of a previous worker process that died (kill -9, OOM): its ffmpeg died with it
    # (PR_SET_PDEATHSIG; a survivor is killed here), its .part files go now, not in 24 h
    orphans = sweep_orphans(WORK_DIR)
    if orphans.removed_dirs:
        log.info("swept_orphaned_work", dirs=orphans.removed_dirs, part_files=orphans.removed_parts,
                 killed_ffmpeg_groups=orphans.killed_groups)
    for root in (ORIGINALS_DIR, WORK_DIR):
        removed = sweep_stale(root)
        if removed:
            log.info("swept_stale_files", root=str(root), removed=removed)
    async for batch in decoded_batches(app, stream, BY_CONTENT, TRANSCODER, max_batch=200, within_s=BATCH_WITHIN_S):
        for event in batch:
            try:
                await route(event)
            except Exception as exc:  # noqa: BLE001 - an internal topic has no dead letters: answer the upload
                log.error("routing_failed", partition=event.partition, offset=event.offset, error=repr(exc))
                with contextlib.suppress(Exception):
                    await send_rejected([Uploader.of(event.value)], ENCODE_FAILED, f"internal error: {exc}", None)


@app.on_partitions_assigned.connect
async def cancel_moved_work(sender: Any, assigned: set, **kwargs: Any) -> None:
    """Jobs of partitions now owned by another worker stop here (ffmpeg is killed); the new owner
    gets their uncommitted events again. Partitions that stay keep their jobs running."""
    for name, registry in (("transcode", jobs), ("download", downloads)):
        for key, work in list(registry.items()):
            if work.tp not in assigned and work.task is not None and not work.task.done():
                log.warning("partition_moved_cancelling", work=name, key=key, tp=str(work.tp))
                work.task.cancel()


@app.on_before_shutdown.connect
async def cancel_all_work(sender: Any, **kwargs: Any) -> None:
    """A stopping worker kills its ffmpeg processes instead of waiting for them; the unacknowledged
    events of these jobs are processed again after the restart (or by another worker)."""
    running = [w.task for registry in (jobs, downloads) for w in registry.values()
               if w.task is not None and not w.task.done()]
    for task in running:
        task.cancel()
    if running:
        log.warning("shutdown_cancelling", tasks=len(running))
        await asyncio.wait(running, timeout=10)
