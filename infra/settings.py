"""Configuration from environment variables with defaults for the embedded stack.

Every knob is a ``VITRINA_*`` env var; the same code runs against the embedded
stack (Apache Kafka, or Tansu with ``VITRINA_BROKER=tansu``, + SeaweedFS + Redis) and
against a production Kafka cluster + MinIO + Redis (docker-compose.kafka.yml) by
changing these variables only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


DEV_URL_SIGNING_KEY = "dev-only-change-me"
# the published S3 defaults: in dev they stand for "not configured" and resolve to the data dir's generated
# credentials (with_dev_secrets); production refuses them (api/hardening.py)
DEV_S3_ACCESS_KEY = "vitrina"
DEV_S3_SECRET_KEY = "vitrina-secret"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(_env("VITRINA_DATA_DIR", "./var")).resolve())
    # kafka: Apache Kafka (the default, the production broker); tansu: the light embedded option
    broker: str = field(default_factory=lambda: _env("VITRINA_BROKER", "kafka").strip().lower())
    # Kafka nodes of the embedded cluster (1 or 3); node i listens on broker_port + 2 * (i - 1)
    brokers: int = field(default_factory=lambda: int(_env("VITRINA_BROKERS", "1")))
    kafka_bootstrap: str = field(default_factory=lambda: _env("VITRINA_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    # producers (streams/kafka/producer.py): librdkafka linger.ms; Tansu on S3 writes one object per batch,
    # so bigger batches mean fewer PUTs
    producer_linger_ms: int = field(default_factory=lambda: int(_env("VITRINA_PRODUCER_LINGER_MS", "50")))
    schema_registry_url: str = field(default_factory=lambda: _env("VITRINA_SCHEMA_REGISTRY_URL", ""))
    # with a registry (Confluent wire format, streams/kafka/schema_registry.py): subjects are named after the
    # topic ("topic": "<topic>-value", Confluent's TopicNameStrategy) or the record ("record": e.g.
    # "vitrina.PlaybackEvent", RecordNameStrategy)
    schema_subject_strategy: str = field(default_factory=lambda: _env("VITRINA_SCHEMA_SUBJECT_STRATEGY", "topic").strip().lower())
    # producers register missing schemas themselves: "1"/"0"; empty = on in dev, off in production (there
    # `vitrina schemas register` pre-registers every subject, as Confluent recommends)
    schema_auto_register: str = field(default_factory=lambda: _env("VITRINA_SCHEMA_AUTO_REGISTER", "").strip())
    # compatibility level `vitrina schemas register` sets on each subject and `vitrina schemas check` verifies
    schema_compatibility: str = field(default_factory=lambda: _env("VITRINA_SCHEMA_COMPATIBILITY", "BACKWARD").strip().upper())
    redis_url: str = field(default_factory=lambda: _env("VITRINA_REDIS_URL", "redis://127.0.0.1:16379/0"))
    # retries (exponential backoff, capped at 2 s: ~30 s) of a Redis command through a restart (sinks/redis_views.py)
    redis_retries: int = field(default_factory=lambda: int(_env("VITRINA_REDIS_RETRIES", "20")))
    s3_endpoint: str = field(default_factory=lambda: _env("VITRINA_S3_ENDPOINT", "127.0.0.1:18333"))
    s3_access_key: str = field(default_factory=lambda: _env("VITRINA_S3_ACCESS_KEY", DEV_S3_ACCESS_KEY))
    s3_secret_key: str = field(default_factory=lambda: _env("VITRINA_S3_SECRET_KEY", DEV_S3_SECRET_KEY))
    s3_secure: bool = field(default_factory=lambda: _env("VITRINA_S3_SECURE", "0") == "1")
    s3_region: str = field(default_factory=lambda: _env("VITRINA_S3_REGION", "us-east-1"))
    media_bucket: str = field(default_factory=lambda: _env("VITRINA_MEDIA_BUCKET", "media"))
    models_bucket: str = field(default_factory=lambda: _env("VITRINA_MODELS_BUCKET", "models"))
    broker_bucket: str = field(default_factory=lambda: _env("VITRINA_BROKER_BUCKET", "tansu"))
    broker_storage: str = field(default_factory=lambda: _env("VITRINA_BROKER_STORAGE", "s3"))  # s3 | memory
    topic_prefix: str = field(default_factory=lambda: _env("VITRINA_TOPIC_PREFIX", ""))
    # 0: chosen from the cluster size (3 with three or more brokers, else 1)
    replication_factor: int = field(default_factory=lambda: int(_env("VITRINA_REPLICATION_FACTOR", "0")))
    # per-topic compaction settings of compacted topics (streams/kafka/topics.py COMPACTION_PROFILES):
    # "production" (the default) or "fast" (dev/test stacks: superseded versions gone within seconds)
    compaction: str = field(default_factory=lambda: _env("VITRINA_COMPACTION", "production").strip().lower())
    app_id: str = field(default_factory=lambda: _env("VITRINA_APP_ID", "vitrina"))
    api_host: str = field(default_factory=lambda: _env("VITRINA_API_HOST", "127.0.0.1"))
    api_port: int = field(default_factory=lambda: int(_env("VITRINA_API_PORT", "18080")))
    # read API under load (api/app.py): a request waits up to api_redis_wait_s for one of the
    # api_redis_pool_size Redis connections of its process, then gets 503 with Retry-After
    # (api_retry_after_s), as it does when Redis is down or a command takes over api_redis_timeout_s
    api_redis_pool_size: int = field(default_factory=lambda: int(_env("VITRINA_API_REDIS_POOL_SIZE", "64")))
    api_redis_wait_s: float = field(default_factory=lambda: float(_env("VITRINA_API_REDIS_WAIT_S", "1.0")))
    api_redis_timeout_s: float = field(default_factory=lambda: float(_env("VITRINA_API_REDIS_TIMEOUT_S", "2.0")))
    api_retry_after_s: int = field(default_factory=lambda: int(_env("VITRINA_API_RETRY_AFTER_S", "1")))
    # slow clients: a connection that has not sent a complete request head this long after it opened or
    # after its previous response is closed (idle keep-alive and slowloris alike)...
    api_keepalive_timeout_s: float = field(default_factory=lambda: float(_env("VITRINA_API_KEEPALIVE_TIMEOUT_S", "10")))
    # ...and the rest of a request body no handler read is drained for at most this long, then the connection closed
    api_read_timeout_s: float = field(default_factory=lambda: float(_env("VITRINA_API_READ_TIMEOUT_S", "10")))
    # "1": several API processes share the port (SO_REUSEPORT), one per core
    api_reuse_port: bool = field(default_factory=lambda: _env("VITRINA_API_REUSE_PORT", "") == "1")
    # /ops/status (api/routes_ops.py): comma-separated host:port of the workers' web servers; empty: the
    # local worker (127.0.0.1:worker_web_port)
    status_workers: str = field(default_factory=lambda: _env("VITRINA_STATUS_WORKERS", "").strip())
    worker_web_port: int = field(default_factory=lambda: int(_env("VITRINA_WORKER_WEB_PORT", "16066")))
    url_signing_key: str = field(default_factory=lambda: _env("VITRINA_URL_SIGNING_KEY", DEV_URL_SIGNING_KEY))
    # dev (the embedded stack: generated secrets, warnings) or production (api/hardening.py refuses to
    # start on a dev secret, a missing JWT key or default S3 credentials)
    env: str = field(default_factory=lambda: _env("VITRINA_ENV", "dev").strip().lower())
    # bearer tokens of the read API (api/auth.py): HS256/384/512 with a shared secret, or RS256/ES256
    # (and their 384/512 kin) with a public key (PEM text or @path). Empty key in dev: a secret is
    # generated once into the data dir (``vitrina token`` mints with it).
    jwt_algorithm: str = field(default_factory=lambda: _env("VITRINA_JWT_ALGORITHM", "HS256").strip().upper())
    jwt_key: str = field(default_factory=lambda: _env("VITRINA_JWT_KEY", ""))
    jwt_issuer: str = field(default_factory=lambda: _env("VITRINA_JWT_ISSUER", "vitrina"))
    jwt_audience: str = field(default_factory=lambda: _env("VITRINA_JWT_AUDIENCE", "vitrina-api"))
    jwt_leeway_s: int = field(default_factory=lambda: int(_env("VITRINA_JWT_LEEWAY_S", "30")))
    # the key of /ops/* (header X-Ops-Key); a token with the "ops" role works too.
    # Empty in dev: generated once into the data dir
    ops_key: str = field(default_factory=lambda: _env("VITRINA_OPS_KEY", ""))
    # per-client (token subject, else address) request rate: a token bucket of api_rate_burst requests
    # refilled at api_rate_per_s; over it, 429 with Retry-After. 0 disables the limit
    # (empty: 200/s in production, off in dev, where load tests and benches all come from 127.0.0.1)
    api_rate_per_s: str = field(default_factory=lambda: _env("VITRINA_API_RATE_PER_S", "").strip())
    api_rate_burst: int = field(default_factory=lambda: int(_env("VITRINA_API_RATE_BURST", "400")))
    log_level: str = field(default_factory=lambda: _env("VITRINA_LOG_LEVEL", "info"))
    # stream runtime (streams/runtime/): consumer groups of the Faust app and of the engine processors.
    # Fetch wait: 100 ms, so a hop between stages costs ~0.1 s ("0" keeps the client's default);
    # Tansu completes a JoinGroup after about half the session timeout, so it is kept short.
    fetch_max_wait_ms: int = field(default_factory=lambda: int(_env("VITRINA_FETCH_MAX_WAIT_MS", "100").strip() or "0"))
    session_timeout_s: float = field(default_factory=lambda: float(_env("VITRINA_SESSION_TIMEOUT_S", "10")))
    rebalance_timeout_s: float = field(default_factory=lambda: float(_env("VITRINA_REBALANCE_TIMEOUT_S", "20")))
    # engine processors: records per poll, and seconds between checkpoints (outputs acked -> changelog ->
    # commit; a crash replays at most one period, applied once)
    engine_max_records: int = field(default_factory=lambda: int(_env("VITRINA_ENGINE_MAX_RECORDS", "5000")))
    engine_commit_s: float = field(default_factory=lambda: float(_env("VITRINA_ENGINE_COMMIT_S", "1.0")))
    # decoded values the processors of one worker share (streams/runtime/records.py DecodeCache; ~1 KB each,
    # held only while some reader of the partition has not read them yet)
    engine_decode_cache: int = field(default_factory=lambda: int(_env("VITRINA_ENGINE_DECODE_CACHE", "100000")))
    # input records over this size (key + value) are dead-lettered as OVERSIZED without decoding; a dead
    # letter keeps the first dead_letter_keep_bytes of a larger key or value (streams/kafka/deadletter.py)
    max_event_bytes: int = field(default_factory=lambda: int(_env("VITRINA_MAX_EVENT_BYTES", str(512 * 1024))))
    dead_letter_keep_bytes: int = field(
        default_factory=lambda: int(_env("VITRINA_DEAD_LETTER_KEEP_BYTES", str(64 * 1024))))
    # a worker (streams/ops/worker.py): the agent modules it runs (comma-separated names of streams/agents/,
    # e.g. "uploads"; empty: all), its CPython GC thresholds "gen0,gen1,gen2" (the default 700 made the
    # co-view stage spend ~40% of its time in the collector) and the period of its consumer-lag measurement
    agents: str = field(default_factory=lambda: _env("VITRINA_AGENTS", ""))
    gc_threshold: str = field(default_factory=lambda: _env("VITRINA_GC_THRESHOLD", "50000,20,100"))
    lag_every_s: float = field(default_factory=lambda: float(_env("VITRINA_LAG_EVERY_S", "15")))
    # Faust table recovery on verified changelog ends (streams/runtime/faust_highwaters.py), on brokers that
    # need it (Tansu); "0" turns it off there too
    verify_highwaters: bool = field(default_factory=lambda: _env("VITRINA_VERIFY_HIGHWATERS", "1") != "0")
    # parallel ffmpeg encodes of an uploads worker (processors/media/encode.py default_concurrency); empty:
    # half the cores
    encoder_concurrency: str = field(default_factory=lambda: _env("VITRINA_ENCODER_CONCURRENCY", "").strip())
    # showcase builder (streams/agents/showcase.py): seconds between ticks; quiet seconds before a dirty
    # user is built; quiet seconds of unchanged inputs before the settled pass rebuilds every view (0: never)
    showcase_tick_s: float = field(default_factory=lambda: float(_env("VITRINA_SHOWCASE_TICK_S", "1.0")))
    showcase_settle_s: float = field(default_factory=lambda: float(_env("VITRINA_SHOWCASE_SETTLE_S", "2.0")))
    showcase_settled_s: float = field(default_factory=lambda: float(_env("VITRINA_SHOWCASE_SETTLED_S", "30.0")))
    # the builder re-ranks with the serving versions of the ranking model named ranking_model_name (also the
    # default model of `vitrina model`); "0"/"false"/"no"/"off": never
    showcase_ranking: bool = field(default_factory=lambda: _env("VITRINA_SHOWCASE_RANKING", "1").strip().lower()
                                   not in ("0", "false", "no", "off"))
    ranking_model_name: str = field(default_factory=lambda: _env("VITRINA_RANKING_MODEL_NAME", "ranking"))
    # the online ranking pipeline (label join, trainer, checkpoints, promotion): the text of each variable,
    # checked and typed by streams/capabilities/ranking/settings.py (load_ranking_settings, whose table says
    # what each does), which names the variable in its error when a value cannot be used
    ranking_model: str = field(default_factory=lambda: _env("VITRINA_RANKING_MODEL", "default"))
    ranking_upcoming_len: str = field(default_factory=lambda: _env("VITRINA_RANKING_UPCOMING_LEN", "0"))
    checkpoint_every_s: str = field(default_factory=lambda: _env("VITRINA_CHECKPOINT_EVERY_S", "14400"))
    checkpoint_every_samples: str = field(default_factory=lambda: _env("VITRINA_CHECKPOINT_EVERY_SAMPLES", "1000000"))
    checkpoint_min_wall_s: str = field(default_factory=lambda: _env("VITRINA_CHECKPOINT_MIN_WALL_S", "60"))
    label_window_s: str = field(default_factory=lambda: _env("VITRINA_LABEL_WINDOW_S", "1800"))
    label_max_age_s: str = field(default_factory=lambda: _env("VITRINA_LABEL_MAX_AGE_S", "21600"))
    label_lateness_s: str = field(default_factory=lambda: _env("VITRINA_LABEL_LATENESS_S", "21600"))
    ranking_online_every_s: str = field(default_factory=lambda: _env("VITRINA_RANKING_ONLINE_EVERY_S", "30"))
    ranking_batch: str = field(default_factory=lambda: _env("VITRINA_RANKING_BATCH", "256"))
    ranking_buffer: str = field(default_factory=lambda: _env("VITRINA_RANKING_BUFFER", "100000"))
    ranking_learning_rate: str = field(default_factory=lambda: _env("VITRINA_RANKING_LEARNING_RATE", "0.002"))
    ranking_holdout_every: str = field(default_factory=lambda: _env("VITRINA_RANKING_HOLDOUT_EVERY", "10"))
    ranking_eval_min_samples: str = field(default_factory=lambda: _env("VITRINA_RANKING_EVAL_MIN_SAMPLES", "200"))
    ranking_promotion_tolerance: str = field(
        default_factory=lambda: _env("VITRINA_RANKING_PROMOTION_TOLERANCE", "0.01"))
    ranking_promotion_last_n: str = field(default_factory=lambda: _env("VITRINA_RANKING_PROMOTION_LAST_N", "5"))
    ranking_export_batch: str = field(default_factory=lambda: _env("VITRINA_RANKING_EXPORT_BATCH", "0"))
    # "0"/"false"/"no"/"off": no gate model (the ranking-gate-samples processor is not registered)
    ranking_gate: bool = field(default_factory=lambda: _env("VITRINA_RANKING_GATE", "1").strip().lower()
                               not in ("0", "false", "no", "off"))
    # co-view (streams/agents/coview.py; the README's table says what each does)
    # 200: the list length the quality bench chose on validation (bench/coview_quality.py --add-served-blend)
    coview_k: int = field(default_factory=lambda: int(_env("VITRINA_COVIEW_K", "200")))
    # the closed-form item model blended into the co-view lists (processors/coview/item_model.py): its
    # weight (0: co-view + metadata only) and the seconds between refits
    coview_model_weight: float = field(default_factory=lambda: float(_env("VITRINA_COVIEW_MODEL_WEIGHT", "0.25")))
    coview_model_refit_s: float = field(default_factory=lambda: float(_env("VITRINA_COVIEW_MODEL_REFIT_S", "300")))
    coview_half_life_days: str = field(default_factory=lambda: _env("VITRINA_COVIEW_HALF_LIFE_DAYS", "").strip())
    coview_flush_s: float = field(default_factory=lambda: float(_env("VITRINA_COVIEW_FLUSH_S", "0.25")))
    coview_flush_max_titles: int = field(default_factory=lambda: int(_env("VITRINA_COVIEW_FLUSH_MAX_TITLES", "2000")))
    coview_sweep_s: float = field(default_factory=lambda: float(_env("VITRINA_COVIEW_SWEEP_S", "60")))
    coview_settle_s: float = field(default_factory=lambda: float(_env("VITRINA_COVIEW_SETTLE_S", "2")))
    coview_settle_max_titles: int = field(default_factory=lambda: int(_env("VITRINA_COVIEW_SETTLE_MAX_TITLES", "200000")))
    coview_titles_commit_s: float = field(default_factory=lambda: float(_env("VITRINA_COVIEW_TITLES_COMMIT_S", "5")))

    def __post_init__(self) -> None:
        # an embedded cluster is reachable through every node: one bootstrap port names them all
        hosts = [h.strip() for h in self.kafka_bootstrap.split(",") if h.strip()]
        if self.brokers > 1 and len(hosts) == 1:
            host, port = hosts[0].rsplit(":", 1)
            hosts = [f"{host}:{int(port) + 2 * i}" for i in range(self.brokers)]
            object.__setattr__(self, "kafka_bootstrap", ",".join(hosts))
        if self.replication_factor <= 0:
            object.__setattr__(self, "replication_factor", 3 if self.brokers >= 3 else 1)

    @property
    def min_insync_replicas(self) -> int:
        """2 when records are replicated three times (acks=all survives one lost broker), else 1."""
        return 2 if self.replication_factor >= 3 else 1

    @property
    def broker_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def redis_port(self) -> int:
        return int(self.redis_url.split("://", 1)[1].split("/")[0].rsplit(":", 1)[1])

    @property
    def s3_port(self) -> int:
        return int(self.s3_endpoint.rsplit(":", 1)[1])

    @property
    def api_rate_limit_per_s(self) -> float:
        """Requests per second per client; 0 = no limit."""
        if self.api_rate_per_s:
            return float(self.api_rate_per_s)
        return 200.0 if self.env == "production" else 0.0

    @property
    def schema_auto_register_enabled(self) -> bool:
        """Whether producers may register a schema the registry lacks (off in production unless set)."""
        if self.schema_auto_register:
            return self.schema_auto_register not in ("0", "false", "no", "off")
        return self.env != "production"

    def describe(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


# the embedded dev stack's generated Redis password (infra/secrets.py writes it, `vitrina up` starts Redis with it)
REDIS_PASSWORD_SECRET = "redis-password"
# the embedded S3's access key and secret (two lines), generated once by infra/secrets.py; the stack
# configures SeaweedFS's S3 identity with them and rewrites the file with whatever credentials it starts with
S3_CREDENTIALS_SECRET = "s3-credentials"


def with_redis_password(url: str, password: str) -> str:
    """``url`` with ``password`` (no user name: Redis's default user)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f":{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def with_dev_secrets(settings: Settings) -> Settings:
    """In dev, the secrets the embedded stack generated into the data dir (when it did) fill in what is not
    configured: a Redis URL without a password gets the generated password, the published default S3
    credentials become the generated ones. Every process of the same stack finds them there. Production
    is never changed."""
    if settings.env == "production":
        return settings
    return with_dev_s3_credentials(_with_dev_redis_password(settings))


def _with_dev_redis_password(settings: Settings) -> Settings:
    if urlsplit(settings.redis_url).password:
        return settings
    path = settings.data_dir / "secrets" / REDIS_PASSWORD_SECRET
    try:
        password = path.read_text(encoding="ascii").strip()
    except OSError:
        return settings
    return replace(settings, redis_url=with_redis_password(settings.redis_url, password)) if password else settings


def uses_dev_s3_credentials(settings: Settings) -> bool:
    """Whether ``settings`` carry the published default S3 credentials (in dev: "not configured")."""
    return (settings.s3_access_key, settings.s3_secret_key) == (DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY)


def read_dev_s3_credentials(data_dir: Path) -> tuple[str, str] | None:
    """The S3 access key and secret the embedded stack of ``data_dir`` runs with, if it wrote them."""
    try:
        lines = (Path(data_dir) / "secrets" / S3_CREDENTIALS_SECRET).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    if len(lines) < 2 or not lines[0].strip() or not lines[1].strip():
        return None
    return lines[0].strip(), lines[1].strip()


def with_dev_s3_credentials(settings: Settings) -> Settings:
    """Dev settings with the default S3 credentials get the data dir's generated ones (when there are)."""
    if settings.env == "production" or not uses_dev_s3_credentials(settings):
        return settings
    found = read_dev_s3_credentials(settings.data_dir)
    if found is None:
        return settings
    return replace(settings, s3_access_key=found[0], s3_secret_key=found[1])


def load() -> Settings:
    """Read settings from the environment now (not at import time)."""
    return with_dev_secrets(Settings())


def to_env(settings: Settings) -> dict[str, str]:
    """The VITRINA_* variables that reproduce ``settings`` in a child process."""
    env = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        env[f"VITRINA_{f.name.upper()}"] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env
