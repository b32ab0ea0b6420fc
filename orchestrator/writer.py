"""The writer of one running task's record: changes in, compare-and-swap writes out.

Changes that arrive while a write is in flight are written together by the next one (group
commit): sections finishing at once cost one write, and each caller still returns only once its
own change is stored. A change is applied to a copy and becomes visible in the live record only
once stored, so no reader (here, or through another replica reading storage) sees a task
finished before it is. On a lost compare-and-swap the stored record is read again: if another
writer finished the task or took it over, :class:`TaskStopped` ends the run; otherwise the
changes are applied to the fresh record. Once stopped, the writer refuses every later change
the same way: sections of the run still going must not write into a task another replica now
owns. While storage is unavailable the write is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from common.backoff import Backoff
from common.errors import Conflict, Unavailable
from orchestrator.models import TaskRecord
from orchestrator.storage_client import StorageClient

logger = logging.getLogger(__name__)

Change = Callable[[TaskRecord], object]
_STORAGE_BACKOFF = Backoff(initial_s=0.2, max_s=5.0, jitter=0.5)


class TaskStopped(Exception):
    """Another writer finished the task (a cancel through another replica) or took it over."""


class RecordWriter:
    """Holds a running task's live record and its stored version, and writes changes to it."""

    def __init__(
        self, storage: StorageClient, record: TaskRecord, version: str, replica_id: str
    ) -> None:
        self.storage = storage
        self.record = record
        self.version = version
        self.replica_id = replica_id
        self._lock = asyncio.Lock()
        self._queued: list[tuple[Change, asyncio.Future[None]]] = []
        self._stopped: tuple[str, str] | None = None  # (status, owner) another writer left

    @property
    def waiting(self) -> int:
        """How many changes wait for the next write (none while only one is in flight)."""
        return len(self._queued)

    async def persist(self, change: Change) -> None:
        """Applies ``change`` and writes the record; returns once that change is stored."""
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (change, stored)
        self._queued.append(entry)
        try:
            await self._lock.acquire()
        except BaseException:  # cancelled while waiting: the change is not written
            with contextlib.suppress(ValueError):
                self._queued.remove(entry)
            raise
        try:
            if stored.done():  # written (or refused) with an earlier caller's batch
                return stored.result()
            batch, self._queued = self._queued, []
            try:
                await self._write([c for c, _ in batch])
            except Exception as exc:
                for _, other in batch:
                    if other is not stored:
                        other.set_exception(exc)
                raise
            except BaseException:  # this caller was cancelled: the others go with the next write
                self._queued[:0] = [e for e in batch if e is not entry]
                raise
            for _, other in batch:
                if other is not stored:
                    other.set_result(None)
            return None
        finally:
            self._lock.release()

    async def _write(self, changes: list[Change]) -> None:
        if self._stopped is not None:
            raise TaskStopped(*self._stopped)

        def apply(record: TaskRecord) -> None:
            for change in changes:
                change(record)

        base = self.record
        delays = _STORAGE_BACKOFF.delays()
        while True:
            candidate = base.model_copy(deep=True)
            apply(candidate)
            try:
                self.version = await self.storage.update(candidate, self.version)
            except Conflict:
                fresh, version = await self.storage.get(self.record.task_id)
                if fresh.status.terminal or fresh.owner != self.replica_id:
                    self.record, self.version = fresh, version
                    self._stopped = (fresh.status.value, fresh.owner)
                    raise TaskStopped(*self._stopped) from None
                # Keep the live step (it is not persisted on its own) on the fresh record.
                live = self.record
                fresh.status, fresh.progress, fresh.message = (
                    live.status,
                    live.progress,
                    live.message,
                )
                base, self.version = fresh, version
                continue
            except Unavailable as exc:
                delay = next(delays)
                logger.warning("storage unavailable, retrying the write in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            if candidate.status.terminal or base is not self.record:
                self.record = candidate
            else:
                # Sections still running hold references into the live record: update it in
                # place rather than replacing it.
                apply(self.record)
            return
