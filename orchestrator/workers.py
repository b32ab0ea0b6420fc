"""The orchestrator's pool of section workers.

Workers are configured as a list of ``host:port`` targets; a host name that resolves to several
addresses (a headless Kubernetes service) stands for one worker per address, re-resolved every
refresh so replicas that come and go are picked up with no restart. Each worker reports its
capacity and load (:meth:`WorkerClient.load`); a job is handed only to a ready worker with a
free slot, and waits on the pool's condition while every slot is taken. A worker that fails a
call is set aside until it answers a load probe again; one that said it was full (its slots
taken by other replicas' jobs) stays out until a probe says it has room.

Which worker, when several have room: the one the caller prefers (the worker that last ran
the job, as its task records it); else the job's *home*, the worker its id ranks first by
rendezvous hashing over the pool's workers (the same on every replica that sees the same
workers); else the least loaded. A job sent again after its orchestrator died thus reaches the
worker that ran it, even when that orchestrator died before it could record which one; there
the job finds the message it had sent (:mod:`section_worker.orphans`) instead of paying for
another. Hashing spreads jobs evenly, so the least loaded is only the fallback for a home that
is full or away.

Each probe's answer also carries what the worker saw of the platform (today's spend per
tenant, its breakers); :func:`platform_view` combines the ready workers' last answers into the
figures the dashboard shows (:meth:`WorkerPool.platform`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from common.errors import Unavailable
from orchestrator.worker_client import GrpcWorkerClient, Load, WorkerClient, WorkerError

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Worker:
    """One worker replica as the orchestrator sees it."""

    client: WorkerClient
    capacity: int = 0
    in_flight: int = 0
    ready: bool = False
    gone: bool = False
    full: bool = False
    reported: Load | None = None  # the worker's last answer to a probe

    @property
    def address(self) -> str:
        return self.client.address

    @property
    def free(self) -> int:
        if not self.ready or self.gone or self.full:
            return 0
        return max(0, self.capacity - self.in_flight)


@dataclass
class PoolStats:
    configured: int
    ready: int
    capacity: int
    running: int
    queued: int


# Breaker states from the most open down: the one the dashboard shows for an asset.
_BREAKER_ORDER = {"open": 2, "half_open": 1, "closed": 0}


@dataclass(frozen=True)
class PlatformView:
    """What the ready workers report of their platform calls, combined."""

    in_flight: int = 0
    spend_day: str = ""
    spend_today: dict[str, float] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)


def platform_view(loads: list[Load]) -> PlatformView:
    """Combines workers' reports: jobs in flight summed; spend per tenant summed over the
    workers that count the latest day (one still on yesterday has nothing of today yet); per
    asset, the most open breaker state any worker reports."""
    day = max((load.spend_day for load in loads), default="")
    spend: dict[str, float] = {}
    for load in loads:
        if load.spend_day == day:
            for tenant, dollars in load.spend_today.items():
                spend[tenant] = round(spend.get(tenant, 0.0) + dollars, 6)
    breakers: dict[str, str] = {}
    for load in loads:
        for asset, state in load.breakers.items():
            seen = breakers.get(asset)
            if seen is None or _BREAKER_ORDER.get(state, 0) > _BREAKER_ORDER.get(seen, 0):
                breakers[asset] = state
    return PlatformView(
        in_flight=sum(load.in_flight for load in loads),
        spend_day=day,
        spend_today=spend,
        breakers=breakers,
    )


@dataclass
class WorkerPool:
    """Hands out worker slots to section jobs."""

    targets: list[str]
    refresh_s: float = 2.0
    connect: Callable[[str], WorkerClient] = GrpcWorkerClient
    workers: dict[str, Worker] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _waiting: int = 0
    refused_full: int = 0
    _refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="worker-refresh")

    async def close(self) -> None:
        if self._refresher:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for worker in self.workers.values():
            await worker.client.close()

    def stats(self) -> PoolStats:
        live = [w for w in self.workers.values() if not w.gone]
        return PoolStats(
            configured=len(live),
            ready=sum(w.ready for w in live),
            capacity=sum(w.capacity for w in live if w.ready),
            running=sum(w.in_flight for w in live),
            queued=self._waiting,
        )

    def platform(self) -> PlatformView:
        """The ready workers' last reports of their platform calls, combined."""
        loads = [
            w.reported
            for w in self.workers.values()
            if w.ready and not w.gone and w.reported is not None
        ]
        return platform_view(loads)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:
                logger.exception("worker refresh failed")

    async def refresh(self) -> None:
        """Re-resolves the targets and asks every worker for its load."""
        addresses = await _resolve_all(self.targets)
        for address in addresses - self.workers.keys():
            self.workers[address] = Worker(self.connect(address))
            logger.info("worker %s added", address)
        for address, worker in list(self.workers.items()):
            worker.gone = address not in addresses
            if worker.gone and worker.in_flight == 0:
                logger.info("worker %s removed", address)
                del self.workers[address]
                await worker.client.close()
        await asyncio.gather(*(self._probe(w) for w in self.workers.values() if not w.gone))
        async with self._changed:
            self._changed.notify_all()

    async def _probe(self, worker: Worker) -> None:
        try:
            load = await worker.client.load()
        except WorkerError:
            if worker.ready:
                logger.warning("worker %s is not answering", worker.address)
            worker.ready = False
            return
        if not worker.ready:
            logger.info("worker %s ready (capacity %d)", worker.address, load.capacity)
        worker.ready = load.accepting
        worker.capacity = load.capacity
        worker.reported = load
        worker.full = load.in_flight >= load.capacity and worker.in_flight < load.capacity

    def set_aside(self, worker: Worker, *, full: bool) -> None:
        """Stops handing jobs to ``worker`` until a probe says it is back (``full``: that it
        has a free slot again)."""
        if full:
            worker.full = True
            self.refused_full += 1
        else:
            worker.ready = False

    def any_ready(self) -> Worker:
        """A ready worker for calls that need no slot (authentication)."""
        ready = [w for w in self.workers.values() if w.ready and not w.gone]
        if not ready:
            raise Unavailable("no section worker is reachable")
        return min(ready, key=lambda w: w.in_flight)

    @contextlib.asynccontextmanager
    async def slot(
        self, avoid: Worker | None = None, *, key: str = "", prefer: str = ""
    ) -> AsyncIterator[Worker]:
        """Waits for a free slot on a ready worker: the one at address ``prefer``, else the
        home of ``key`` (see the module's docstring), else the least loaded; never ``avoid``
        when another has room."""
        async with self._changed:
            self._waiting += 1
            try:
                worker = await self._changed.wait_for(lambda: self._pick(avoid, key, prefer))
            finally:
                self._waiting -= 1
            assert worker is not None
            worker.in_flight += 1
        try:
            yield worker
        finally:
            async with self._changed:
                worker.in_flight -= 1
                self._changed.notify_all()

    def home(self, key: str) -> Worker | None:
        """The worker ``key`` ranks first among the pool's workers (rendezvous hashing): it
        moves only when that worker leaves the pool, whatever the load."""
        members = [w for w in self.workers.values() if not w.gone]
        return max(members, key=lambda w: _rank(key, w.address), default=None)

    def _pick(self, avoid: Worker | None, key: str, prefer: str) -> Worker | None:
        free = [w for w in self.workers.values() if w.free > 0]
        if len(free) > 1 and avoid is not None:
            free = [w for w in free if w is not avoid]
        chosen = [self.workers.get(prefer) if prefer else None, self.home(key) if key else None]
        for worker in chosen:
            if worker is not None and worker in free:
                return worker
        return max(free, key=lambda w: (w.free, -w.in_flight), default=None)


def _rank(key: str, address: str) -> int:
    digest = hashlib.blake2b(f"{key}\0{address}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


async def _resolve_all(targets: list[str]) -> set[str]:
    found: set[str] = set()
    for target in targets:
        found.update(await _resolve(target))
    return found


async def _resolve(target: str) -> set[str]:
    host, _, port = target.rpartition(":")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM
        )
    except (socket.gaierror, OSError) as exc:
        logger.warning("cannot resolve worker target %s: %s", target, exc)
        return set()
    # "localhost" resolves to 127.0.0.1 and ::1, one server: prefer IPv4 when there is any.
    if any(info[0] == socket.AF_INET for info in infos):
        infos = [info for info in infos if info[0] == socket.AF_INET]
    addresses = set()
    for family, *_, sockaddr in infos:
        ip = str(sockaddr[0])
        addresses.add(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return addresses
