"""Admission under overload: how many submissions one gateway takes in at once.

A submission is taken in only while fewer than the gate's *limit* are being taken in; past it
the caller gets 429 with ``Retry-After: 1`` at once, rather than queueing for seconds behind
the others on a saturated machine (the submission was not taken: sending it again is safe).

The limit adapts to how long submissions take, additive increase and multiplicative decrease
as TCP's congestion window does, so that the submissions let in are answered in about
``target_s`` while as many are let in as that allows:

- a submission answered within ``target_s`` raises the limit by ``1 / limit`` (about one more
  place per ``limit`` submissions answered in time), up to ``ceiling``;
- one slower than that cuts it by ``DECREASE`` (to no less than one place), at most once per
  ``target_s``: the submissions slowed by one overloaded moment cut it once, not once each.

A ``target_s`` of 0 keeps the limit at ``ceiling``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

from common.errors import Overloaded

DECREASE = 0.7  # the limit is multiplied by this on a submission slower than the target


class SubmitsFull(Overloaded):
    """This gateway is taking in as many submissions as it may at once."""

    retry_after_s = 1


class SubmitGate:
    """At most :attr:`places` submissions taken in at once (module docstring)."""

    def __init__(
        self,
        ceiling: int,
        target_s: float = 0.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = ceiling
        self.target_s = target_s
        self.limit = float(ceiling)
        self.taking = 0
        self._clock = clock
        self._cut_at = -math.inf

    @property
    def places(self) -> int:
        """Submissions that may be taken in at once now."""
        return max(1, math.floor(self.limit))

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        """Holds a place while a submission is taken in (SubmitsFull when none is free); the
        time it takes adapts the limit (only when it is taken: a failure says nothing of the
        load)."""
        if self.taking >= self.places:
            raise SubmitsFull(f"{self.places} submissions are being taken in; try again shortly")
        self.taking += 1
        started = self._clock()
        try:
            yield
        finally:
            self.taking -= 1
        self._answered(self._clock() - started)

    def _answered(self, took_s: float) -> None:
        if not self.target_s:
            return
        now = self._clock()
        if took_s <= self.target_s:
            self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
        elif now - self._cut_at >= self.target_s:
            self.limit = max(1.0, self.limit * DECREASE)
            self._cut_at = now
