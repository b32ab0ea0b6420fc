"""The life of every prompt, for benchmarks: ``GET /_sim/timeline``.

One :class:`Entry` per message: which input it carried, when its conversation was created, when
the prompt arrived, when its answer became ready (prompt time + the drawn latency), when a poll
first found it finished, and how many polls it got. With these a benchmark splits a task's time
into the platform's latency, the latency its polling added, and everything else.

Times are wall-clock UTC (ISO 8601), so they compare with the services' own clocks on one
machine. Entries are kept in arrival order and trimmed from the front beyond a maximum, so
memory stays bounded however long the simulator runs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


@dataclass
class Entry:
    """One prompt and what became of it."""

    asset_id: str
    input: str  # input_digest(asset_id, message), as in prompts_by_input
    created_at: datetime  # the conversation's creation: the job's first platform call
    prompted_at: datetime
    ready_at: datetime  # prompted_at + the latency drawn for this answer
    answered_at: datetime | None = None  # the first poll that found the answer finished
    status: str = ""  # SUCCESS or FAILED once answered
    polls: int = 0  # every poll of this message, the answering one included

    def as_json(self) -> dict[str, Any]:
        return {
            "asset_id": self.asset_id,
            "input": self.input,
            "created_at": _iso(self.created_at),
            "prompted_at": _iso(self.prompted_at),
            "ready_at": _iso(self.ready_at),
            "answered_at": _iso(self.answered_at) if self.answered_at else None,
            "status": self.status,
            "polls": self.polls,
        }


class Timeline:
    """Entries by message id, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def prompted(
        self,
        message_id: str,
        *,
        asset_id: str,
        digest: str,
        created_at: datetime,
        prompted_at: datetime,
        latency_s: float,
    ) -> None:
        """Records a prompt whose answer will be ready ``latency_s`` after it arrived."""
        self._entries[message_id] = Entry(
            asset_id=asset_id,
            input=digest,
            created_at=created_at,
            prompted_at=prompted_at,
            ready_at=prompted_at + timedelta(seconds=latency_s),
        )
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def polled(self, message_id: str, status: str, at: datetime) -> None:
        """Counts a poll of the message; the first one that finds it finished is its answer."""
        entry = self._entries.get(message_id)
        if entry is None:
            return
        entry.polls += 1
        if entry.answered_at is None and status != "IN_PROGRESS":
            entry.answered_at, entry.status = at, str(status)

    def as_json(self) -> dict[str, dict[str, Any]]:
        """Message id -> entry, oldest first."""
        return {message_id: entry.as_json() for message_id, entry in self._entries.items()}
