"""What a worker says it spent today, per tenant: the costs its budgets settled, counted on the
UTC day they were settled and started again when the day turns; and its breakers' states."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from common.platform_config import BreakerConfig, TenantConfig
from section_worker.protection.breaker import BreakerBook
from section_worker.protection.budgets import Budgets, SpendToday
from section_worker.protection.holds import Holds
from section_worker.protection.store import MemoryStore


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_spend_is_summed_per_tenant_and_starts_again_on_a_new_day() -> None:
    clock = Clock(datetime(2026, 3, 1, 23, 59, tzinfo=UTC))
    today = SpendToday(clock)
    assert today.snapshot() == ("2026-03-01", {})
    today.add("acme", 0.1)
    today.add("acme", 0.2)
    today.add("beta", 0.004)
    # Micro-dollars: 0.1 + 0.2 is 0.3 exactly, not 0.30000000000000004.
    assert today.snapshot() == ("2026-03-01", {"acme": 0.3, "beta": 0.004})

    clock.now = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)
    assert today.snapshot() == ("2026-03-02", {})
    today.add("beta", 0.05)
    assert today.snapshot() == ("2026-03-02", {"beta": 0.05})


async def test_settled_costs_count_as_spent_today_and_failed_attempts_do_not() -> None:
    store = MemoryStore()
    budgets = Budgets(store, Holds(store, 30))
    budgeted = TenantConfig(budget_day=10.0)
    for tenant, cfg, cost in (("acme", budgeted, 0.25), ("free", TenantConfig(), 0.5)):
        reservation = await budgets.reserve(tenant, cfg, "task_1", 0.3, time.monotonic())
        await budgets.settle(reservation, cost)
    failed = await budgets.reserve("acme", budgeted, "task_1", 0.3, time.monotonic())
    await budgets.settle(failed, 0.0)

    day, spent = budgets.today.snapshot()
    assert day == datetime.now(UTC).strftime("%Y-%m-%d")
    assert spent == {"acme": 0.25, "free": 0.5}


async def test_the_breaker_book_reports_each_used_assets_state() -> None:
    now = [0.0]
    config = BreakerConfig(failures=1, open_s=10)
    book = BreakerBook(MemoryStore(), lambda _: config, clock=lambda: now[0])
    assert book.states() == {}
    await book.success("a")
    await book.failure("b")
    assert book.states() == {"a": "closed", "b": "open"}
    now[0] = 11.0
    assert book.states() == {"a": "closed", "b": "half_open"}
