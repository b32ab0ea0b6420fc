"""Both stores hold the same rules (each test runs on memory and on a real redis-server):
slots all-or-none with leases that lapse unless renewed, rates counted in the same step as the
slots and forgotten after their window, cool-downs keeping the longer,
published breaker states, and reservations refused past a limit with what is spent and
reserved."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from section_worker.protection.redis_store import RedisStore
from section_worker.protection.store import (
    RATE_WINDOW_S,
    BudgetLimits,
    Hold,
    MemoryStore,
    Overshoot,
    Rate,
    Slot,
    Store,
)
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


TENANT_RATE = Rate("wealthai:rate:tenant:t", 3)
ASSET_RATE = Rate("wealthai:rate:asset:a", 2)
ROOMY = Slot("wealthai:slots:asset:roomy", 100)


async def _takes(
    store: Store, holder: str, *rates: Rate, slots: tuple[Slot, ...] = (ROOMY,)
) -> bool:
    taken = await store.acquire(slots, holder, 30, rates)
    if taken:
        await store.release(slots, holder)  # the request stays counted in its rates
    return taken


async def test_a_rate_counts_requests_of_every_holder(make_store: MakeStore) -> None:
    one, two = await make_store(), await make_store()
    assert await _takes(one, "h1", TENANT_RATE, ASSET_RATE)
    assert await _takes(two, "h2", TENANT_RATE, ASSET_RATE)
    # The asset's two requests a minute are spent: the tenant's third is not taken either.
    assert not await _takes(one, "h3", TENANT_RATE, ASSET_RATE)
    assert await _takes(two, "h4", TENANT_RATE)
    assert not await _takes(one, "h5", TENANT_RATE)


async def test_a_full_slot_counts_no_request(make_store: MakeStore) -> None:
    store = await make_store()
    assert await store.acquire((T,), "h1", 30)
    for holder in ("h2", "h3", "h4"):
        assert not await store.acquire((T,), holder, 30, (ASSET_RATE,))
    await store.release((T,), "h1")
    assert await _takes(store, "h5", ASSET_RATE, slots=(T,))
    assert await _takes(store, "h6", ASSET_RATE, slots=(T,))  # both requests still there


async def test_requests_older_than_the_window_are_forgotten_in_memory() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    assert await _takes(store, "h1", ASSET_RATE)
    now[0] += RATE_WINDOW_S / 2
    assert await _takes(store, "h2", ASSET_RATE)
    assert not await _takes(store, "h3", ASSET_RATE)
    now[0] += RATE_WINDOW_S / 2  # the first request is a window old
    assert await _takes(store, "h4", ASSET_RATE)
    assert not await _takes(store, "h5", ASSET_RATE)


async def test_requests_older_than_the_window_are_forgotten_on_redis(redis_url: str) -> None:
    store = RedisStore(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        window_ms = int(RATE_WINDOW_S * 1000)
        # Two requests counted: one a window and a second ago, one a second ago.
        await client.zadd(ASSET_RATE.key, {"old": now_ms - window_ms - 1000, "new": now_ms - 1000})
        assert await _takes(store, "h1", ASSET_RATE)  # the old one no longer counts
        assert not await _takes(store, "h2", ASSET_RATE)
        assert await client.zrange(ASSET_RATE.key, 0, -1) == [b"new", b"h1"]
        assert 0 < await client.pttl(ASSET_RATE.key) <= window_ms
    finally:
        await client.aclose()
        await store.close()


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
