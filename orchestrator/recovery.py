"""Leases and takeover: how several orchestrator replicas share one bucket safely.

Each replica keeps one lease object (``<prefix>_leases/<replica_id>.json``) holding its gRPC
address and the ids of the unfinished tasks it owns, and rewrites it every ``lease_renew_s``:
keeping leases alive costs one S3 write per replica per interval, whatever the number of
running tasks, and the leases *are* the index of unfinished work — a task costs no extra write
to be findable. A replica counts another as dead when that replica's lease version has not
changed for ``lease_ttl_s`` *as measured on the observer's own clock* — no clock
synchronisation between hosts is needed — or at once when its last lease says it stopped.
A lease also carries the replica's *tag*, two hex digits that start the random part of the ids
of the tasks it creates: another replica forwards a read of a new task to its creator before
any renewal lists it, so reads of running or just-finished tasks cost no S3 read anywhere. A
replica picks its tag among those no lease uses, so replicas started apart never share one and
never draw the same task id (one replica never draws the same id twice).

For a dead replica, the tasks to look at are the ones its lease lists plus the ones it created
after its last renewal (task ids carry their creation second in the creator's own clock, the
same clock that wrote ``renewed_at``; a newest-first listing stops at that point). So finding
orphans costs S3 calls in proportion to the dead replica's unfinished tasks and its last few
seconds of submissions, never to all tasks ever stored. For each such task whose owner is still
the dead replica, the observer writes itself as owner with compare-and-swap on the task's
version: of several replicas racing, exactly one write succeeds, the others get Conflict and
back off. The winner continues from what was persisted, so finished sections are reused, not
re-run. Once every task of a dead lease is handled, the lease is deleted. A replica that was
only cut off, not dead, loses its next compare-and-swap on each task and stops running it.

A replica lists a task in its lease *before* it writes itself as the task's owner (takeover,
retry): those tasks are not found through the creation-time window, so a replica dying between
the two writes must still leave the task findable — through its own lease once the owner write
landed, through the dead owner's lease (deleted only after all its tasks are handled) before.
A task taken over more than ``max_takeovers`` times (it keeps killing its owners) is
dead-lettered: it ends in ``error`` with the reason in its trace, listable by status and
retriable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from common.errors import AppError, Conflict, NotFound
from common.timeutil import iso, parse_iso, utcnow
from orchestrator.models import SectionState, TaskRecord, TraceEntry
from orchestrator.pipeline import TaskRun, aggregate
from orchestrator.storage_client import LEASES, StorageClient

logger = logging.getLogger(__name__)

# Task ids have one-second resolution; look a little further back than the last renewal.
_WINDOW_MARGIN = timedelta(seconds=2)
_WINDOW_PAGE = 10


@dataclass
class Lease:
    """What a replica's lease says, and since when (our clock) it has said it."""

    version: str
    since: float
    address: str = ""
    renewed_at: str = ""
    tasks: list[str] = field(default_factory=list)
    stopped: bool = False
    tag: str = ""

    @cached_property
    def task_set(self) -> frozenset[str]:
        return frozenset(self.tasks)


