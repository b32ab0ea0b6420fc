"""Logging set-up, once per process in the entry point.

Task and section ids ride on context variables, so every line logged while handling a task
carries them without each call passing them along.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

task_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("task_id", default="")
section_var: contextvars.ContextVar[str] = contextvars.ContextVar("section", default="")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.task_id = task_id_var.get()
        record.section = section_var.get()
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
        for key in ("task_id", "section"):
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
        ids = " ".join(
            f"{key}={value}"
            for key in ("task_id", "section")
            if (value := getattr(record, key, ""))
        )
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
