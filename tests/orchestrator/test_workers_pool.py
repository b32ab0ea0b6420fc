"""The worker pool's decisions with scripted workers: who is ready, who is full, who gets the
next slot, and when a set-aside worker comes back. (test_workers.py runs real workers.)"""

from __future__ import annotations

import asyncio

import pytest

from common.errors import Unavailable
from orchestrator.worker_client import Load, WorkerLost
from orchestrator.workers import PlatformView, Worker, WorkerPool, platform_view
from tests.orchestrator.fakes import FakeWorker, eventually, pool_of, room, still_pending


async def _take(pool: WorkerPool, avoid: Worker | None = None) -> str:
    async with pool.slot(avoid=avoid) as worker:
        return worker.address


def _worker(pool: WorkerPool, address: str) -> Worker:
    return pool.workers[address]


async def test_full_worker_stays_out_after_its_slot_is_left_until_a_probe_finds_room() -> None:
    fake = FakeWorker("127.0.0.1:7001", reply=room(1))
    pool = await pool_of(fake)
    async with pool.slot() as worker:
        pool.set_aside(worker, full=True)
    assert pool.refused_full == 1

    waiter = asyncio.create_task(_take(pool))
    assert await still_pending(waiter, 0.2)
    assert pool.stats().queued == 1

    fake.reply = room(1, in_flight=1)  # other replicas' jobs still hold its slot
    await pool.refresh()
    assert await still_pending(waiter, 0.1)

    fake.reply = room(1, in_flight=0)
    await pool.refresh()
    assert await asyncio.wait_for(waiter, 1) == fake.address
    assert pool.stats().queued == 0


async def test_probe_reporting_own_jobs_only_does_not_mark_full() -> None:
    fake = FakeWorker("127.0.0.1:7001", reply=room(1))
    pool = await pool_of(fake)
    async with pool.slot() as worker:
        fake.reply = room(1, in_flight=1)  # the one job it runs is ours
        await pool.refresh()
        assert not worker.full
    assert await asyncio.wait_for(_take(pool), 1) == fake.address


async def test_failing_probe_marks_not_ready_and_a_later_probe_restores() -> None:
    fake = FakeWorker("127.0.0.1:7001", reply=room(2))
    pool = await pool_of(fake)
    assert pool.stats().ready == 1

    fake.reply = WorkerLost(fake.address, "lost: UNAVAILABLE")
    await pool.refresh()
    assert pool.stats().ready == 0
    assert pool.stats().capacity == 0
    assert pool.stats().configured == 1

    fake.reply = room(2)
    await pool.refresh()
    assert pool.stats().ready == 1
    assert pool.stats().capacity == 2


async def test_worker_not_accepting_is_not_ready() -> None:
    fake = FakeWorker("127.0.0.1:7001", reply=room(2))
    pool = await pool_of(fake)
    fake.reply = Load(capacity=2, in_flight=0, accepting=False)
    await pool.refresh()
    assert pool.stats().ready == 0
    with pytest.raises(Unavailable):
        pool.any_ready()


async def test_any_ready_raises_when_none_is_ready() -> None:
    fake = FakeWorker("127.0.0.1:7001", reply=WorkerLost("127.0.0.1:7001", "down"))
    pool = await pool_of(fake)
    with pytest.raises(Unavailable, match="no section worker is reachable"):
        pool.any_ready()


async def test_any_ready_picks_the_least_busy_ready_worker() -> None:
    a = FakeWorker("127.0.0.1:7001", reply=room(4))
    b = FakeWorker("127.0.0.1:7002", reply=room(1))
    pool = await pool_of(a, b)
    async with pool.slot():  # goes to a, the one with most room
        assert pool.any_ready().address == b.address
    # A full worker still answers calls that need no slot.
    pool.set_aside(_worker(pool, b.address), full=True)
    assert pool.any_ready().address in {a.address, b.address}
    pool.set_aside(_worker(pool, a.address), full=False)
    assert pool.any_ready().address == b.address


async def test_pick_prefers_most_free_then_least_in_flight() -> None:
    small = FakeWorker("127.0.0.1:7001", reply=room(2))
    big = FakeWorker("127.0.0.1:7002", reply=room(3))
    pool = await pool_of(small, big)
    held = [pool.slot() for _ in range(5)]
    picked = [(await slot.__aenter__()).address for slot in held]
    try:
        # big (3 free) first; then both have 2 free and small runs less; then alternate.
        assert picked[:2] == [big.address, small.address]
        assert sorted(picked) == sorted([small.address] * 2 + [big.address] * 3)
        assert pool.stats().running == 5
        waiter = asyncio.create_task(_take(pool))
        assert await still_pending(waiter, 0.1)
        assert pool.stats().queued == 1
    finally:
        for slot in held:
            await slot.__aexit__(None, None, None)
    assert await asyncio.wait_for(waiter, 1) in {small.address, big.address}
    assert pool.stats().running == 0


async def test_slot_avoids_the_given_worker_when_another_is_free() -> None:
    big = FakeWorker("127.0.0.1:7001", reply=room(5))
    small = FakeWorker("127.0.0.1:7002", reply=room(1))
    pool = await pool_of(big, small)
    avoid = _worker(pool, big.address)
    assert await _take(pool, avoid=avoid) == small.address
    # When it is the only one free, the avoided worker is used all the same.
    async with pool.slot(avoid=avoid) as first:
        assert first.address == small.address
        assert await _take(pool, avoid=avoid) == big.address


