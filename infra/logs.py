"""structlog setup: JSON lines when stderr is not a TTY, coloured console otherwise."""
from __future__ import annotations

import logging
import os
import sys

import structlog

_configured = False


def configure(level: str | None = None) -> None:
    global _configured
    if _configured:
        return
    level_name = (level or os.environ.get("VITRINA_LOG_LEVEL", "info")).upper()
    renderer = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty() and os.environ.get("VITRINA_LOG_JSON") != "1"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    _configured = True


def get_logger(name: str, **context: object) -> structlog.stdlib.BoundLogger:
    configure()
    return structlog.get_logger(name).bind(**context)
