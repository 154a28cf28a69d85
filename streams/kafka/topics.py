"""The topic registry: every topic vitrina reads or writes, declared once.

``ensure_topics`` creates missing topics idempotently at start (existing topics
are left as they are). Names get ``VITRINA_TOPIC_PREFIX`` prepended so several
environments can share one cluster.

Compacted topics (``TopicSpec.compacted``, every Faust table changelog, the engine's changelogs) get
the per-topic settings of a ``Compaction`` profile (``COMPACTION_PROFILES``, chosen with
``VITRINA_COMPACTION``), and a record without a key is never written to one: Kafka refuses it
(INVALID_RECORD) together with every other record of its batch, so each producer path checks first
(``require_key``) and fails with ``KeylessRecordError``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

from infra.logs import get_logger
from infra.settings import Settings
from processors.partition_keys import viewer_key  # noqa: F401 - the registry's viewer rule, re-exported

DAY_MS = 24 * 3600 * 1000
log = get_logger("vitrina.topics")


@dataclass(frozen=True)
class Compaction:
    """Per-topic settings that decide when the log cleaner actually compacts a compacted topic.

    The cleaner never touches a partition's ACTIVE segment, and a segment is rolled only by an append
    once it is ``segment_ms`` old or ``segment_bytes`` big: those two bound how long superseded
    versions stay readable (and are read again by every restore and rebuild). A closed segment is
    cleaned when the dirty (not yet compacted) share of the log reaches ``min_cleanable_dirty_ratio``,
    and at the latest ``max_compaction_lag_ms`` after it was written (which also rolls the active
    segment at that age). A tombstone (null value) is kept ``delete_retention_ms`` after its segment
    was cleaned, so a reader that goes through the log from the beginning within that time (a table
    restore, ``vitrina rebuild``, a lagging consumer) sees the delete rather than the older value.
    """
    segment_ms: int
    segment_bytes: int
    min_cleanable_dirty_ratio: float
    max_compaction_lag_ms: int
    delete_retention_ms: int
    min_compaction_lag_ms: int = 0

    def configs(self) -> dict[str, str]:
        return {
            "segment.ms": str(self.segment_ms),
            "segment.bytes": str(self.segment_bytes),
            "min.cleanable.dirty.ratio": str(self.min_cleanable_dirty_ratio),
            "max.compaction.lag.ms": str(self.max_compaction_lag_ms),
            "delete.retention.ms": str(self.delete_retention_ms),
            "min.compaction.lag.ms": str(self.min_compaction_lag_ms),
        }


COMPACTION_PROFILES: dict[str, Compaction] = {
    # Production: a day-old active segment is rolled (Kafka's 7-day default would keep a week of every
    # catalogue edit and counter update uncompacted), 64 MiB segments bound the uncompacted tail a
    # restore reads on busy changelogs (1 GiB by default); cleaning rewrites the log, so it waits until
    # half of it is dirty (Kafka's default ratio: at most ~2x write amplification), but nothing
    # superseded survives more than 7 days whatever the ratio; tombstones stay 1 day (Kafka's default),
    # far longer than any restore or rebuild takes.
    "production": Compaction(segment_ms=DAY_MS, segment_bytes=64 * 1024 * 1024, min_cleanable_dirty_ratio=0.5,
                             max_compaction_lag_ms=7 * DAY_MS, delete_retention_ms=DAY_MS),
    # Dev/test stacks (VITRINA_COMPACTION=fast): segments roll after 1 s (at the next write), a cleaner
    # pass takes any closed segment with 10 % dirty records and every one older than 10 s, so superseded
    # versions are gone seconds after they were replaced (the embedded broker checks every second:
    # infra/kafka_node.py). 16 MiB segments (the broker's minimum is 1 MiB) keep the file count low
    # under load. Tombstones stay 60 s: restores and rebuilds of a dev stack read their logs in seconds.
    "fast": Compaction(segment_ms=1000, segment_bytes=16 * 1024 * 1024, min_cleanable_dirty_ratio=0.1,
                       max_compaction_lag_ms=10_000, delete_retention_ms=60_000),
}


def compaction_profile(settings: Settings) -> Compaction:
    try:
        return COMPACTION_PROFILES[settings.compaction]
    except KeyError:
        raise ValueError(f"VITRINA_COMPACTION={settings.compaction!r}; expected one of "
                         f"{', '.join(COMPACTION_PROFILES)}") from None


def compaction_configs(settings: Settings) -> dict[str, str]:
    """Topic configs of a compacted topic (cleanup policy included), e.g. Faust's table changelogs."""
    return {"cleanup.policy": "compact", **compaction_profile(settings).configs()}


