"""The task id, owned here: ``task_<YYYYMMDDHHMMSS>_<8 hex>`` (SPEC §5).

The 14 digits are the creation second in UTC on the creating replica's clock, so ids sort by
creation time; the first two hex digits are the creating replica's tag (see
:mod:`orchestrator.membership`), the other six are random.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from common.errors import InvalidInput

PATTERN = r"^task_\d{14}_[0-9a-f]{8}$"
_REGEX = re.compile(r"task_(\d{14})_([0-9a-f]{2})([0-9a-f]{6})")
EXAMPLE = "task_20251230182721_01e09305"


@dataclass(frozen=True)
class TaskId:
    """What a task id says."""

    created_at: datetime
    tag: str
    random: str

    @property
    def day(self) -> str:
        """The creation day, ``YYYYMMDD``."""
        return f"{self.created_at:%Y%m%d}"


def new(created_at: datetime, tag: str, random: str) -> str:
    """The id of a task created at ``created_at`` by the replica tagged ``tag`` (2 hex digits),
    with ``random`` (6 hex digits) drawn by that replica."""
    task_id = f"task_{created_at.astimezone(UTC):%Y%m%d%H%M%S}_{tag}{random}"
    if not _REGEX.fullmatch(task_id):
        raise ValueError(f"tag {tag!r} and random part {random!r} do not make a task id")
    return task_id


def second_prefix(at: datetime) -> str:
    """The prefix shared by the ids of tasks created in ``at``'s second; ids compare with it in
    creation order."""
    return f"task_{at.astimezone(UTC):%Y%m%d%H%M%S}"


def is_valid(task_id: str) -> bool:
    return _REGEX.fullmatch(task_id) is not None


def parse(task_id: str) -> TaskId:
    """What ``task_id`` says; InvalidInput when it is not a task id."""
    match = _REGEX.fullmatch(task_id)
    if match is None:
        raise InvalidInput("task_id must look like task_YYYYMMDDHHMMSS_<8 hex digits>")
    try:
        created_at = datetime.strptime(match[1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"task_id {task_id!r} names no real second") from None
    return TaskId(created_at=created_at, tag=match[2], random=match[3])


def check(task_id: str) -> str:
    """``task_id`` when it is a task id, else InvalidInput."""
    parse(task_id)
    return task_id
