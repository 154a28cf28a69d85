"""The topic registry: every topic vitrina reads or writes, declared once.

``ensure_topics`` creates missing topics idempotently at start (existing topics
are left as they are). Names get ``VITRINA_TOPIC_PREFIX`` prepended so several
environments can share one cluster.
"""
from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

from infra.logs import get_logger
from infra.settings import Settings

DAY_MS = 24 * 3600 * 1000
log = get_logger("vitrina.topics")


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

    def configs(self) -> dict[str, str]:
        return {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms),
        }


def viewer_key(event: dict) -> str:
    """Partitioning key of viewer-scoped events: the user, or the device for guests."""
    return event.get("user_id") or f"device:{event['device_id']}"


VIEWER = "@viewer"  # key_field marker: key by viewer_key()

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("uploads.requested", "vitrina.UploadRequested", "upload_id", 6, 30 * DAY_MS,
              description="A user uploaded a file; the original is in S3."),
    TopicSpec("uploads.processed", "vitrina.UploadProcessed", "upload_id", 6, 30 * DAY_MS,
              description="Renditions, thumbnails, dedupe link of a finished upload."),
    TopicSpec("uploads.rejected", "vitrina.UploadRejected", "upload_id", 6, 30 * DAY_MS,
              description="Refused uploads with a machine-readable reason."),
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
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [s for s in specs if full_name(settings, s.name) not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(full_name(settings, s.name), num_partitions=s.partitions,
                  replication_factor=settings.replication_factor,
                  config={**s.configs(), "min.insync.replicas": str(settings.min_insync_replicas)}) for s in missing],
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
    log.info("topics_created", topics=created)
    return created
