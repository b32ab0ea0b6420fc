"""Cost budgets per tenant (per UTC day and month) and per task, reserved before each call.

Before an attempt calls an asset, :meth:`Budgets.reserve` reserves the asset's ``max_cost``
(the most one section may cost on it) against the tenant's day and month budgets and the
task's ceiling, in one atomic step of the store: spent + reserved + this reservation must stay
within every limit. After the call :meth:`Budgets.settle` replaces the reservation with the real
cost (nothing for an attempt that failed). A reservation of a worker that died lapses after the
lease time. So spend can pass a budget only by what a section costs beyond its asset's
``max_cost``.

A reservation that does not fit is refused with a message naming the budget, what is spent and
what is reserved. With the tenant's ``on_budget: wait`` the attempt waits instead (for
reservations to settle, or for the next day or month) until ``wait_until``. A tenant with no
budget and no ceiling costs no store call.

What this worker settled today, per tenant (:class:`SpendToday`), is counted where the spend
metric is, in memory: the dashboard's "spend today" is the sum over the workers (a worker that
restarts starts its day's count again, as its counter does).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from common.platform_config import TenantConfig
from section_worker.protection import metrics
from section_worker.protection.holds import Holds
from section_worker.protection.store import (
    MICROS,
    BudgetLimits,
    Hold,
    Overshoot,
    Store,
    to_micros,
)

# A waiter asks again at least this often (the day may turn with no notification).
_RECHECK_S = 1.0


@dataclass(frozen=True)
class Reservation:
    """Money held for one call; settle it with :meth:`Budgets.settle`. ``holder`` is empty for
    a tenant with no budget (nothing was reserved)."""

    tenant: str
    task_id: str
    holder: str
    amount: float
    limits: BudgetLimits
    hold: int = 0


class BudgetSpent(Exception):
    """The reservation would take a budget past its limit; the message says which and how."""

    def __init__(self, message: str, overshoot: Overshoot) -> None:
        super().__init__(message)
        self.overshoot = overshoot


def _dollars(micros: int) -> str:
    return f"${micros / MICROS:.2f}"


def describe(tenant: str, task_id: str, over: Overshoot) -> str:
    """The refusal as the result shows it, e.g. "tenant acme's daily budget of $5.00 is spent
    ($4.98 spent, $0.05 reserved)"."""
    amounts = f"({_dollars(over.spent)} spent, {_dollars(over.reserved)} reserved)"
    if over.period == "task":
        return f"task {task_id}'s ceiling of {_dollars(over.limit)} is reached {amounts}"
    which = "daily" if over.period == "day" else "monthly"
    return f"tenant {tenant}'s {which} budget of {_dollars(over.limit)} is spent {amounts}"


class SpendToday:
    """Dollars settled per tenant on the current UTC day, by this worker since it started."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._now = now
        self._day = ""
        self._micros: dict[str, int] = {}

    def _roll(self) -> str:
        day = self._now().strftime("%Y-%m-%d")
        if day != self._day:
            self._day = day
            self._micros = {}
        return day

    def add(self, tenant: str, dollars: float) -> None:
        self._roll()
        self._micros[tenant] = self._micros.get(tenant, 0) + to_micros(dollars)

    def snapshot(self) -> tuple[str, dict[str, float]]:
        """The day (YYYY-MM-DD, UTC) and the dollars settled on it per tenant."""
        day = self._roll()
        return day, {tenant: micros / MICROS for tenant, micros in self._micros.items()}


class Budgets:
    """Reserves and settles money against tenants' budgets and tasks' ceilings."""

    def __init__(
        self,
        store: Store,
        holds: Holds,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._holds = holds
        self._now = now
        self.today = SpendToday(now)

    def limits(self, cfg: TenantConfig) -> BudgetLimits:
        today = self._now()
        return BudgetLimits(
            day=None if cfg.budget_day is None else to_micros(cfg.budget_day),
            month=None if cfg.budget_month is None else to_micros(cfg.budget_month),
            task=None if cfg.task_ceiling is None else to_micros(cfg.task_ceiling),
            day_key=today.strftime("%Y-%m-%d"),
            month_key=today.strftime("%Y-%m"),
        )

    async def reserve(
        self,
        tenant: str,
        cfg: TenantConfig,
        task_id: str,
        amount: float,
        wait_until: float,
    ) -> Reservation:
        """Reserves ``amount`` dollars, waiting (``on_budget: wait``) until ``wait_until``
        (monotonic) at most; :class:`BudgetSpent` when it does not fit."""
        limits = self.limits(cfg)
        if limits.day is None and limits.month is None and limits.task is None:
            return Reservation(tenant, task_id, "", amount, limits)
        holder = uuid.uuid4().hex
        while True:
            started = time.perf_counter()
            over = await self._store.reserve(
                tenant, task_id, holder, to_micros(amount), limits, self._holds.ttl_s
            )
            metrics.LIMITER_SECONDS.labels(step="reserve").observe(time.perf_counter() - started)
            if over is None:
                metrics.TENANT_RESERVED.labels(tenant=tenant).inc(amount)
                hold = self._holds.add(Hold(holder, tenant=tenant))
                return Reservation(tenant, task_id, holder, amount, limits, hold)
            message = describe(tenant, task_id, over)
            left = wait_until - time.monotonic()
            if cfg.on_budget == "fail":
                raise BudgetSpent(message, over)
            if left <= 0:
                raise BudgetSpent(f"{message}; waited for it until the job's timeout", over)
            await self._store.wait_for_change(min(left, _RECHECK_S))
            limits = self.limits(cfg)  # the day or month may have turned

    async def settle(self, reservation: Reservation, cost: float) -> None:
        """Ends the reservation; ``cost`` (dollars) counts as spent."""
        if cost > 0:
            metrics.TENANT_SPEND.labels(tenant=reservation.tenant).inc(cost)
            self.today.add(reservation.tenant, cost)
        if not reservation.holder:
            return
        self._holds.remove(reservation.hold)
        metrics.TENANT_RESERVED.labels(tenant=reservation.tenant).dec(reservation.amount)
        started = time.perf_counter()
        await self._store.settle(
            reservation.tenant,
            reservation.task_id,
            reservation.holder,
            to_micros(cost),
            reservation.limits,
        )
        metrics.LIMITER_SECONDS.labels(step="settle").observe(time.perf_counter() - started)
