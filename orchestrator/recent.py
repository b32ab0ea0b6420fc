"""Tasks this replica finished lately, kept in memory so the status and result calls that follow a
task's end are answered without reading it back from storage.

What is kept is a summary: the record without its input records and its sealed password, which
status and result calls never show. The memory it takes is bounded in bytes (an estimate of each
summary's size) and in age: the oldest go first when either bound is passed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from orchestrator.models import TaskRecord

# What a summary costs beyond its texts: ids, timestamps, numbers, object overhead.
_BASE_BYTES = 2048
_PER_SECTION_BYTES = 512
_PER_TRACE_BYTES = 256


@dataclass(frozen=True)
class Recent:
    """A finished task's summary and when (monotonic) it was kept."""

    at: float
    record: TaskRecord
    size: int


def summary(record: TaskRecord) -> TaskRecord:
    """``record`` without what status and result calls never show."""
    return record.model_copy(update={"data": [], "password_sealed": ""})


def estimated_size(record: TaskRecord) -> int:
    """Bytes a summary holds, roughly: its texts plus a fixed cost per part."""
    sections = record.result_data.values()
    texts = len(record.message) + sum(len(s.response) + len(s.error) for s in sections)
    trace = sum(len(t.detail) + _PER_TRACE_BYTES for t in record.trace)
    return _BASE_BYTES + texts + trace + _PER_SECTION_BYTES * len(record.result_data)


class RecentTasks:
    """Summaries of finished tasks, at most ``max_bytes`` of them and none older than
    ``max_age_s``."""

    def __init__(self, max_bytes: int, max_age_s: float) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._items: OrderedDict[str, Recent] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, record: TaskRecord) -> None:
        kept = summary(record)
        self.pop(record.task_id)
        item = Recent(at=time.monotonic(), record=kept, size=estimated_size(kept))
        self._items[record.task_id] = item
        self.bytes += item.size
        self._evict()

    def get(self, task_id: str) -> TaskRecord | None:
        """The summary of ``task_id`` if it is still young enough."""
        self._evict()
        item = self._items.get(task_id)
        return item.record if item is not None else None

    def pop(self, task_id: str) -> None:
        if (item := self._items.pop(task_id, None)) is not None:
            self.bytes -= item.size

    def _evict(self) -> None:
        oldest_allowed = time.monotonic() - self.max_age_s
        while self._items:
            task_id, item = next(iter(self._items.items()))
            if item.at >= oldest_allowed and self.bytes <= self.max_bytes:
                return
            self.pop(task_id)
