"""Takeover: the unfinished tasks of a dead replica are found and run by a live one.

For a dead replica (see :mod:`orchestrator.membership`), the tasks to look at are the ones its
lease lists plus the ones it created after its last renewal (task ids carry their creation
second in the creator's own clock, the same clock that wrote ``renewed_at``; a newest-first
listing stops at that point). So finding orphans costs S3 calls in proportion to the dead
replica's unfinished tasks and its last few seconds of submissions, never to all tasks ever
stored. For each such task whose owner is still the dead replica, the observer first lists it in
its own lease, then writes itself as owner with compare-and-swap on the task's version: of
several replicas racing, exactly one write succeeds, the others get Conflict and back off. A
write whose answer is lost (storage_svc died meanwhile) may have landed: it is tried again
until storage answers, and a Conflict then is read back — the task owned by this replica with
this takeover's count means the first attempt won, and the task runs here (else it would be
owned by a live replica that does not run it, and stay unfinished). The winner continues from
what was persisted, so finished sections are reused, not re-run, and sections whose prompt the
platform had accepted resume that message (:mod:`orchestrator.pipeline`). Once
every task of a dead lease is handled, the lease is deleted, so a recoverer that dies midway
leaves every task findable. A replica that was only cut off, not dead, loses its next
compare-and-swap on each task and stops running it.

A task taken over more than ``max_takeovers`` times (it keeps killing its owners) is
dead-lettered: it ends in ``error`` with the reason in its trace, listable by status and
retriable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection
from datetime import timedelta

from common import task_ids
from common.backoff import Backoff
from common.errors import AppError, Conflict, NotFound, Unavailable
from common.timeutil import parse_iso
from orchestrator import transitions
from orchestrator.membership import Lease, Membership
from orchestrator.models import TaskRecord
from orchestrator.storage_client import LEASES, StorageClient, UnreadableTask
from orchestrator.sweeper import DEFAULT_WINDOW_S, index_seal

logger = logging.getLogger(__name__)

# Task ids have one-second resolution; look a little further back than the last renewal.
_WINDOW_MARGIN = timedelta(seconds=2)
_WINDOW_PAGE = 10
_STORAGE_BACKOFF = Backoff(initial_s=0.2, max_s=5.0, jitter=0.5)


class Takeover:
    """Finds the tasks of dead replicas and makes this replica run them."""

    def __init__(
        self,
        storage: StorageClient,
        membership: Membership,
        *,
        max_takeovers: int,
        retry_window_s: float = DEFAULT_WINDOW_S,
        launch: Callable[[TaskRecord, str], object],
        held: Callable[[], Collection[str]],
    ) -> None:
        self.storage = storage
        self.membership = membership
        self.max_takeovers = max_takeovers
        self.retry_window_s = retry_window_s
        self._launch = launch
        self._held = held
        self.taken_over = 0

    async def scan(self) -> int:
        """Reads every lease and takes over the tasks of dead replicas; returns how many."""
        taken = 0
        for lease in await self.membership.refresh():
            try:
                taken += await self._recover(lease)
            except AppError as exc:  # the next scan tries again; others go on meanwhile
                logger.warning("recovering the tasks of %s failed: %s", lease.name, exc)
        return taken

    async def _recover(self, lease: Lease) -> int:
        """Takes over every unfinished task of the dead replica, then deletes its lease."""
        dead = lease.name
        logger.info("replica %s is dead; recovering its tasks", dead)
        orphans: list[tuple[TaskRecord, str]] = []
        seen: set[str] = set()
        async for record, version in self._created_after(lease.body.renewed_at):
            seen.add(record.task_id)
            if record.owner == dead and not record.status.terminal:
                orphans.append((record, version))
        held = self._held()
        for task_id in sorted(lease.tasks - seen):
            if task_id in held:
                continue
            try:
                record, version = await self.storage.get(task_id)
            except NotFound:
                continue
            except UnreadableTask as exc:  # one bad document must not hold the others back
                logger.warning("task %s of %s cannot be taken over: %s", task_id, dead, exc.reason)
                continue
            if record.owner == dead and not record.status.terminal:
                orphans.append((record, version))
        taken = 0
        if orphans:
            async with self.membership.claiming([record.task_id for record, _ in orphans]):
                for record, version in orphans:
                    taken += await self.take_over(record, version)
        with contextlib.suppress(AppError):
            await self.storage.delete_object(LEASES, dead, lease.version)
        self.membership.forget(dead)
        return taken

    async def _created_after(self, renewed_at: str) -> AsyncIterator[tuple[TaskRecord, str]]:
        """Tasks created since shortly before ``renewed_at``, newest first."""
        if not renewed_at:
            return
        start = task_ids.second_prefix(parse_iso(renewed_at) - _WINDOW_MARGIN)
        token = ""
        while True:
            records, token = await self.storage.list_tasks(_WINDOW_PAGE, token)
            for record, version in records:
                if record.task_id < start:
                    return
                yield record, version
            if not token:
                return

    async def take_over(self, record: TaskRecord, version: str) -> int:
        """Makes this replica the owner of ``record`` (compare-and-swap on ``version``) and
        runs it, or dead-letters it; 1 when this replica won the task. Call it inside
        :meth:`Membership.claiming` for the task."""
        previous = record.owner or "none"
        if not transitions.take_over(record, self.membership.replica_id, self.max_takeovers):
            with contextlib.suppress(Conflict):
                await self.storage.update(record, version)
                logger.warning("task %s dead-lettered", record.task_id)
                await index_seal(self.storage, record, self.retry_window_s)
            return 0
        won = await self._write_owner(record, version)
        if won is None:
            logger.info("task %s was taken over by another replica first", record.task_id)
            return 0
        version = won
        logger.info("took task %s over from %s", record.task_id, previous)
        self.taken_over += 1
        self._launch(record, version)
        return 1

    async def _write_owner(self, record: TaskRecord, version: str) -> str | None:
        """Stores ``record`` as taken over (compare-and-swap on ``version``): its new version,
        or None when another writer changed the task first. Retried while storage is
        unavailable; after a lost answer, the task is read back to see whether it landed."""
        delays = _STORAGE_BACKOFF.delays()
        uncertain = False  # an attempt's answer was lost: it may have landed
        while True:
            try:
                if uncertain:
                    stored, stored_version = await self.storage.get(record.task_id)
                    if stored_version != version:
                        ours = (stored.owner, stored.takeovers) == (record.owner, record.takeovers)
                        return stored_version if ours and not stored.status.terminal else None
                    uncertain = False  # it did not land
                return await self.storage.update(record, version)
            except Conflict:
                return None
            except Unavailable as exc:
                uncertain = True
                delay = next(delays)
                logger.warning(
                    "taking task %s over: storage unavailable, looking again in %.1fs: %s",
                    record.task_id,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
