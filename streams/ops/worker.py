"""Start a Faust worker with every agent registered, topics ensured first."""
from __future__ import annotations

import sys

from infra.settings import Settings, load


def tune_gc(settings: Settings) -> None:
    """Fewer young collections: the co-view state holds millions of small objects, and CPython's
    default threshold (700 allocations) made the per-title stage spend ~40% of its time in the
    collector (measured in-process on MovieLens). VITRINA_GC_THRESHOLD="gen0,gen1,gen2"."""
    import gc
    values = [int(v) for v in settings.gc_threshold.split(",")]
    gc.set_threshold(*values)


def run_worker(loglevel: str = "warn") -> int:
    settings = load()
    tune_gc(settings)
    from streams.kafka.topics import ensure_topics
    ensure_topics(settings)
    from streams.runtime.app import app
    from streams.agents import register_all
    register_all(settings)
    import streams.runtime.web  # noqa: F401  (metrics page)
    from streams.ops.lag import install as install_lag_metric
    install_lag_metric(app, every_s=settings.lag_every_s)  # vitrina_consumer_lag, measured off the event loop
    sys.argv = ["vitrina-worker", "worker", "--loglevel", loglevel,
                "--web-host", "127.0.0.1", "--web-port", str(settings.worker_web_port)]
    app.main()
    return 0
