"""Both stores hold the same rules (each test runs on memory and on a real redis-server):
slots all-or-none with leases that lapse unless renewed, cool-downs keeping the longer,
published breaker states, and reservations refused past a limit with what is spent and
reserved."""

from __future__ import annotations

import asyncio

from section_worker.protection.store import BudgetLimits, Hold, Overshoot, Slot
from tests.section_worker.protection.conftest import MakeStore

A = Slot("wealthai:slots:asset:a", 2)
T = Slot("wealthai:slots:tenant:t", 1)


def limits(day: int | None = None, month: int | None = None, task: int | None = None):
    return BudgetLimits(day, month, task, "2026-11-27", "2026-11")


async def test_slots_are_taken_all_or_none_and_released(make_store: MakeStore) -> None:
    store = await make_store()
    assert await store.acquire((A, T), "h1", 30)
    # The tenant's one place is taken: the asset's free place is not taken either.
    assert not await store.acquire((A, T), "h2", 30)
    assert await store.acquire((A,), "h3", 30)
    assert not await store.acquire((A,), "h4", 30)  # the asset's two places are held
    await store.release((A, T), "h1")
    assert await store.acquire((A, T), "h2", 30)


async def test_a_holder_asking_again_keeps_its_one_place(make_store: MakeStore) -> None:
    store = await make_store()
    assert await store.acquire((T,), "h1", 30)
    assert await store.acquire((T,), "h1", 30)
    assert not await store.acquire((T,), "h2", 30)


async def test_a_lease_not_renewed_lapses_and_a_renewed_one_holds(make_store: MakeStore) -> None:
    store = await make_store()
    assert await store.acquire((T,), "dead-worker", 0.3)
    assert await store.acquire((A,), "live-worker", 1.0)
    await store.renew([Hold("live-worker", (A,))], 30)
    await asyncio.sleep(1.1)
    assert await store.acquire((T,), "next", 30)  # the dead worker's place freed itself
    assert await store.acquire((A,), "other", 30)
    assert not await store.acquire((A,), "third", 30)  # the renewed lease still holds one


async def test_a_cool_down_keeps_the_longer_of_two(make_store: MakeStore) -> None:
    store = await make_store()
    assert (await store.asset_flags("a")).cooldown_s == 0
    await store.cool_down("a", 20)
    await store.cool_down("a", 5)
    assert 19 < (await store.asset_flags("a")).cooldown_s <= 20
    await store.cool_down("a", 40)
    assert 39 < (await store.asset_flags("a")).cooldown_s <= 40
    assert (await store.asset_flags("b")).cooldown_s == 0


async def test_a_published_open_breaker_is_seen_until_cleared(make_store: MakeStore) -> None:
    one, other = await make_store(), await make_store()
    await one.publish_open("a", 30)
    assert 29 < (await other.asset_flags("a")).open_s <= 30
    await other.clear_open("a")
    assert (await one.asset_flags("a")).open_s == 0


async def test_reservations_count_against_every_limit(make_store: MakeStore) -> None:
    store = await make_store()
    budget = limits(day=1000, month=5000, task=600)
    assert await store.reserve("t", "task1", "r1", 400, budget, 30) is None
    # The task's ceiling: 400 reserved + 300 > 600.
    assert await store.reserve("t", "task1", "r2", 300, budget, 30) == Overshoot(
        "task", 600, 0, 400
    )
    # Another task of the tenant fits the day: 400 + 500 <= 1000.
    assert await store.reserve("t", "task2", "r3", 500, budget, 30) is None
    assert await store.reserve("t", "task3", "r4", 200, budget, 30) == Overshoot(
        "day", 1000, 0, 900
    )
    await store.settle("t", "task1", "r1", 350, budget)
    assert await store.spent("t", "task1", budget) == {
        "day": 350,
        "month": 350,
        "task": 350,
        "reserved": 500,
    }
    assert await store.reserve("t", "task3", "r4", 150, budget, 30) is None  # 350+500+150
    assert await store.reserve("t", "task3", "r5", 1, budget, 30) == Overshoot(
        "day", 1000, 350, 650
    )


async def test_the_month_limit_and_tenants_apart(make_store: MakeStore) -> None:
    store = await make_store()
    budget = limits(month=100)
    assert await store.reserve("t", "x", "r1", 100, budget, 30) is None
    assert await store.reserve("t", "y", "r2", 1, budget, 30) == Overshoot("month", 100, 0, 100)
    assert await store.reserve("u", "z", "r3", 100, budget, 30) is None  # another tenant


async def test_a_settled_cost_counts_even_when_its_reservation_lapsed(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    budget = limits(day=1000)
    assert await store.reserve("t", "x", "dead", 700, budget, 0.3) is None
    assert await store.reserve("t", "x", "live", 200, budget, 1.0) is None
    await store.renew([Hold("live", tenant="t")], 30)
    await asyncio.sleep(1.1)
    # The dead worker's 700 lapsed; the renewed 200 still holds.
    assert await store.reserve("t", "x", "new", 800, budget, 30) is None
    assert await store.reserve("t", "x", "more", 1, budget, 30) == Overshoot("day", 1000, 0, 1000)
    await store.settle("t", "x", "dead", 50, budget)  # its answer came after all
    assert (await store.spent("t", "x", budget))["day"] == 50


async def test_waiting_for_a_change_returns_by_the_timeout(make_store: MakeStore) -> None:
    store = await make_store()
    await asyncio.wait_for(store.wait_for_change(0.05), timeout=5)
