"""File references in task records, owned here for the orchestrator (which checks them at
submission) and the worker (which puts the files in their place); and the name of a section's
result file, which both must agree on.

A record refers to a file by a JSON object whose one key is ``file_id``, anywhere below the
record's top level: ``{"report": {"file_id": "f_…"}}`` or ``{"docs": [{"file_id": "f_…"}]}``.
An object with any other key next to ``file_id`` is plain data, not a reference. The walk is
iterative (its own stack, no recursion), so any record that passes :mod:`common.json_limits`
is walked in at most :data:`~common.json_limits.MAX_NODES` steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

KEY = "file_id"
RESULT_SUFFIX = ".md"


@dataclass(frozen=True)
class Reference:
    """One reference: where it is (``data[0].docs[1]``), the id it gives (as given: not
    necessarily a well-formed id, or even a string), and the container and slot holding it,
    so a reader may put something in its place."""

    where: str
    file_id: object
    holder: dict[str, Any] | list[Any]
    slot: str | int


def is_reference(value: object) -> bool:
    """Whether ``value`` is a file reference: an object whose one key is ``file_id``."""
    return isinstance(value, dict) and len(value) == 1 and KEY in value


def references(record: dict[str, Any], where: str) -> list[Reference]:
    """Every reference below the top level of ``record`` (``where`` names the record, e.g.
    ``data[0]``), in document order. A reference is not looked into."""
    found: list[Reference] = []
    pending = _children(record, where)
    while pending:
        holder, slot, at = pending.pop()
        value = holder[slot]  # type: ignore[index]
        if is_reference(value):
            found.append(Reference(at, value[KEY], holder, slot))
        elif isinstance(value, dict | list):
            pending += _children(value, at)
    return found


def _children(
    node: dict[str, Any] | list[Any], path: str
) -> list[tuple[dict[str, Any] | list[Any], str | int, str]]:
    """The slots of ``node`` as a stack: the first one on top."""
    slots: list[str | int] = list(node) if isinstance(node, dict) else list(range(len(node)))
    return [(node, slot, f"{path}{_step(slot)}") for slot in reversed(slots)]


def _step(slot: str | int) -> str:
    if isinstance(slot, int):
        return f"[{slot}]"
    return f".{slot}" if slot.isidentifier() else f"[{json.dumps(slot, ensure_ascii=False)}]"


def result_name(task_id: str, section: str) -> str:
    """The name of the file a section of ``output: file`` stores its answer in,
    ``<task_id>_<section>.md``: the same for every dispatch of the section's job, so the
    orchestrator can tell the result file it keeps from one an earlier, lost dispatch stored."""
    return f"{task_id}_{section}{RESULT_SUFFIX}"
