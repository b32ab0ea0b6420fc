"""Task ids, task documents and page tokens: the checks storage_svc makes before touching S3.

Pure functions, no I/O. A task id (``task_YYYYMMDDHHMMSS_<8 hex>``) embeds its UTC creation
second, which is what lets the store list tasks newest first without reading them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, date, datetime
from typing import Any

from common.errors import InvalidInput

TASK_ID_RE = re.compile(r"^task_\d{14}_[0-9a-f]{8}$")

_TASKS_PAGE = "t1:"
_ACTIVE_PAGE = "a1:"


def check_task_id(task_id: str) -> str:
    """Returns ``task_id`` if it is well formed, else raises :class:`InvalidInput`."""
    if not TASK_ID_RE.match(task_id):
        raise InvalidInput(
            f"task_id {task_id[:80]!r} is malformed: expected task_YYYYMMDDHHMMSS_<8 hex digits>"
        )
    try:
        datetime.strptime(task_id[5:19], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"task_id {task_id!r} does not embed a valid UTC timestamp") from None
    return task_id


def task_day(task_id: str) -> date:
    """The UTC day a (well-formed) task id was created on."""
    return datetime.strptime(task_id[5:13], "%Y%m%d").replace(tzinfo=UTC).date()


def check_document(task_id: str, document: bytes) -> str:
    """Checks a task document written under ``task_id``; returns its status.

    It must be a UTF-8 JSON object whose ``task_id`` equals the id it is stored under and whose
    ``status`` is a string.
    """
    try:
        parsed: Any = json.loads(document.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"document of task {task_id} is not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"document of task {task_id} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidInput(f"document of task {task_id} must be a JSON object")
    if parsed.get("task_id") != task_id:
        raise InvalidInput(
            f"document of task {task_id} has task_id {parsed.get('task_id')!r}; "
            "it must equal the task id it is stored under"
        )
    status = parsed.get("status")
    if not isinstance(status, str):
        raise InvalidInput(f"document of task {task_id} must have a string 'status'")
    return status


def status_of(document: bytes) -> str | None:
    """The ``status`` of a stored document, or None if it cannot be read as a task."""
    try:
        parsed: Any = json.loads(document)
    except ValueError:
        return None
    status = parsed.get("status") if isinstance(parsed, dict) else None
    return status if isinstance(status, str) else None


def encode_tasks_token(last_task_id: str) -> str:
    """Opaque token of a task page: the next page starts after (older than) this id."""
    return _encode(_TASKS_PAGE + last_task_id)


def decode_tasks_token(token: str) -> str:
    """The task id a :func:`encode_tasks_token` token carries; InvalidInput if it is not one."""
    return _decode(token, _TASKS_PAGE)


def encode_active_token(last_task_id: str) -> str:
    """Opaque token of an active-task page: the next page starts after this id."""
    return _encode(_ACTIVE_PAGE + last_task_id)


def decode_active_token(token: str) -> str:
    """The task id a :func:`encode_active_token` token carries; InvalidInput if it is not one."""
    return _decode(token, _ACTIVE_PAGE)


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(token: str, kind: str) -> str:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    task_id = text[len(kind) :]
    if not text.startswith(kind) or not TASK_ID_RE.match(task_id):
        raise InvalidInput("page_token is not a token this list returned; start without one")
    return task_id