class Recovery:
    """Keeps this replica's lease alive and takes over the tasks of dead replicas."""

    def __init__(
        self,
        storage: StorageClient,
        replica_id: str,
        *,
        address: str,
        ttl_s: float,
        renew_s: float,
        max_takeovers: int,
        launch: Callable[[TaskRecord, str], object],
        runs: Mapping[str, TaskRun],
    ) -> None:
        self.storage = storage
        self.replica_id = replica_id
        self.address = address
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.max_takeovers = max_takeovers
        self._launch = launch
        self._runs = runs
        self._lease_version: str | None = None
        self.leases: dict[str, Lease] = {}
        self._started = time.monotonic()
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_lock = asyncio.Lock()
        self._claims: Counter[str] = Counter()
        # Two hex digits this replica puts in the ids of the tasks it creates, and in its lease,
        # so the other replicas know where a new task runs before a renewal lists it.
        self.tag = secrets.token_hex(1)
        self._blind = False
        self.taken_over = 0

    # -- own lease --------------------------------------------------------------------------

    async def start(self) -> None:
        """Picks a tag no lease uses and writes the first lease (retrying while storage
        is down), then renews and scans."""
        delay = 0.2
        while True:
            try:
                used = {
                    json.loads(raw).get("tag")
                    for _, raw, _ in await self.storage.list_objects(LEASES)
                }
                free = [tag for tag in (f"{n:02x}" for n in range(256)) if tag not in used]
                if self.tag in used and free:
                    self.tag = secrets.choice(free)
                await self.renew()
                break
            except AppError as exc:
                logger.warning("cannot write lease yet (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        logger.info("replica %s holds its lease (ttl %.1fs)", self.replica_id, self.ttl_s)
        self._loop_task = asyncio.create_task(self._loop(), name="lease-and-recovery")

    async def stop(self, unfinished: list[str]) -> None:
        """Stops renewing and writes a last lease that lists the tasks this replica leaves
        unfinished and says it stopped, so the other replicas take them over at once."""
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        with contextlib.suppress(AppError):
            await self.renew(unfinished, stopped=True)

    async def _loop(self) -> None:
        # Renewal runs on its own so a long scan can never make this replica look dead.
        renewer = asyncio.create_task(self._renew_loop(), name="lease-renewal")
        try:
            while True:
                await asyncio.sleep(self.renew_s)
                try:
                    await self.scan()
                except AppError as exc:
                    self._blind = True
                    logger.warning("scan for orphaned tasks failed: %s", exc)
                except Exception:
                    self._blind = True
                    logger.exception("scan for orphaned tasks failed")
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                await self.renew()
            except AppError as exc:
                logger.warning("lease renewal failed: %s", exc)

    async def renew(self, tasks: list[str] | None = None, *, stopped: bool = False) -> None:
        """Rewrites the lease with the ids of the tasks this replica runs or is claiming."""
        async with self._renew_lock:
            body = json.dumps(
                {
                    "replica_id": self.replica_id,
                    "address": self.address,
                    "renewed_at": iso(utcnow()),
                    "tasks": sorted({*self._runs, *self._claims} if tasks is None else tasks),
                    "stopped": stopped,
                    "tag": self.tag,
                }
            ).encode()
            try:
                self._lease_version = await self.storage.put_object(
                    LEASES, self.replica_id, body, version=self._lease_version
                )
            except (Conflict, NotFound):
                # Our lease was handled as dead (we were cut off); start a new one.
                logger.warning("lease of %s was lost; taking a new one", self.replica_id)
                self._lease_version = await self.storage.put_object(
                    LEASES, self.replica_id, body, version=None
                )

    @contextlib.asynccontextmanager
    async def claiming(self, task_ids: Collection[str]) -> AsyncIterator[None]:
        """Lists ``task_ids`` in this replica's lease for the duration (one lease write on
        entry): wrap every write that makes this replica a task's owner in it."""
        self._claims.update(task_ids)
        try:
            await self.renew()
            yield
        finally:
            self._claims -= Counter(task_ids)  # keeps only ids still claimed

    # -- other replicas ---------------------------------------------------------------------

    def is_alive(self, replica: str) -> bool:
        if replica == self.replica_id:
            return True
        lease = self.leases.get(replica)
        if lease is not None and lease.stopped:
            return False
        since = lease.since if lease else self._started
        return time.monotonic() - since <= self.ttl_s

    def address_of(self, replica: str) -> str:
        lease = self.leases.get(replica)
        return lease.address if lease and self.is_alive(replica) else ""

    def owner_address(self, task_id: str) -> str:
        """Address of the live replica whose lease lists ``task_id``, else of the live replica
        that created it (its tag in the id: a task runs where it was submitted until a
        takeover, which the leases then show); "" when neither is another live replica."""
        for name, lease in self.leases.items():
            if name != self.replica_id and task_id in lease.task_set:
                return self.address_of(name)
        tag = task_id[-8:-6]
        for name, lease in self.leases.items():
            if name != self.replica_id and lease.tag == tag:
                return self.address_of(name)
        return ""

    @property
    def alive(self) -> set[str]:
        return {name for name in self.leases if self.is_alive(name)} | {self.replica_id}

    async def scan(self) -> int:
        """Reads every lease and takes over the tasks of dead replicas; returns how many."""
        listed = await self.storage.list_objects(LEASES)
        now = time.monotonic()
        # After a stretch without storage, nobody's lease could be seen changing: judge them
        # afresh rather than declare every replica dead (they could not write either).
        fresh_start, self._blind = self._blind, False
        current: dict[str, Lease] = {}
        for name, raw, version in listed:
            seen = self.leases.get(name)
            body = json.loads(raw)
            unchanged = seen is not None and seen.version == version and not fresh_start
            current[name] = Lease(
                version=version,
                since=seen.since if seen and unchanged else now,
                address=str(body.get("address", "")),
                renewed_at=str(body.get("renewed_at", "")),
                tasks=list(body.get("tasks", [])),
                stopped=bool(body.get("stopped", False)),
                tag=str(body.get("tag", "")),
            )
        self.leases = current
        taken = 0
        for name, lease in list(current.items()):
            if self.is_alive(name):
                continue
            try:
                taken += await self._recover(name, lease)
            except AppError as exc:  # the next scan tries again; others go on meanwhile
                logger.warning("recovering the tasks of %s failed: %s", name, exc)
        return taken

    async def _recover(self, dead: str, lease: Lease) -> int:
        """Takes over every unfinished task of ``dead``, then deletes its lease."""
        logger.info("replica %s is dead; recovering its tasks", dead)
        orphans: list[tuple[TaskRecord, str]] = []
        seen: set[str] = set()
        async for record, version in self._created_after(lease.renewed_at):
            seen.add(record.task_id)
            if record.owner == dead and not record.status.terminal:
                orphans.append((record, version))
        for task_id in lease.tasks:
            if task_id in seen or task_id in self._runs:
                continue
            try:
                record, version = await self.storage.get(task_id)
            except NotFound:
                continue
            if record.owner == dead and not record.status.terminal:
                orphans.append((record, version))
        taken = 0
        if orphans:
            async with self.claiming([record.task_id for record, _ in orphans]):
                for record, version in orphans:
                    taken += await self.take_over(record, version)
        with contextlib.suppress(AppError):
            await self.storage.delete_object(LEASES, dead, lease.version)
        self.leases.pop(dead, None)
        return taken

    async def _created_after(self, renewed_at: str) -> AsyncIterator[tuple[TaskRecord, str]]:
        """Tasks created since shortly before ``renewed_at``, newest first."""
        if not renewed_at:
            return
        start = f"task_{parse_iso(renewed_at) - _WINDOW_MARGIN:%Y%m%d%H%M%S}"
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
        :meth:`claiming` for the task."""
        previous = record.owner or "none"
        record.owner = self.replica_id
        record.takeovers += 1
        if record.takeovers > self.max_takeovers:
            _dead_letter(record, f"its owner died {record.takeovers} times (last: {previous})")
            with contextlib.suppress(Conflict):
                await self.storage.update(record, version)
                logger.warning("task %s dead-lettered", record.task_id)
            return 0
        record.trace.append(
            TraceEntry(step="Takeover", status="completed", at=iso(utcnow()), detail=previous)
        )
        try:
            version = await self.storage.update(record, version)
        except Conflict:
            logger.info("task %s was taken over by another replica first", record.task_id)
            return 0
        logger.info("took task %s over from %s", record.task_id, previous)
        self.taken_over += 1
        self._launch(record, version)
        return 1


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
