"""The checks storage_svc makes before touching S3: task documents, object names and bodies,
write preconditions, page sizes and page tokens (task ids are :mod:`common.task_ids`).

Pure functions, no I/O. A task id (:mod:`common.task_ids`) embeds its UTC creation second,
which is what lets the store list tasks newest first without reading them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from common import task_ids
from common.errors import InvalidInput

# \Z, not $: "$" also matches before a trailing newline, which would then reach the key.
OBJECT_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
# Bytes; namespaced objects are small records (leases, idempotency keys), not documents.
# A lease lists every unfinished task of its replica (~32 bytes each): room for ~30,000.
MAX_OBJECT_BODY = 1024 * 1024

_OBJECTS_PAGE = "o1:"


def check_document(task_id: str, document: bytes) -> str:
    """Checks a task document written under ``task_id``; returns its status.

    It must be a UTF-8 JSON object whose ``task_id`` equals the id it is stored under and whose
    ``status`` is a string.
    """
    parsed = _json_object(f"document of task {task_id}", document)
    if parsed.get("task_id") != task_id:
        raise InvalidInput(
            f"document of task {task_id} has task_id {parsed.get('task_id')!r}; "
            "it must equal the task id it is stored under"
        )
    status = parsed.get("status")
    if not isinstance(status, str):
        raise InvalidInput(f"document of task {task_id} must have a string 'status'")
    return status


def _json_object(what: str, raw: bytes) -> dict[str, Any]:
    """``raw`` parsed as a UTF-8 JSON object, or InvalidInput naming ``what`` is wrong."""
    try:
        parsed: Any = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(f"{what} is nested too deeply to parse") from None
    if not isinstance(parsed, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return parsed


def check_object_name(name: str) -> str:
    """Returns ``name`` if it is a valid object name, else raises :class:`InvalidInput`."""
    if not OBJECT_NAME_RE.match(name):
        raise InvalidInput(
            f"object name {name[:80]!r} is malformed: expected 1-128 of [A-Za-z0-9._-]"
        )
    return name


def check_object_body(name: str, body: bytes) -> None:
    """Checks the body of object ``name``: a UTF-8 JSON object of at most 1 MiB."""
    if len(body) > MAX_OBJECT_BODY:
        raise InvalidInput(
            f"body of object {name} is {len(body)} bytes; at most {MAX_OBJECT_BODY} are allowed"
        )
    _json_object(f"body of object {name}", body)


def check_precondition(if_match: str | None, if_none_match: bool) -> None:
    """Checks the precondition of a write: at most one, and no empty version."""
    if if_match is not None and if_none_match:
        raise InvalidInput("give at most one precondition: if_match or if_none_match")
    if if_match is not None and not if_match:
        raise InvalidInput("if_match is empty: pass the version returned by the last read")


def check_page_size(page_size: int, most: int) -> None:
    """Raises :class:`InvalidInput` unless ``1 <= page_size <= most``."""
    if not 1 <= page_size <= most:
        raise InvalidInput(f"page_size must be between 1 and {most}, got {page_size}")


def status_of(document: bytes) -> str | None:
    """The ``status`` of a stored document, or None if it cannot be read as a task."""
    try:
        parsed: Any = json.loads(document)
    except (ValueError, RecursionError):
        return None
    status = parsed.get("status") if isinstance(parsed, dict) else None
    return status if isinstance(status, str) else None


def matches(document: bytes, wanted: dict[str, str]) -> bool:
    """Whether every field named in ``wanted`` has that value in the document (one parse)."""
    try:
        parsed: Any = json.loads(document)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and all(parsed.get(k) == v for k, v in wanted.items())


def encode_tasks_token(last_task_id: str) -> str:
    """Token of a task page: the id of its last (oldest) task, after which the next page starts.
    A position, not a credential: with an owner's listing it only ever reaches that owner's own
    index, so a token names nothing its holder could not list anyway."""
    return last_task_id


def decode_tasks_token(token: str) -> str:
    """The task id a page token names; InvalidInput if it has not a task id's form."""
    if not task_ids.REGEX.match(token):
        raise InvalidInput("page_token is not a token this list returned; start without one")
    return token


def encode_objects_token(namespace: str, last_name: str) -> str:
    """Opaque token of a page of ``namespace``: the next page starts after this name."""
    return _encode(f"{_OBJECTS_PAGE}{namespace}:{last_name}")


def decode_objects_token(namespace: str, token: str) -> str:
    """The name an :func:`encode_objects_token` token of ``namespace`` carries; InvalidInput if
    it is not one (a token of another namespace is not one)."""
    return _decode(token, f"{_OBJECTS_PAGE}{namespace}:", OBJECT_NAME_RE)


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(token: str, kind: str, pattern: re.Pattern[str] = task_ids.REGEX) -> str:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    last = text[len(kind) :]
    if not text.startswith(kind) or not pattern.match(last):
        raise InvalidInput("page_token is not a token this list returned; start without one")
    return last
