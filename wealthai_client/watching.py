"""Waiting for a task: the decisions, apart from the sending (both clients drive a :class:`Watch`).

A watch follows the task's event stream (``GET /task/{id}/events``) and reads the task's
status on each event, so every update carries the sections too. It falls back to polling the
status when the stream cannot serve it:

- the stream is refused (429: too many streams open), answers 5xx, or the connection fails or
  drops: poll from then on;
- the stream ends, or stays silent for ``idle_s``, before the task finished: open it again if it
  had delivered events (its lifetime ran out, a gateway restarted), else poll (something on the
  way holds the stream back: the gateway sends the task's state the moment a stream opens);
- a stream refusal that polling would meet too (the key refused, the task unknown or another
  owner's) is raised at once.

Polling tolerates ``max_failures`` failed reads in a row (unreachable, 5xx, 429), waiting the
poll interval or the gateway's ``Retry-After`` between them; then the last failure is raised.
``timeout`` bounds the whole wait (:class:`~wealthai_client.errors.WaitTimeout`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.models import StatusResponse
from wealthai_client.errors import (
    RateLimited,
    ServerError,
    Unreachable,
    WaitTimeout,
    WealthAIError,
)

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "error", "cancelled"})
Source = Literal["start", "events", "polling"]
EVENTS: Literal["events"] = "events"
POLLING: Literal["polling"] = "polling"
_TRANSIENT = (Unreachable, ServerError, RateLimited)


@dataclass(frozen=True)
class TaskUpdate:
    """The task's status after a change, and how the change was seen."""

    status: StatusResponse
    source: Source

    @property
    def done(self) -> bool:
        return self.status.status in TERMINAL


class Watch:
    """One wait for one task: which way to look next, and when to give up."""

    def __init__(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        idle_s: float = 60.0,
        max_failures: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task_id = task_id
        self.poll_interval = poll_interval
        self.idle_s = idle_s
        self.max_failures = max_failures
        self.mode: Literal["events", "polling"] = EVENTS
        self.last: StatusResponse | None = None
        self.failures = 0
        self.delay = poll_interval
        self._clock = clock
        self._deadline = clock() + timeout if timeout is not None else None

    @property
    def done(self) -> bool:
        return self.last is not None and self.last.status in TERMINAL

    def seen(self, status: StatusResponse, source: Source) -> TaskUpdate | None:
        """A status just read: an update when it differs from the last one."""
        self.failures = 0
        self.delay = self.poll_interval
        if status == self.last:
            return None
        self.last = status
        return TaskUpdate(status, source)

    def stream_failed(self, error: WealthAIError) -> None:
        """The event stream could not be opened or broke: poll, unless polling would fail alike."""
        if not isinstance(error, _TRANSIENT):
            raise error
        self._poll(f"event stream unavailable ({error})")

    def stream_ended(self, delivered: bool) -> None:
        """The stream closed, or fell silent, with the task still running."""
        if not delivered:
            self._poll("event stream delivered nothing")

    def poll_failed(self, error: WealthAIError) -> None:
        """A status read failed: wait and read again, or give up with the error."""
        if not isinstance(error, _TRANSIENT):
            raise error
        self.failures += 1
        if self.failures > self.max_failures:
            raise error
        wait = error.retry_after_s if isinstance(error, RateLimited) else None
        self.delay = max(self.poll_interval, wait or 0.0)
        logger.info(
            "task %s: status not read (%s); again in %.1fs", self.task_id, error, self.delay
        )

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline); WaitTimeout once it passed."""
        if self._deadline is None:
            return None
        left = self._deadline - self._clock()
        if left <= 0:
            assert self.last is not None, "a watch reads the status before it waits"
            raise WaitTimeout(
                f"task {self.task_id} is still {self.last.status} ({self.last.progress}%)",
                self.last,
            )
        return left

    def read_timeout(self) -> float:
        """How long one read of the stream may wait: the idle limit, within the deadline."""
        left = self.remaining()
        return self.idle_s if left is None else min(self.idle_s, left)

    def next_poll(self) -> float:
        """Seconds to sleep before the next status read, within the deadline."""
        left = self.remaining()
        return self.delay if left is None else min(self.delay, left)

    def _poll(self, why: str) -> None:
        if self.mode != POLLING:
            logger.info("task %s: %s; polling every %.1fs", self.task_id, why, self.poll_interval)
        self.mode = POLLING
