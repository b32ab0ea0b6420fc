"""The leases and reservations this worker holds, kept alive while their calls run.

A lease or reservation lapses ``ttl_s`` after it was taken or last renewed, so what a killed
worker held frees itself. :class:`Holds` renews every live one in one store round trip each
third of ``ttl_s``, so a long call keeps its place; a call that ends removes its hold first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from section_worker.protection.store import Hold, Store

logger = logging.getLogger(__name__)


class Holds:
    """The live holds of this worker and the task that renews them."""

    def __init__(self, store: Store, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._store = store
        self._live: dict[int, Hold] = {}
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, hold: Hold) -> int:
        """Keeps ``hold`` alive until :meth:`remove` is called with the number returned."""
        self._next += 1
        self._live[self._next] = hold
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._renew_loop(), name="protection-renewals")
        return self._next

    def remove(self, number: int) -> None:
        self._live.pop(number, None)

    def __len__(self) -> int:
        return len(self._live)

    async def renew_now(self) -> None:
        """One renewal round (the loop runs these; tests call it directly)."""
        await self._store.renew(list(self._live.values()), self.ttl_s)

    async def _renew_loop(self) -> None:
        while self._live:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self.renew_now()
            except Exception:
                # A missed round is survivable: the next one comes before the holds lapse.
                logger.exception("renewing %d lease(s) and reservation(s) failed", len(self._live))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
