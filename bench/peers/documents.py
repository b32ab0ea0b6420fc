"""The Celery peer's task document: one JSON object per task in S3 (``tasks/<task_id>.json``),
with the fields of SPEC §5, and the pure functions that move it from one state to the next.

The front writes it when a task is submitted (``pending``), the worker when it starts
(``processing``) and when every section has its answer (``completed``, or ``error`` when a
section failed). No password is ever part of it.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.errors import InvalidInput
from common.platform_config import PlatformConfig
from orchestrator.detection import detect

TASK_ID = re.compile(r"^task_\d{14}_[0-9a-f]{8}$")
MAX_RECORDS = 20


@dataclass(frozen=True)
class Job:
    """One section of a task: the prompt sent to its asset."""

    section: str
    asset_id: str
    prompt: str  # the record as JSON text, as the platform's workers send it


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_task_id(at: datetime | None = None) -> str:
    """``task_<YYYYMMDDHHMMSS>_<8 hex>`` (UTC), like the platform's ids."""
    return f"task_{(at or datetime.now(UTC)):%Y%m%d%H%M%S}_{secrets.token_hex(4)}"


def key_of(task_id: str) -> str:
    return f"tasks/{task_id}.json"


def jobs_of(records: list[dict[str, Any]], config: PlatformConfig) -> list[Job]:
    """The section each record feeds (the platform's own detection); InvalidInput when a
    record feeds none, or a section this peer does not run (only conversations)."""
    if not records or len(records) > MAX_RECORDS:
        raise InvalidInput(f"data must hold 1 to {MAX_RECORDS} records")
    jobs = []
    for hit in detect(records, config):
        if config.sections[hit.section].kind != "conversation":
            raise InvalidInput(f"data[{hit.index}]: section {hit.section} is not a conversation")
        jobs.append(Job(hit.section, hit.asset_id, json.dumps(records[hit.index])))
    return jobs


def _step(
    step: str, status: str, at: str, detail: str = "", duration_ms: float = 0.0
) -> dict[str, Any]:
    return {"step": step, "status": status, "at": at, "duration_ms": duration_ms, "detail": detail}


def submitted(
    task_id: str, username: str, tenant: str, records: list[dict[str, Any]], jobs: list[Job]
) -> dict[str, Any]:
    """The document of a task just accepted."""
    at = now()
    return {
        "task_id": task_id,
        "status": "pending",
        "progress": 0,
        "message": "Task submitted successfully",
        "username": username,
        "tenant": tenant,
        "data": records,
        "jobs": [[job.section, job.asset_id, job.prompt] for job in jobs],
        "section_detected": ", ".join(job.section for job in jobs),
        "conv_id": "",
        "message_id": "",
        "result_data": {},
        "cost": 0.0,
        "created_at": at,
        "updated_at": at,
        "completed_at": None,
        "trace": [_step("Submit", "completed", at)],
    }


def jobs_in(doc: dict[str, Any]) -> list[Job]:
    """The jobs :func:`submitted` listed."""
    return [Job(str(s), str(a), str(p)) for s, a, p in doc["jobs"]]


def started(doc: dict[str, Any], auth_ms: float) -> dict[str, Any]:
    """The document once the worker holds a platform token and starts the sections."""
    at = now()
    trace = [
        *doc["trace"],
        _step("1. Authentication", "completed", at, duration_ms=round(auth_ms, 1)),
        _step("2. Detect Sections", "completed", at, doc["section_detected"]),
    ]
    return doc | {
        "status": "processing",
        "progress": 20,
        "message": "Processing sections",
        "updated_at": at,
        "trace": trace,
    }


def finished(doc: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The document once every section has an outcome (``results``: section -> status,
    response, cost, conv_id, message_id, error, duration_ms)."""
    at = now()
    sections = [job.section for job in jobs_in(doc)]
    failed = [s for s in sections if results[s]["status"] != "completed"]
    trace = [
        *doc["trace"],
        *(
            _step(
                f"3. Section {s}",
                results[s]["status"],
                at,
                results[s]["error"],
                results[s]["duration_ms"],
            )
            for s in sections
        ),
        _step("4. Aggregate", "completed", at),
    ]
    status = "error" if failed else "completed"
    message = f"Sections failed: {', '.join(failed)}" if failed else "Task completed"
    return doc | {
        "status": status,
        "progress": 100,
        "message": message,
        "conv_id": ", ".join(results[s]["conv_id"] for s in sections),
        "message_id": ", ".join(results[s]["message_id"] for s in sections),
        "result_data": {
            s: {k: v for k, v in results[s].items() if k != "duration_ms"} for s in sections
        },
        "cost": round(sum(float(results[s]["cost"]) for s in sections), 4),
        "updated_at": at,
        "completed_at": at,
        "trace": trace,
    }


def result_view(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``GET /task/{id}/result`` answer (SPEC §6) of a document."""
    elapsed = None
    if doc.get("completed_at"):
        delta = datetime.fromisoformat(doc["completed_at"]) - datetime.fromisoformat(
            doc["created_at"]
        )
        elapsed = round(delta.total_seconds(), 3)
    return {
        "task_id": doc["task_id"],
        "status": doc["status"],
        "message": doc["message"],
        "section_detected": doc["section_detected"],
        "conv_id": doc["conv_id"],
        "message_id": doc["message_id"],
        "data": doc["result_data"],
        "cost": doc["cost"],
        "elapsed_seconds": elapsed,
    }
