"""Admission: limits that keep one caller from hurting the rest.

A principal may submit at most ``rate_per_minute`` tasks a minute and have at most
``max_in_flight`` unfinished tasks on this replica; past either, a submission is refused with
:class:`Overloaded` (429) saying when to try again.

The rate is counted by the ``limits`` package's sliding window counter, in its asyncio memory
storage: this minute's count plus last minute's, weighed by how much of it the window still
covers. Its moving window, exact, keeps one entry per submission, and that storage expires them
by handing a search of each principal's entries to a thread, one hop per principal on every
pass: 0.36-0.39 ms of CPU per submission against 0.12 for the counter (a loop of hits a
millisecond apart). The threaded storage is no better: it starts a timer thread every few
milliseconds under load.
Both are counted per orchestrator replica: with N replicas behind one gateway address a caller
may get up to N times as much through.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from common.errors import Overloaded
from common.principals import Principal


class Throttled(Overloaded):
    """A caller is over one of its limits; ``retry_after_s`` says when one slot frees."""

    retry_after_s: int

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(f"{message}; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Admission:
    """Per-principal submission rate and tasks in flight on this replica."""

    def __init__(self, rate_per_minute: int, max_in_flight: int) -> None:
        self._rate = RateLimitItemPerMinute(rate_per_minute)
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.max_in_flight = max_in_flight
        self._in_flight: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def admit(self, caller: Principal) -> AsyncIterator[None]:
        """Counts one submission of ``caller`` (or refuses it with :class:`Throttled`) and holds a
        place among its tasks in flight while the submission is made, so concurrent submissions
        cannot all pass before any of them starts; the task's run holds its own once launched.
        The place is taken before the rate is counted, so that no other submission of the
        caller passes the in-flight check meanwhile."""
        if self._in_flight[caller.id] >= self.max_in_flight:
            raise Throttled(
                f"{self.max_in_flight} of your tasks are still running; wait for one to finish",
                retry_after_s=5,
            )
        self.started(caller.id)
        try:
            if not await self._limiter.hit(self._rate, caller.id):
                reset_at = (await self._limiter.get_window_stats(self._rate, caller.id)).reset_time
                wait = max(1, math.ceil(reset_at - time.time()))
                raise Throttled(
                    f"more than {self._rate.amount} submissions a minute", retry_after_s=wait
                )
            yield
        finally:
            self.finished(caller.id)

    def started(self, principal_id: str) -> None:
        self._in_flight[principal_id] += 1

    def finished(self, principal_id: str) -> None:
        self._in_flight[principal_id] -= 1
        if self._in_flight[principal_id] <= 0:
            del self._in_flight[principal_id]

    def in_flight(self, principal_id: str) -> int:
        return self._in_flight.get(principal_id, 0)

    def principals_in_flight(self) -> int:
        """How many principals have tasks in flight (what the counters hold)."""
        return len(self._in_flight)
