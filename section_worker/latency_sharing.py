"""Every worker polls on what all of them learned: the answer latencies each one measures go to
the workers' shared store (``WORKER_LIMITS_URL``: Redis for several workers, this process's
memory for one), and each reads back the merged recent window of every configured asset.

**How.** One exchange is one round trip (:meth:`~section_worker.protection.store.Store.
share_latencies`; on Redis one pipeline): the latencies this worker counted since its last
exchange are appended to each asset's list (``RPUSH``), the list is trimmed to the last
``WORKER_POLL_WINDOW`` (``LTRIM``) and its life renewed for a week (``EXPIRE``), and every
configured asset's list is read back (``LRANGE``); the worker then polls on the merged window
plus what it measured since. A worker exchanges once when it starts — so it starts knowing
what its peers learned — and every ``WORKER_POLL_SHARE_S`` (5 s) while it has jobs in flight
or latencies not yet shared (an answer is held back until its prompt is twice the slowest
answer old, or its job's timeout, before it counts: :mod:`section_worker.polling`); an idle
worker sends nothing.

**Cost**, with the defaults (window 200, 5 s) and this repository's ``config.json`` (7 assets
that answer prompts): 0.2 round trips a second per busy worker, none per idle one. A latency
is stored as whole milliseconds, 5 characters for 5-45 s: about 11 bytes on the wire with its
framing, sent once up and read back in every window; a full window is 2.2 KB, an exchange
reads 15 KB for 7 assets (3 KB/s per busy worker). Redis keeps a full window in 1.0 KB (its
``MEMORY USAGE``, a compact list of small integers; asserted by the tests), 7.3 KB for all.
Windows live a week after their last new answer; a memory-only Redis (``make run``'s) forgets
them when it restarts, as it forgets the limits.

**Failures** of the store never fail a job: the exchange is given up (what was to be sent is
kept for the next one, up to a window's worth), the failure is logged once until an exchange
works again, and the worker polls on what it knows itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection

from section_worker.polling import LatencyBook
from section_worker.protection.store import Store
from section_worker.settings import WorkerSettings

logger = logging.getLogger(__name__)


class LatencySharing:
    """This worker's side of the exchange: one call per round, a background loop while busy."""

    def __init__(
        self,
        book: LatencyBook,
        store: Store,
        assets: Collection[str],
        settings: WorkerSettings,
        *,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        """``assets``: the assets whose windows are read back each round (the configured
        ones); ``busy``: whether jobs are in flight (the loop runs while they are)."""
        self._book = book
        self._store = store
        self._assets = sorted(assets)
        self._keep = settings.poll_window
        self._every_s = settings.poll_share_s
        self._busy = busy
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    async def exchange(self) -> bool:
        """One round: sends what this worker measured, adopts the merged windows. False when
        the store failed (logged once until a round works again)."""
        sending = self._book.begin_share()
        try:
            async with asyncio.timeout(max(1.0, self._every_s)):
                windows = await self._store.share_latencies(sending, self._assets, self._keep)
        except asyncio.CancelledError:
            self._book.end_share(None)
            raise
        except Exception as exc:
            self._book.end_share(None)
            if not self._failing:
                self._failing = True
                logger.warning(
                    "cannot share answer latencies through the store (%s: %s); polling on "
                    "this worker's own until it can",
                    type(exc).__name__,
                    exc,
                )
            return False
        self._book.end_share(windows)
        if self._failing:
            self._failing = False
            logger.info("sharing answer latencies through the store again")
        return True

    def wake(self) -> None:
        """Makes sure the loop runs (a job started); it exchanges at once, then every
        ``poll_share_s`` until the worker is idle with nothing left to share."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="latency-sharing")

    def idle(self) -> bool:
        """Whether the loop has stopped (until the next :meth:`wake`)."""
        return self._task is None or self._task.done()

    async def _loop(self) -> None:
        while True:
            await self.exchange()
            if not self._busy() and not self._book.pending():
                return
            await asyncio.sleep(self._every_s)

    async def close(self) -> None:
        """Stops the loop (what was not sent yet is lost with the process)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