async def test_removed_target_drops_the_idle_worker_and_keeps_a_busy_one_out() -> None:
    a = FakeWorker("127.0.0.1:7001", reply=room(1))
    b = FakeWorker("127.0.0.1:7002", reply=room(1))
    pool = await pool_of(a, b)
    async with pool.slot() as busy:
        pool.targets = [t for t in pool.targets if t != busy.address]
        await pool.refresh()
        assert busy.gone
        assert busy.address in pool.workers  # its job still runs
        assert pool.stats().configured == 1
    idle_target = pool.targets[0]
    pool.targets = []
    await pool.refresh()
    assert idle_target not in pool.workers
    idle = a if a.address == idle_target else b
    assert idle.closed


async def test_started_pool_probes_on_its_own_and_close_closes_clients() -> None:
    fake = FakeWorker("127.0.0.1:7001", reply=WorkerLost("127.0.0.1:7001", "down"))
    pool = WorkerPool([fake.address], refresh_s=0.01, connect=lambda _: fake)
    await pool.start()
    try:
        assert pool.stats().ready == 0
        fake.reply = room(2)
        await eventually(lambda: pool.stats().ready == 1)
    finally:
        await pool.close()
    assert fake.closed


# -- which worker a job goes to first -------------------------------------------------------

ADDRESSES = [f"127.0.0.1:70{n:02d}" for n in range(1, 6)]


async def _pool(capacity: int = 4) -> WorkerPool:
    return await pool_of(*(FakeWorker(address, reply=room(capacity)) for address in ADDRESSES))


async def test_a_jobs_home_is_the_same_for_every_replica_whatever_the_load() -> None:
    one = await _pool()
    other = await pool_of(
        *(FakeWorker(address, reply=room(1 + n)) for n, address in enumerate(reversed(ADDRESSES)))
    )
    homes = {key: one.home(key) for key in (f"task_{n}:s" for n in range(40))}
    assert all(
        worker is not None and other.home(key) is _worker(other, worker.address)
        for key, worker in homes.items()
    )
    # Load does not move a home; rendezvous hashing spreads jobs over every worker.
    async with one.slot(), one.slot():
        assert {key: one.home(key) for key in homes} == homes
    assert {worker.address for worker in homes.values() if worker} == set(ADDRESSES)


async def test_a_home_moves_only_for_the_jobs_of_a_worker_that_left() -> None:
    pool = await _pool()
    keys = [f"task_{n}:s" for n in range(40)]
    before = {key: pool.home(key) for key in keys}
    leaving = before[keys[0]]
    assert leaving is not None
    pool.targets = [t for t in pool.targets if t != leaving.address]
    await pool.refresh()
    after = {key: pool.home(key) for key in keys}
    assert all(after[k] is before[k] for k in keys if before[k] is not leaving)
    assert all(after[k] is not leaving for k in keys)


async def test_a_slot_goes_to_the_jobs_home_when_it_has_room() -> None:
    pool = await _pool()
    home = pool.home("task_1:s")
    assert home is not None
    async with pool.slot(key="task_1:s") as worker:
        assert worker is home
    home.in_flight = home.capacity  # full: the least loaded instead
    async with pool.slot(key="task_1:s") as worker:
        assert worker is not home
    home.in_flight = 0
    pool.set_aside(home, full=False)  # away: the same
    async with pool.slot(key="task_1:s") as worker:
        assert worker is not home


async def test_a_preferred_worker_comes_before_the_home_and_an_avoided_one_after_all() -> None:
    pool = await _pool()
    home = pool.home("task_1:s")
    assert home is not None
    preferred = next(w for w in pool.workers.values() if w is not home)
    async with pool.slot(key="task_1:s", prefer=preferred.address) as worker:
        assert worker is preferred
    preferred.in_flight = preferred.capacity  # full: the home is next
    async with pool.slot(key="task_1:s", prefer=preferred.address) as worker:
        assert worker is home
    preferred.in_flight = 0
    async with pool.slot(avoid=preferred, key="task_1:s", prefer=preferred.address) as worker:
        assert worker is home
    async with pool.slot(key="task_1:s", prefer="10.9.9.9:1") as worker:  # not in the pool
        assert worker is home


def test_the_platform_view_sums_todays_spend_and_shows_the_most_open_breaker() -> None:
    loads = [
        Load(4, 3, True, "2026-03-02", {"acme": 0.5, "beta": 0.1}, {"a": "closed", "b": "open"}),
        Load(4, 1, True, "2026-03-02", {"acme": 0.25}, {"a": "half_open", "b": "closed"}),
        # Still on yesterday (no job since midnight): nothing of today.
        Load(4, 0, True, "2026-03-01", {"acme": 9.0}, {"c": "closed"}),
    ]
    view = platform_view(loads)
    assert view.in_flight == 4
    assert view.spend_day == "2026-03-02"
    assert view.spend_today == {"acme": 0.75, "beta": 0.1}
    assert view.breakers == {"a": "half_open", "b": "open", "c": "closed"}
    assert platform_view([]) == PlatformView()


async def test_the_pools_platform_view_counts_the_ready_workers_only() -> None:
    up = FakeWorker("127.0.0.1:7001", reply=Load(2, 1, True, "2026-03-02", {"acme": 0.5}))
    down = FakeWorker("127.0.0.1:7002", reply=Load(2, 2, True, "2026-03-02", {"acme": 1.0}))
    pool = await pool_of(up, down)
    assert pool.platform().spend_today == {"acme": 1.5}

    down.reply = WorkerLost(down.address, "gone")
    await pool.refresh()
    assert pool.platform().spend_today == {"acme": 0.5}
    assert pool.platform().in_flight == 1
