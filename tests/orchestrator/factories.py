"""Task records for the orchestrator's unit tests."""

from __future__ import annotations

from typing import Any

from orchestrator.models import TaskRecord


def task_record(**fields: Any) -> TaskRecord:
    """A minimal valid task record; ``fields`` replace the defaults."""
    defaults: dict[str, Any] = {
        "task_id": "task_20261128000000_0123abcd",
        "username": "u",
        "tenant": "t",
        "password_sealed": "x",
        "data": [{}],
        "created_at": "2026-11-28T00:00:00.000000",
        "updated_at": "2026-11-28T00:00:00.000000",
    }
    return TaskRecord(**(defaults | fields))
