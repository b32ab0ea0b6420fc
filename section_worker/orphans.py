"""The messages of jobs that ran here, kept for a while so that a job's next dispatch to this
worker polls its message instead of paying for another.

A job's caller (an orchestrator) that dies, or whose stream breaks, cancels the job here. If
the prompt was sent by then, its message id may not have reached the caller, or not have been
stored by it: then nobody but this worker knows the message, and the platform has no call that
lists a conversation's messages (SPEC §3). The same holds for a job whose result did reach its
caller, if the caller dies before storing it (storage away, say). So every job that sent a
prompt leaves an :class:`Orphan` under its job id when it ends: when the same job id comes
back (a re-dispatch, or a takeover by another orchestrator, which prefers this worker for it),
it resumes the orphan's message — the platform answers a message again for nothing.

The book is bounded in both ways: an entry lives ``ttl_s`` (longer than any takeover takes),
and beyond ``max_entries`` the oldest go first. It lives in this process only: a worker that
dies takes its orphans with it (the window that stays open, see the README).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_TTL_S = 600.0
DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Orphan:
    """Where a cut-off job had got: the conversation, on which asset, and the message sent."""

    conv_id: str
    message_id: str
    asset_id: str
    # The message the cut-off dispatch was itself resuming ("" when it started afresh).
    resumed_from: str
    kept_at: float


class Orphans:
    """The orphans of this worker's jobs, by job id."""

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Orphan] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def keep(
        self, job_id: str, *, conv_id: str, message_id: str, asset_id: str, resumed_from: str
    ) -> None:
        """Remembers that ``job_id`` was cut off after sending ``message_id``."""
        self._entries.pop(job_id, None)
        self._entries[job_id] = Orphan(
            conv_id, message_id, asset_id, resumed_from, kept_at=self._clock()
        )
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def take(self, job_id: str, known_message_id: str) -> Orphan | None:
        """The orphan of ``job_id``, removed from the book, if it is at least as far as the
        message the caller knows (``known_message_id``, "" for none): the orphan is the
        caller's own message, or the one the cut-off dispatch resumed from, or the caller knows
        none. A caller that knows another message got further elsewhere: the orphan is
        dropped."""
        self._expire()
        orphan = self._entries.pop(job_id, None)
        if orphan is None:
            return None
        if known_message_id in ("", orphan.message_id, orphan.resumed_from):
            return orphan
        return None

    def _expire(self) -> None:
        horizon = self._clock() - self._ttl_s
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.kept_at > horizon:
                return
            self._entries.popitem(last=False)
