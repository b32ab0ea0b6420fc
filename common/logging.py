"""Logging set-up, once per process in the entry point.

Task and section ids ride on context variables, so every line logged while handling a task
carries them without each call passing them along; with tracing on, so do the ids of the trace
and span the line was logged in (:mod:`common.tracing`), which finds a task's lines across
every service.

A JSON line (``*_LOG_FORMAT=json``) holds ``at`` (UTC, milliseconds), ``level``, ``logger``,
``msg``, and when known ``task_id``, ``section``, ``trace_id``, ``span_id`` and ``exc`` (a
traceback).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

from common import tracing

task_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("task_id", default="")
section_var: contextvars.ContextVar[str] = contextvars.ContextVar("section", default="")


_IDS = ("task_id", "section", "trace_id", "span_id")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.task_id = task_id_var.get()
        record.section = section_var.get()
        record.trace_id, record.span_id = tracing.current_ids()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for containers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _IDS:
            if value := getattr(record, key, ""):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{key}={value}" for key in _IDS if (value := getattr(record, key, "")))
        return f"{line} [{ids}]" if ids else line


def configure(service: str, level: str = "INFO", fmt: str = "text") -> None:
    """Sends every log line of this process to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter (botocore, httpx request lines) stays out unless debugging.
    for noisy in ("botocore", "aiobotocore", "httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
