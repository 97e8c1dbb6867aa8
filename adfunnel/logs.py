"""Structured JSON logs: one line per batch on hot paths, always with the correlation id.

Every module logs through `structlog.get_logger(component=...)`, so each line says which
part of the pipeline wrote it (gateway, consumer, writer, reporter, supervisor, http).
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "INFO") -> None:
    """Log JSON lines to stderr (Ray collects worker stderr into its log files)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.EventRenamer("message"),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
