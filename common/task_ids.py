"""The task id, owned here for every service: ``task_<YYYYMMDDHHMMSS>_<8 hex>``.

The digits are the task's UTC creation second, so ids sort by creation time and storage lists
one UTC day with one key prefix (:func:`day_prefix`). The first two hex digits are the *tag* of
the orchestrator replica that created the task (a task runs where it was submitted); the other
six are random. The form is the seed's: ``task_20251230182721_01e09305``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime

from common.errors import InvalidInput, NotFound

# ASCII digits only: \d would also take other scripts' digits, which no id ever has.
_BODY = r"task_[0-9]{14}_[0-9a-f]{8}"
PATTERN = f"^{_BODY}$"
"""The form as a pattern string for FastAPI ``Path(pattern=...)`` and JSON schema, where ``$``
is the end of the text. Python's ``$`` also matches before a final newline: use :data:`REGEX`."""
REGEX = re.compile(r"task_(?P<created>[0-9]{14})_(?P<tag>[0-9a-f]{2})[0-9a-f]{6}\Z")
"""The form compiled; ``REGEX.match(text)`` is true only for the whole of an id."""
EXAMPLE = "task_20251230182721_01e09305"
START = "task_"
"""What every id starts with: under a key prefix, it tells task documents from other objects."""

_SECOND = "%Y%m%d%H%M%S"
_HEX2 = re.compile(r"[0-9a-f]{2}\Z")
_HEX6 = re.compile(r"[0-9a-f]{6}\Z")


@dataclass(frozen=True)
class TaskId:
    """What a task id says: its creation second (UTC) and the tag of the replica that made it."""

    value: str
    created_at: datetime
    tag: str

    @property
    def day(self) -> date:
        """The UTC day the task was created on: the unit storage lists tasks by."""
        return self.created_at.date()


def new(now: datetime, tag: str, suffix: str | None = None) -> str:
    """The id of a task created at ``now`` (timezone-aware) by the replica tagged ``tag`` (two
    lowercase hex digits); ``suffix`` is the six random hex digits (drawn when None).

    ValueError for a naive ``now`` or a malformed tag or suffix: these are the caller's bugs.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware: ids carry the UTC creation second")
    if not _HEX2.match(tag):
        raise ValueError(f"tag must be two lowercase hex digits, got {tag!r}")
    if suffix is None:
        suffix = secrets.token_hex(3)
    elif not _HEX6.match(suffix):
        raise ValueError(f"suffix must be six lowercase hex digits, got {suffix!r}")
    return f"task_{now.astimezone(UTC):{_SECOND}}_{tag}{suffix}"


def parse(task_id: str) -> TaskId:
    """The parts of ``task_id``; InvalidInput if it is not a task id, NotFound if it has the form
    but names a second that never was (so it names no task)."""
    found = REGEX.match(task_id)
    if found is None:
        raise InvalidInput(
            f"task_id {task_id[:80]!r} is malformed: expected task_YYYYMMDDHHMMSS_<8 hex digits>"
        )
    c = found["created"]
    try:
        # Not strptime: every request names a task, and strptime costs ten times as much.
        created_at = datetime(
            int(c[:4]),
            int(c[4:6]),
            int(c[6:8]),
            int(c[8:10]),
            int(c[10:12]),
            int(c[12:]),
            tzinfo=UTC,
        )
    except ValueError:
        # Well formed, but no task was ever created in a second that does not exist.
        raise NotFound(f"task {task_id} not found") from None
    return TaskId(task_id, created_at, found["tag"])


def check(task_id: str) -> str:
    """``task_id`` if it is a task id, else InvalidInput saying what is wrong with it."""
    parse(task_id)
    return task_id


def day_prefix(day: date) -> str:
    """The start every id created on UTC ``day`` shares (what storage lists a day by)."""
    return f"{START}{day:%Y%m%d}"


def second_prefix(at: datetime) -> str:
    """The start every id created in ``at``'s UTC second shares; ids compare with it in
    creation order (a newest-first listing stops at it)."""
    return f"task_{at.astimezone(UTC):{_SECOND}}"
