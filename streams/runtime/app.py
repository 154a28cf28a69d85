"""The Faust application: one per process, configured from Settings.

Agents live in ``streams/agents/``; importing ``streams.agents`` registers them.
Values on every topic are raw bytes here and decoded by ``streams.runtime.inbound`` so a
malformed record becomes a dead letter instead of killing an agent.
"""
from __future__ import annotations


import faust

from infra.settings import Settings, load
from streams.runtime import faust_flush, faust_highwaters, faust_seek
from streams.kafka.broker_capabilities import BrokerCapabilities, capabilities


def kafka_urls(settings: Settings) -> list[str]:
    return [f"kafka://{hostport}" for hostport in settings.kafka_bootstrap.split(",")]


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Faust's aiokafka driver hard-codes fetch_max_wait_ms=1500, and Tansu answers a fetch only when
    that wait is over even if records arrived meanwhile: every agent hop then costs up to 1.5 s
    (0.75 s on average). VITRINA_FETCH_MAX_WAIT_MS sets a shorter wait (more idle fetches)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer

    def create_with_wait(self, transport):  # noqa: ANN001, ANN202 - Faust's signature
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms   # read by aiokafka's Fetcher at consumer start
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_with_wait


def apply_broker_workarounds(broker: BrokerCapabilities, settings: Settings) -> None:
    """Patch Faust's driver for a broker that needs it (Tansu); Apache Kafka gets Faust as it is."""
    if broker.early_fetch_answers:
        return
    # 100 ms by default: an agent hop then costs ~0.1 s instead of up to 1.5 s on Tansu, for ~2 % of a
    # core of idle fetches per worker; 0 keeps Faust's 1.5 s.
    if settings.fetch_max_wait_ms > 0:
        limit_fetch_wait(settings.fetch_max_wait_ms)
    if broker.verify_ends_by_reading:
        faust_highwaters.activate(settings)  # verified changelog highwaters: full table recovery on Tansu


def check_changelog_partitions_once_known() -> None:
    """Faust checks, at a table's first write from a source topic, that the source and the changelog
    have as many partitions, reading both counts from the consumer group's metadata snapshot. aiokafka
    puts 0 there for a topic its metadata does not list yet: a changelog topic Faust created moments
    before subscribing (a fresh app id: a first start, a replay). Until the next metadata refresh (up
    to 5 minutes) every write then raised PartitionsMismatch "... has 0 partitions", which answered a
    user's upload with ENCODE_FAILED "internal error". A count of 0 now means "not known yet": the
    write goes on and the check runs again at the next write (a real mismatch still raises)."""
    from faust.tables.base import Collection

    verify = Collection._verify_source_topic_partitions

    def verify_when_known(self, source_topic: str) -> None:  # noqa: ANN001 - Faust's signature
        if not self.app.consumer.topic_partitions(self.changelog_topic_name):
            return  # 0 or None: unknown yet, not remembered as verified
        verify(self, source_topic)

    Collection._verify_source_topic_partitions = verify_when_known


def _datadir(settings: Settings):
    path = settings.data_dir / "faust" / settings.app_id
    path.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return path


def create_app(settings: Settings) -> faust.App:
    broker = capabilities(settings)
    return faust.App(
        settings.app_id,
        broker=kafka_urls(settings),
        store="rocksdb://",
        # one directory per app id: Faust's appdir is <datadir>/v<version> whatever the app id, so two
        # apps (a replay, a test's own worker) sharing VITRINA_DATA_DIR opened each other's RocksDB tables
        datadir=str(_datadir(settings)),
        autodiscover=False,
        web_enabled=True,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=settings.worker_web_port,
        topic_replication_factor=settings.replication_factor,
        topic_partitions=6,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        key_serializer="raw",
        value_serializer="raw",
        stream_wait_empty=False,
        broker_commit_every=2000,
        # bigger buffers and polls: Faust's default of 4096 buffered events per stream
        # halves throughput on a 2-core machine
        stream_buffer_maxsize=50_000,
        broker_max_poll_records=10_000,
        consumer_max_fetch_size=8 * 1024 * 1024,
        broker_commit_interval=1.0,
        table_cleanup_interval=30.0,
        # Tansu reports a partition's high watermark as (base offset of the LAST BATCH + 1), so after
        # a multi-record changelog batch the persisted offset of a table exceeds the "highwater" and
        # Faust's check would refuse to restart the worker (ConsistencyError): the local store is right.
        # Apache Kafka's answers are exact, so Faust's check stays on there.
        recovery_consistency_check=broker.exact_high_watermarks,
        worker_redirect_stdouts=False,
        # Tansu completes a JoinGroup after about half the session timeout, so a short
        # timeout means a fast start; heartbeats run off the agents' event-loop work.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
    )


_settings = load()


def app_settings() -> Settings:
    """The settings this worker runs with: read once, when the app is created, and handed to every
    agent and engine processor from here (a processor gets them as ``out.settings``)."""
    return _settings


apply_broker_workarounds(capabilities(_settings), _settings)
check_changelog_partitions_once_known()
faust_flush.activate()  # commits wait for the table changelog writes before them
faust_seek.activate()  # partitions never committed are read from their beginning after a rebalance
app = create_app(_settings)
