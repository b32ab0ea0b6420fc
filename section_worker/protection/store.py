"""Where the workers' shared state lives: the protection's concurrency leases, request rates,
cool-downs, published breaker states and budget reservations, and the recent answer latencies
per asset that poll plans are drawn from.

:class:`Store` is the interface; :class:`MemoryStore` keeps everything in this process (the
default, ``WORKER_LIMITS_URL=memory://``: right for one worker), and
:class:`~section_worker.protection.redis_store.RedisStore` keeps it in Redis, where every
replica sees the same counters (``redis://``). Both hold the same rules:

- a *slot* is a lease on a limited number of places (an asset's or a tenant's concurrent
  calls); slots are taken together or not at all, and a lease not renewed within its time to
  live lapses, so the places a killed worker held free themselves;
- a *rate* is a limit on requests in any 60 seconds (a moving window: each request counted is
  forgotten 60 s later); an attempt's slots and one request of each of its rates are taken in
  one step, all or nothing (:meth:`Store.acquire`);
- a *cool-down* and a published *open breaker* are flags per asset with a remaining time;
- a *reservation* holds money of a tenant's budget (and of a task's ceiling) until it is
  settled to the real cost or lapses; :meth:`Store.reserve` refuses one that would take spend
  plus reservations over a limit, and says which limit and by how much;
- an asset's *latency window* is the last answer latencies every worker measured on it, in the
  order they were added, capped at a length the caller gives (:meth:`Store.share_latencies`).

Money is counted in whole micro-dollars, so sums never drift. Every key is named here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

PREFIX = "wealthai:"
MICROS = 1_000_000

Period = Literal["day", "month", "task"]


def to_micros(dollars: float) -> int:
    return round(dollars * MICROS)


def slot_key(scope: Literal["asset", "tenant"], name: str) -> str:
    return f"{PREFIX}slots:{scope}:{name}"


def rate_key(scope: Literal["asset", "tenant"], name: str) -> str:
    return f"{PREFIX}rate:{scope}:{name}"


# A rate counts the requests of the last this many seconds.
RATE_WINDOW_S = 60.0


def cooldown_key(asset: str) -> str:
    return f"{PREFIX}cooldown:{asset}"


def breaker_key(asset: str) -> str:
    return f"{PREFIX}breaker:{asset}"


def latency_key(asset: str) -> str:
    return f"{PREFIX}latency:{asset}"


# An asset's latency window outlives its last answer by this long (then it is forgotten).
LATENCY_TTL_S = 7 * 86400


@dataclass(frozen=True)
class Slot:
    """One place to take in a limited pool: ``key`` holds at most ``limit`` holders."""

    key: str
    limit: int


@dataclass(frozen=True)
class Rate:
    """A limit on requests: ``key`` counts at most ``per_minute`` in any 60 seconds."""

    key: str
    per_minute: int


@dataclass(frozen=True)
class AssetFlags:
    """Seconds left of an asset's cool-down and of its breaker's published open state."""

    cooldown_s: float = 0.0
    open_s: float = 0.0


@dataclass(frozen=True)
class BudgetLimits:
    """A tenant's limits in micro-dollars (None: no limit) and the periods they count in."""

    day: int | None
    month: int | None
    task: int | None
    day_key: str  # e.g. "2026-11-27"
    month_key: str  # e.g. "2026-11"


@dataclass(frozen=True)
class Overshoot:
    """Why a reservation was refused: the limit it would cross, what is spent and reserved."""

    period: Period
    limit: int
    spent: int
    reserved: int


@dataclass(frozen=True)
class Hold:
    """Something that lapses unless renewed: a lease (``slots``) or a reservation."""

    holder: str
    slots: tuple[Slot, ...] = ()
    tenant: str = ""  # set for a reservation


