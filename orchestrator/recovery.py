"""Leases and takeover: how several orchestrator replicas share one bucket safely.

Each replica keeps one lease object (``<prefix>_leases/<replica_id>.json``) and rewrites it every
``lease_renew_s``: keeping leases alive costs one S3 write per replica per interval, whatever
the number of running tasks. A task's document names its ``owner``. A replica counts another as
dead when that replica's lease version has not changed for ``lease_ttl_s`` *as measured on the
observer's own clock*, or when a lease it saw before is gone (a replica deletes its lease when
it stops) — no clock synchronisation between hosts is needed.

At each renewal a replica also reads the index of unfinished tasks (one LIST per 1000 of them,
never the whole bucket). A task it runs that has left the index was finished by another writer
(a cancel through another replica): it stops running it. For a task it does not run whose
owner is dead, it writes itself as the owner with compare-and-swap on the task's version: of
several replicas racing for the same task exactly one write succeeds; the others get Conflict
and back off. The winner continues from what was persisted, so finished sections are reused,
not re-run. The previous owner, if it was only slow and not dead, loses its next
compare-and-swap and stops running the task.

A task taken over more than ``max_takeovers`` times (it keeps killing its owners) is
dead-lettered: it ends in ``error`` with the reason in its trace, listable by status and
retriable with ``RetryTask``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from common.errors import AppError, Conflict, NotFound
from common.timeutil import iso, utcnow
from orchestrator.models import SectionState, TaskRecord, TraceEntry
from orchestrator.pipeline import TaskRun, aggregate
from orchestrator.storage_client import LEASES, StorageClient

logger = logging.getLogger(__name__)

# A marker younger than this may belong to a submission still in flight on another replica.
_ORPHAN_MARKER_AGE = timedelta(minutes=10)
# A lease dead for this many TTLs is deleted so the lease namespace stays small.
_FORGET_AFTER_TTLS = 10


@dataclass
class _Seen:
    version: str
    since: float  # monotonic time this version was first seen


class Recovery:
    """Keeps this replica's lease alive and takes over the tasks of dead replicas."""

    def __init__(
        self,
        storage: StorageClient,
        replica_id: str,
        *,
        ttl_s: float,
        renew_s: float,
        max_takeovers: int,
        launch: Callable[[TaskRecord, str], object],
        runs: Mapping[str, TaskRun],
    ) -> None:
        self.storage = storage
        self.replica_id = replica_id
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.max_takeovers = max_takeovers
        self._launch = launch
        self._runs = runs
        self._lease_version: str | None = None
        self._seen: dict[str, _Seen] = {}
        self._owners: dict[str, str] = {}
        self._started = time.monotonic()
        self._loop_task: asyncio.Task[None] | None = None
        self.alive: set[str] = {replica_id}
        self.taken_over = 0

    async def start(self) -> None:
        """Writes the first lease (retrying while storage is down), then renews and scans."""
        delay = 0.2
        while True:
            try:
                await self.renew()
                break
            except AppError as exc:
                logger.warning("cannot write lease yet (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        logger.info("replica %s holds its lease (ttl %.1fs)", self.replica_id, self.ttl_s)
        self._loop_task = asyncio.create_task(self._loop(), name="lease-and-recovery")

    async def stop(self) -> None:
        """Stops renewing and gives the lease up, so others take over at once."""
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._lease_version:
            with contextlib.suppress(AppError):
                await self.storage.delete_object(LEASES, self.replica_id, self._lease_version)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                await self.renew()
                await self.scan()
            except AppError as exc:
                logger.warning("lease renewal or scan failed: %s", exc)
            except Exception:
                logger.exception("lease renewal or scan failed")

    async def renew(self) -> None:
        body = json.dumps({"replica_id": self.replica_id, "renewed_at": iso(utcnow())}).encode()
        try:
            self._lease_version = await self.storage.put_object(
                LEASES, self.replica_id, body, version=self._lease_version
            )
        except (Conflict, NotFound):
            # Our lease was removed as long dead (we were cut off); write a new one.
            logger.warning("lease of %s was lost; taking a new one", self.replica_id)
            self._lease_version = await self.storage.put_object(
                LEASES, self.replica_id, body, version=None
            )

    # -- finding and taking orphaned tasks ---------------------------------------------------

    async def scan(self) -> None:
        """Updates which replicas are alive, then takes over tasks whose owner is dead."""
        now = time.monotonic()
        current: dict[str, _Seen] = {}
        for name, _body, version in await self.storage.list_objects(LEASES):
            seen = self._seen.get(name)
            current[name] = seen if seen and seen.version == version else _Seen(version, now)
            if (
                name != self.replica_id
                and now - current[name].since > _FORGET_AFTER_TTLS * self.ttl_s
            ):
                with contextlib.suppress(AppError):
                    await self.storage.delete_object(LEASES, name, version)
        self._seen = current
        self.alive = {n for n, s in current.items() if now - s.since <= self.ttl_s}
        self.alive.add(self.replica_id)

        # Runs started before the listing had their marker written before it, so a run of
        # that set whose marker is gone was finished by another writer (a cancel through
        # another replica, or a takeover after we were cut off): stop it.
        ours = set(self._runs)
        active = [task_id async for task_id in self.storage.active_ids()]
        for task_id in ours.difference(active):
            if run := self._runs.get(task_id):
                run.stop_finished_elsewhere()
        self._owners = {t: o for t, o in self._owners.items() if t in set(active)}
        for task_id in active:
            if task_id in self._runs:
                continue
            owner = self._owners.get(task_id)
            if owner is None or not self._is_alive(owner):
                await self.consider(task_id)

    def _is_alive(self, owner: str) -> bool:
        if owner in self.alive:
            return True
        # An owner whose lease we never saw is given one TTL after our own start to show up.
        never_seen = owner not in self._seen
        return never_seen and time.monotonic() - self._started <= self.ttl_s

    async def consider(self, task_id: str) -> bool:
        """Takes ``task_id`` over if its owner is dead; True when this replica now runs it."""
        try:
            record, version = await self.storage.get(task_id)
        except NotFound:
            await self._drop_orphan_marker(task_id)
            return False
        if record.status.terminal:
            # A crash came between the finishing write and the marker's removal.
            await self.storage.update(record, version, finished=True)
            return False
        if record.owner and self._is_alive(record.owner):
            self._owners[task_id] = record.owner
            return False
        previous = record.owner or "none"
        record.owner = self.replica_id
        record.takeovers += 1
        now = iso(utcnow())
        if record.takeovers > self.max_takeovers:
            _dead_letter(record, f"its owner died {record.takeovers} times (last: {previous})")
            try:
                await self.storage.update(record, version, finished=True)
            except Conflict:
                return False
            logger.warning("task %s dead-lettered after %d takeovers", task_id, record.takeovers)
            return False
        record.trace.append(
            TraceEntry(step="Takeover", status="completed", at=now, detail=f"from {previous}")
        )
        try:
            version = await self.storage.update(record, version, finished=False)
        except Conflict:
            logger.info("task %s was taken over by another replica first", task_id)
            self._owners.pop(task_id, None)
            return False
        logger.info("took task %s over from %s", task_id, previous)
        self.taken_over += 1
        self._launch(record, version)
        return True

    async def _drop_orphan_marker(self, task_id: str) -> None:
        """Removes the marker of a task whose first write never landed, once it is old."""
        created = datetime.strptime(task_id[5:19], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        if utcnow() - created > _ORPHAN_MARKER_AGE:
            await self.storage.delete(task_id)


def _dead_letter(record: TaskRecord, reason: str) -> None:
    """Ends the task in error, keeping the sections that had finished."""
    for section in record.result_data.values():
        if not section.status.terminal:
            section.status = SectionState.ERROR
            section.error = "not finished: task dead-lettered"
    aggregate(record)
    record.message = f"Dead-lettered: {reason}"
    record.trace.append(
        TraceEntry(step="Dead letter", status="error", at=record.updated_at, detail=reason)
    )
