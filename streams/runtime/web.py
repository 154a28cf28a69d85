"""Worker HTTP pages: Prometheus /metrics (the Faust web server of each worker)."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.runtime.app import app


@app.page("/metrics")
async def metrics(web, request):
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