class Store(Protocol):
    """The shared state the protection needs; every call is one round trip at most."""

    async def acquire(
        self, slots: tuple[Slot, ...], holder: str, ttl_s: float, rates: tuple[Rate, ...] = ()
    ) -> bool:
        """Takes a place in every slot for ``holder`` and counts one request in every rate,
        or does nothing (False when a slot or a rate is full). The request is named by
        ``holder``: a caller counting several requests asks with a new holder for each, as
        :class:`~section_worker.protection.quotas.Quotas` does."""
        ...

    async def release(self, slots: tuple[Slot, ...], holder: str) -> None:
        """Gives back the places ``holder`` took."""
        ...

    async def renew(self, holds: list[Hold], ttl_s: float) -> None:
        """Extends every lease and reservation in ``holds`` by ``ttl_s`` from now."""
        ...

    async def asset_flags(self, asset: str) -> AssetFlags:
        """The asset's cool-down and published open-breaker time left."""
        ...

    async def cool_down(self, asset: str, seconds: float) -> None:
        """Puts the asset in cool-down for ``seconds`` (a longer one already set is kept)."""
        ...

    async def publish_open(self, asset: str, seconds: float) -> None:
        """Tells every replica the asset's breaker is open for ``seconds``."""
        ...

    async def clear_open(self, asset: str) -> None:
        """Tells every replica the asset's breaker closed."""
        ...

    async def reserve(
        self,
        tenant: str,
        task_id: str,
        holder: str,
        amount: int,
        limits: BudgetLimits,
        ttl_s: float,
    ) -> Overshoot | None:
        """Reserves ``amount`` against every limit at once; None when done, else the first
        limit it would cross (nothing reserved then)."""
        ...

    async def settle(
        self, tenant: str, task_id: str, holder: str, cost: int, limits: BudgetLimits
    ) -> None:
        """Ends ``holder``'s reservation (if it has not lapsed) and adds ``cost`` to what the
        tenant spent this day and month and what the task spent."""
        ...

    async def spent(self, tenant: str, task_id: str, limits: BudgetLimits) -> dict[str, int]:
        """Spent per period (``day``, ``month``, ``task``) and ``reserved`` (the tenant's)."""
        ...

    async def wait_for_change(self, timeout_s: float) -> None:
        """Returns when a place or some budget may have been freed, or after ``timeout_s``."""
        ...

    async def share_latencies(
        self, new: Mapping[str, Sequence[float]], assets: Collection[str], keep: int
    ) -> dict[str, list[float]]:
        """Appends ``new`` answer latencies (seconds, per asset) to each asset's window,
        keeping its last ``keep``, and returns the window of every asset in ``assets`` or
        ``new``, oldest first (empty for one nobody measured)."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Reservation:
    tenant: str
    task_id: str
    amount: int
    expires: float


@dataclass
class MemoryStore:
    """:class:`Store` in this process's memory: exact for one worker, unknown to others.

    Leases and reservations lapse like Redis's (a job that stopped renewing them frees them);
    ``clock`` (monotonic seconds) is replaceable for tests.
    """

    clock: Callable[[], float] = time.monotonic
    _slots: dict[str, dict[str, float]] = field(default_factory=dict)
    _requests: dict[str, deque[float]] = field(default_factory=dict)  # rate key -> times
    _cooldowns: dict[str, float] = field(default_factory=dict)
    _open: dict[str, float] = field(default_factory=dict)
    _spent: dict[str, int] = field(default_factory=dict)
    _reservations: dict[str, _Reservation] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _latencies: dict[str, deque[float]] = field(default_factory=dict)
    # One budget decision at a time: the check and the reservation are one step.
    _budget_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _holders(self, key: str) -> dict[str, float]:
        holders = self._slots.setdefault(key, {})
        now = self.clock()
        for holder in [h for h, expires in holders.items() if expires <= now]:
            del holders[holder]
        return holders

    def _recent(self, key: str) -> deque[float]:
        times = self._requests.setdefault(key, deque())
        since = self.clock() - RATE_WINDOW_S
        while times and times[0] <= since:
            times.popleft()
        return times

    async def acquire(
        self, slots: tuple[Slot, ...], holder: str, ttl_s: float, rates: tuple[Rate, ...] = ()
    ) -> bool:
        pools = [self._holders(slot.key) for slot in slots]
        for pool, slot in zip(pools, slots, strict=True):
            if holder not in pool and len(pool) >= slot.limit:
                return False
        counted = [self._recent(rate.key) for rate in rates]
        if any(len(times) >= rate.per_minute for times, rate in zip(counted, rates, strict=True)):
            return False
        now = self.clock()
        for pool in pools:
            pool[holder] = now + ttl_s
        for times in counted:
            times.append(now)
        return True

    async def release(self, slots: tuple[Slot, ...], holder: str) -> None:
        for slot in slots:
            self._slots.get(slot.key, {}).pop(holder, None)
        self._notify()

    async def renew(self, holds: list[Hold], ttl_s: float) -> None:
        expires = self.clock() + ttl_s
        for hold in holds:
            for slot in hold.slots:
                pool = self._slots.get(slot.key, {})
                if hold.holder in pool:
                    pool[hold.holder] = expires
            reservation = self._reservations.get(hold.holder)
            if reservation is not None:
                reservation.expires = expires

    def _left(self, flags: dict[str, float], asset: str) -> float:
        return max(0.0, flags.get(asset, 0.0) - self.clock())

    async def asset_flags(self, asset: str) -> AssetFlags:
        return AssetFlags(self._left(self._cooldowns, asset), self._left(self._open, asset))

    async def cool_down(self, asset: str, seconds: float) -> None:
        until = self.clock() + seconds
        self._cooldowns[asset] = max(until, self._cooldowns.get(asset, 0.0))

    async def publish_open(self, asset: str, seconds: float) -> None:
        self._open[asset] = self.clock() + seconds

    async def clear_open(self, asset: str) -> None:
        self._open.pop(asset, None)

    def _prune(self) -> None:
        now = self.clock()
        for holder in [h for h, r in self._reservations.items() if r.expires <= now]:
            del self._reservations[holder]
            self._notify()

    def _reserved(self, tenant: str, task_id: str | None = None) -> int:
        return sum(
            r.amount
            for r in self._reservations.values()
            if r.tenant == tenant and (task_id is None or r.task_id == task_id)
        )

    async def reserve(
        self,
        tenant: str,
        task_id: str,
        holder: str,
        amount: int,
        limits: BudgetLimits,
        ttl_s: float,
    ) -> Overshoot | None:
        async with self._budget_lock:
            self._prune()
            reserved = self._reserved(tenant)
            checks: list[tuple[Period, int | None, str, int]] = [
                ("day", limits.day, f"{tenant}:day:{limits.day_key}", reserved),
                ("month", limits.month, f"{tenant}:month:{limits.month_key}", reserved),
                ("task", limits.task, f"task:{task_id}", self._reserved(tenant, task_id)),
            ]
            for period, limit, key, held in checks:
                spent = self._spent.get(key, 0)
                if limit is not None and spent + held + amount > limit:
                    return Overshoot(period, limit, spent, held)
            self._reservations[holder] = _Reservation(tenant, task_id, amount, self.clock() + ttl_s)
            return None

    async def settle(
        self, tenant: str, task_id: str, holder: str, cost: int, limits: BudgetLimits
    ) -> None:
        async with self._budget_lock:
            self._reservations.pop(holder, None)
            if cost:
                for key in (
                    f"{tenant}:day:{limits.day_key}",
                    f"{tenant}:month:{limits.month_key}",
                    f"task:{task_id}",
                ):
                    self._spent[key] = self._spent.get(key, 0) + cost
            self._notify()

    async def spent(self, tenant: str, task_id: str, limits: BudgetLimits) -> dict[str, int]:
        self._prune()
        return {
            "day": self._spent.get(f"{tenant}:day:{limits.day_key}", 0),
            "month": self._spent.get(f"{tenant}:month:{limits.month_key}", 0),
            "task": self._spent.get(f"task:{task_id}", 0),
            "reserved": self._reserved(tenant),
        }

    async def wait_for_change(self, timeout_s: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout_s)):
                await changed.wait()

    async def share_latencies(
        self, new: Mapping[str, Sequence[float]], assets: Collection[str], keep: int
    ) -> dict[str, list[float]]:
        for asset, values in new.items():
            window = self._latencies.get(asset)
            if window is None or window.maxlen != keep:
                window = self._latencies[asset] = deque(window or (), maxlen=keep)
            window.extend(values)
        return {a: list(self._latencies.get(a, ())) for a in {*assets, *new}}

    async def close(self) -> None:
        self._notify()
