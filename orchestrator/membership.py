"""Membership: which orchestrator replicas are alive, where they are, and which tasks they hold.

Each replica keeps one lease object (``<prefix>_leases/<replica_id>.json``, a :class:`LeaseBody`)
holding its gRPC address, its tag and the ids of the unfinished tasks it owns, and rewrites it
every ``renew_s``: keeping leases alive costs one S3 write per replica per interval, whatever
the number of running tasks, and the leases *are* the index of unfinished work — a task costs
no extra write to be findable. A replica counts another as dead when that replica's lease
version has not changed for ``ttl_s`` *as measured on the observer's own clock* — no clock
synchronisation between hosts is needed — or at once when its last lease says it stopped.

The *tag*, two hex digits, starts the random part of the ids of the tasks a replica creates
(:mod:`common.task_ids`), so another replica knows where a new task runs before any renewal
lists it. A replica picks its tag among those no lease uses, so replicas started apart never
share one and never draw the same task id.

:meth:`Membership.locate` is the one place that decides where a task-scoped call is served:
here, or on the live replica that runs the task. What to do about dead replicas is
:mod:`orchestrator.takeover`'s business.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from functools import cached_property

from pydantic import BaseModel, Field, ValidationError

from common import task_ids
from common.errors import Conflict, NotFound
from common.timeutil import iso, utcnow
from orchestrator.storage_client import LEASES, StorageClient

logger = logging.getLogger(__name__)


class LeaseBody(BaseModel):
    """What a replica writes in its lease."""

    replica_id: str
    address: str = ""
    renewed_at: str = ""
    tasks: list[str] = Field(default_factory=list)
    stopped: bool = False
    tag: str = ""


@dataclass(frozen=True)
class Lease:
    """Another replica's lease as last read, and since when (our clock) it has said that."""

    name: str
    version: str
    since: float
    body: LeaseBody

    @cached_property
    def tasks(self) -> frozenset[str]:
        return frozenset(self.body.tasks)


def parse_lease(name: str, raw: bytes) -> LeaseBody | None:
    """The lease's body; None (logged) when it cannot be read, so one bad object never stops
    the others from being seen."""
    try:
        return LeaseBody.model_validate_json(raw)
    except (ValidationError, ValueError) as exc:
        logger.warning("lease %s cannot be read; ignoring it: %s", name, type(exc).__name__)
        return None


class Membership:
    """This replica's lease, and what it knows of the others'."""

    def __init__(
        self,
        storage: StorageClient,
        replica_id: str,
        address: str,
        *,
        ttl_s: float,
        held: Callable[[], Collection[str]],
    ) -> None:
        self.storage = storage
        self.replica_id = replica_id
        self.address = address
        self.ttl_s = ttl_s
        self._held = held
        self.tag = secrets.token_hex(1)
        self.leases: dict[str, Lease] = {}
        self._version: str | None = None
        self._started = time.monotonic()
        self._claims: Counter[str] = Counter()
        # After a stretch without storage nobody's lease could be seen changing: the next read
        # judges every lease afresh instead of declaring every replica dead.
        self._blind = False

    # -- own lease --------------------------------------------------------------------------

    async def join(self) -> None:
        """Picks a tag no lease uses and writes this replica's first lease."""
        used = {lease.body.tag for lease in await self._read()}
        free = [tag for tag in (f"{n:02x}" for n in range(256)) if tag not in used]
        if self.tag in used and free:
            self.tag = secrets.choice(free)
        await self.renew()

    async def renew(self, tasks: Collection[str] | None = None, *, stopped: bool = False) -> None:
        """Rewrites the lease with the tasks this replica holds or claims (or ``tasks``)."""
        held = {*self._held(), *self._claims} if tasks is None else set(tasks)
        body = LeaseBody(
            replica_id=self.replica_id,
            address=self.address,
            renewed_at=iso(utcnow()),
            tasks=sorted(held),
            stopped=stopped,
            tag=self.tag,
        )
        raw = body.model_dump_json().encode()
        try:
            self._version = await self.storage.put_object(
                LEASES, self.replica_id, raw, version=self._version
            )
            return
        except NotFound:
            pass
        except Conflict:
            # Either our last write landed but its reply was lost, or our lease was handled as
            # dead while we were cut off: write over whatever stands there now.
            try:
                _, self._version = await self.storage.get_object(LEASES, self.replica_id)
                self._version = await self.storage.put_object(
                    LEASES, self.replica_id, raw, version=self._version
                )
                return
            except NotFound:
                pass
        logger.warning("lease of %s was lost; taking a new one", self.replica_id)
        self._version = await self.storage.put_object(LEASES, self.replica_id, raw, version=None)

    @contextlib.asynccontextmanager
    async def claiming(self, task_ids: Collection[str]) -> AsyncIterator[None]:
        """Lists ``task_ids`` in this replica's lease for the duration (one lease write on
        entry): wrap every write that makes this replica a task's owner in it, so a replica
        dying between the two writes still leaves the task findable."""
        self._claims.update(task_ids)
        try:
            await self.renew()
            yield
        finally:
            self._claims -= Counter(task_ids)  # keeps only ids still claimed

    # -- the others -------------------------------------------------------------------------

    async def _read(self) -> list[Lease]:
        now = time.monotonic()
        leases = []
        for name, raw, version in await self.storage.list_objects(LEASES):
            if (body := parse_lease(name, raw)) is not None:
                leases.append(Lease(name=name, version=version, since=now, body=body))
        return leases

    async def refresh(self) -> list[Lease]:
        """Reads every lease; returns those of replicas now dead."""
        try:
            read = await self._read()
        except Exception:
            self._blind = True
            raise
        fresh_start, self._blind = self._blind, False
        current: dict[str, Lease] = {}
        for lease in read:
            seen = self.leases.get(lease.name)
            unchanged = seen is not None and seen.version == lease.version and not fresh_start
            current[lease.name] = (
                Lease(lease.name, lease.version, seen.since, lease.body)
                if seen is not None and unchanged
                else lease
            )
        self.leases = current
        return [lease for name, lease in current.items() if not self.is_alive(name)]

    def forget(self, replica: str) -> None:
        self.leases.pop(replica, None)

    def is_alive(self, replica: str) -> bool:
        if replica == self.replica_id:
            return True
        lease = self.leases.get(replica)
        if lease is not None and lease.body.stopped:
            return False
        since = lease.since if lease else self._started
        return time.monotonic() - since <= self.ttl_s

    @property
    def alive(self) -> set[str]:
        return {name for name in self.leases if self.is_alive(name)} | {self.replica_id}

    def address_of(self, replica: str) -> str:
        """Where the live replica ``replica`` is; "" for this one, or one dead or unknown."""
        lease = self.leases.get(replica)
        if replica == self.replica_id or lease is None or not self.is_alive(replica):
            return ""
        return lease.body.address

    def locate(self, task_id: str, owner: str = "") -> str:
        """Where a call about ``task_id`` is served: the address of the live replica that runs
        it, when that is another one; "" for here (this replica runs it, or nobody alive does
        and storage holds the truth).

        In order: the task's recorded ``owner`` when the caller read it; the live replica
        whose lease lists the task; the live replica that created it (the tag in its id) — a
        new task runs where it was submitted until a takeover, which the leases then show.
        """
        if task_id in self._held():
            return ""
        if owner:
            return self.address_of(owner)
        for name, lease in self.leases.items():
            if task_id in lease.tasks and (address := self.address_of(name)):
                return address
        tag = task_ids.parse(task_id).tag
        for name, lease in self.leases.items():
            if lease.body.tag == tag and (address := self.address_of(name)):
                return address
        return ""
