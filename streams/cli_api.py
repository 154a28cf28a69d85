"""``vitrina api``: serve the read API."""
from __future__ import annotations

import argparse

from streams.cli import command


@command("api", "serve the read API (HTTP JSON over the Redis views) on VITRINA_API_HOST:VITRINA_API_PORT")(lambda p: None)
def run_api(args: argparse.Namespace) -> int:
    from api.app import serve
    serve()
    return 0