class KeylessRecordError(ValueError):
    """A record without a key for a compacted topic: refused before it is sent.

    Kafka rejects such a record (INVALID_RECORD, "Compacted topic cannot accept message without key")
    and with it every other record of the same producer batch; Faust only logs that and commits its
    input anyway (the batch is lost), the engine would fail its checkpoint again at every restart, and
    librdkafka reports every record of the batch as failed."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"refusing to write a record without a key to compacted topic {topic!r}: compaction "
                         "keeps the latest record per key, so a record needs one (Kafka rejects it as "
                         "INVALID_RECORD together with its whole batch)")
        self.topic = topic


@dataclass(frozen=True)
class TopicSpec:
    name: str
    schema: str  # full Avro record name of the values
    key_field: str  # record field whose value is the message key ("" = derived, see key_of)
    partitions: int = 6
    retention_ms: int = 7 * DAY_MS  # -1 = forever
    compacted: bool = False
    description: str = ""
    dead_letter: bool = True  # has a dlq.<name> companion

    def configs(self, compaction: Compaction | None = None) -> dict[str, str]:
        """Topic configs at creation; a compacted topic gets ``compaction``'s settings (production's
        when not given)."""
        if not self.compacted:
            return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}
        return {"cleanup.policy": "compact", "retention.ms": str(self.retention_ms),
                **(compaction or COMPACTION_PROFILES["production"]).configs()}


VIEWER = "@viewer"  # key_field marker: key by viewer_key()

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("uploads.requested", "vitrina.UploadRequested", "upload_id", 6, 30 * DAY_MS,
              description="A user uploaded a file; the original is in S3."),
    TopicSpec("uploads.processed", "vitrina.UploadProcessed", "upload_id", 6, 30 * DAY_MS,
              description="Renditions, thumbnails, dedupe link of a finished upload."),
    TopicSpec("uploads.rejected", "vitrina.UploadRejected", "upload_id", 6, 30 * DAY_MS,
              description="Refused uploads with a machine-readable reason."),
    TopicSpec("uploads.status", "vitrina.UploadStatus", "upload_id", 6, 7 * DAY_MS,
              description="Every status change of an upload: PENDING, INSPECTING, ENCODING (percent), "
                          "READY, REJECTED."),
    TopicSpec("assets.commands", "vitrina.AssetCommand", "asset_id", 6, 30 * DAY_MS,
              description="Requests about a stored asset, in order per asset: ADD_TO_COLLECTION / "
                          "REMOVE_FROM_COLLECTION (a user's reference), DELETE_UPLOAD (its files go with the "
                          "last reference), RECOMPUTE_QUALITY."),
    TopicSpec("playback", "vitrina.PlaybackEvent", VIEWER, 6, 7 * DAY_MS,
              description="Player events: start, heartbeat, pause, seek, stall, credits, complete..."),
    TopicSpec("sessions", "vitrina.SessionEvent", VIEWER, 6, 7 * DAY_MS,
              description="Viewing session start/end."),
    TopicSpec("ranking.impressions", "vitrina.RankingImpression", VIEWER, 6, 7 * DAY_MS,
              description="Titles shown on ranked surfaces with server scores and context."),
    TopicSpec("ranking.samples", "vitrina.RankingImpression", VIEWER, 6, 14 * DAY_MS,
              description="Impressions labelled with evr/lvr/svr/fpr by the label join."),
    TopicSpec("catalogue.titles", "vitrina.CatalogueTitle", "item_id", 3, -1, compacted=True,
              description="The catalogue; compacted, latest value per title."),
    TopicSpec("catalogue.shelves", "vitrina.ShelfDefinition", "shelf_id", 1, -1, compacted=True,
              description="Shelf definitions and templates; compacted."),
    TopicSpec("similar.updated", "vitrina.SimilarListUpdated", "item_id", 6, -1, compacted=True,
              description="Per-title similar lists as they change; compacted."),
    TopicSpec("models.published", "vitrina.ModelPublished", "model", 1, -1,
              description="Exported, registered and promoted model versions."),
    TopicSpec("showcase.updated", "vitrina.ShowcaseUpdated", "view_key", 6, 3 * DAY_MS,
              description="A showcase view was written to Redis."),
    TopicSpec("playback.by-item", "vitrina.PlaybackEvent", "item_id", 6, 1 * DAY_MS, dead_letter=False,
              description="Internal: playback repartitioned by title (explicit group_by) for per-title state."),
    TopicSpec("stats.plays", "vitrina.CounterUpdated", "item_id", 6, -1, compacted=True,
              description="Running play counts per title (popularity)."),
    TopicSpec("showcase.rebuild", "vitrina.ShowcaseRebuildRequested", "user_id", 1, 7 * DAY_MS,
              description="Ops requests to rebuild (optionally force) users' showcases."),
    TopicSpec("uploads.by-content", "vitrina.UploadRequested", "", 6, 30 * DAY_MS, dead_letter=False,
              description="Internal: upload requests repartitioned by content key (key = asset id "
                          "'<md5>-<size>', also in header vitrina-content-key) for the dedupe table."),
    TopicSpec("ranking.samples.trainer", "vitrina.RankingImpression", "", 1, 2 * DAY_MS, dead_letter=False,
              description="Internal: labelled samples funnelled into one partition so exactly one worker "
                          "trains the ranking model (key 'ranking')."),
    TopicSpec("coview.contributions", "vitrina.CoViewBatch", "", 6, 1 * DAY_MS, dead_letter=False,
              description="Internal: completed views routed to the title partitions they update (sessionizer -> "
                          "per-title co-view state); one columnar message per sessionizer batch and destination "
                          "partition (partition = crc32(title) % partitions, key = partition number)."),
)

DLQ_PREFIX = "dlq."


def dead_letter_spec(source: TopicSpec) -> TopicSpec:
    return TopicSpec(DLQ_PREFIX + source.name, "vitrina.DeadLetter", "", 1, 30 * DAY_MS,
                     description=f"Records of {source.name} no agent could process.", dead_letter=False)


def all_specs() -> list[TopicSpec]:
    specs = list(TOPICS)
    specs += [dead_letter_spec(s) for s in TOPICS if s.dead_letter]
    return specs


_BY_NAME = {s.name: s for s in all_specs()}


def spec(name: str) -> TopicSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(sorted(_BY_NAME))}") from None


def full_name(settings: Settings, name: str) -> str:
    return settings.topic_prefix + name


INVALID_RECORD_EXPLAINED = ("the broker refused the whole batch as invalid (INVALID_RECORD): every record of it is "
                            "lost; on a compacted topic the cause is a record without a key")


def explain_invalid_record() -> None:
    """aiokafka (Faust, the engine) has no class for Kafka error 87 and reports a refused batch as a bare
    ``UnknownError()``: register one that says what happened and the usual cause. Idempotent."""
    from aiokafka import errors

    if errors.kafka_errors.get(87, errors.UnknownError) is not errors.UnknownError:
        return

    class InvalidRecord(errors.BrokerResponseError):
        errno = 87
        message = "INVALID_RECORD"
        description = INVALID_RECORD_EXPLAINED

        def __init__(self, *args: object) -> None:
            super().__init__(*(args or (INVALID_RECORD_EXPLAINED,)))

    errors.kafka_errors[87] = InvalidRecord


def is_compacted(name: str) -> bool:
    """Whether registry topic ``name`` is compacted (False for names the registry does not know)."""
    found = _BY_NAME.get(name)
    return found is not None and found.compacted


def require_key(name: str, key: bytes | None, compacted: bool | None = None) -> None:
    """Raise ``KeylessRecordError`` for a record without a key bound for a compacted topic (a registry
    name, or any topic with ``compacted=True``, e.g. a changelog)."""
    if key is None and (compacted if compacted is not None else is_compacted(name)):
        raise KeylessRecordError(name)


def key_of(topic: TopicSpec, event: dict) -> bytes | None:
    if topic.key_field == VIEWER:
        return viewer_key(event).encode()
    if not topic.key_field:
        return None
    value = event.get(topic.key_field)
    return None if value is None else str(value).encode()


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 10000})


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    specs = specs if specs is not None else all_specs()
    profile = compaction_profile(settings)
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [s for s in specs if full_name(settings, s.name) not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(full_name(settings, s.name), num_partitions=s.partitions,
                  replication_factor=settings.replication_factor,
                  config={**s.configs(profile), "min.insync.replicas": str(settings.min_insync_replicas)})
         for s in missing],
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except Exception as exc:  # TOPIC_ALREADY_EXISTS when another process raced us is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise
    _await_metadata(admin, {full_name(settings, s.name): s.partitions for s in missing}, timeout_s)
    log.info("topics_created", topics=created)
    return created


def _await_metadata(admin: AdminClient, partitions: dict[str, int], timeout_s: float) -> None:
    """Wait until the broker's metadata shows every new topic with all its partitions led: a client
    that reads a topic right after creating it (an engine runner restoring its new changelog) otherwise
    gets "Unknown partition". Best effort: a warning after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pending = dict(partitions)
    while pending:
        topics = admin.list_topics(timeout=timeout_s).topics
        pending = {name: count for name, count in pending.items()
                   if name not in topics or topics[name].error is not None or len(topics[name].partitions) < count
                   or any(p.leader < 0 for p in topics[name].partitions.values())}
        if not pending:
            return
        if time.monotonic() > deadline:
            log.warning("topics_not_in_metadata", topics=sorted(pending), seconds=timeout_s)
            return
        time.sleep(0.1)
