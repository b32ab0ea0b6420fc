"""Bounds on the server-sent event streams one gateway holds open.

A stream holds a connection and an orchestrator call for as long as its task runs, so streams
are counted: at most ``per_principal`` open for one principal and ``per_task`` open on one task
(whoever holds them); past either, a new stream is refused with 429. Each stream also ends after
``max_lifetime_s``, and the client reconnects if it still wants events.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from common.errors import Overloaded

_RETRY_AFTER_S = 5


class TooManyStreams(Overloaded):
    retry_after_s = _RETRY_AFTER_S


class StreamLimits:
    """Counts the open streams of this gateway by principal and by task."""

    def __init__(self, per_principal: int, per_task: int, max_lifetime_s: float) -> None:
        self.per_principal = per_principal
        self.per_task = per_task
        self.max_lifetime_s = max_lifetime_s
        self._by_principal: Counter[str] = Counter()
        self._by_task: Counter[str] = Counter()

    def open(self, principal_id: str, task_id: str) -> contextlib.AbstractContextManager[None]:
        """Takes a stream slot for the duration (TooManyStreams when none is left)."""
        if self._by_principal[principal_id] >= self.per_principal:
            raise TooManyStreams(
                f"you have {self.per_principal} event streams open; close one first"
            )
        if self._by_task[task_id] >= self.per_task:
            raise TooManyStreams(f"task {task_id} has {self.per_task} event streams open")
        self._by_principal[principal_id] += 1
        self._by_task[task_id] += 1
        return self._held(principal_id, task_id)

    @contextlib.contextmanager
    def _held(self, principal_id: str, task_id: str) -> Iterator[None]:
        try:
            yield
        finally:
            for counter, key in ((self._by_principal, principal_id), (self._by_task, task_id)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]

    def open_streams(self) -> int:
        return sum(self._by_principal.values())
