"""The orchestrator's worker pool against real section workers on loopback: capacity is read
from the workers, a full pool makes jobs wait, a worker that goes away gets no new jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from orchestrator.workers import WorkerPool
from section_worker.jobs import JobRunner
from section_worker.platform_client import PlatformClient
from section_worker.servicer import build_host
from section_worker.settings import WorkerSettings

StartWorker = Callable[[int], Awaitable[tuple[str, Callable[[], Awaitable[None]]]]]


@pytest.fixture
async def start_worker() -> AsyncIterator[StartWorker]:
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(capacity: int) -> tuple[str, Callable[[], Awaitable[None]]]:
        settings = WorkerSettings(
            port=0, max_concurrent_jobs=capacity, shutdown_grace_s=0.5, tls_mode="plaintext"
        )
        client = PlatformClient(settings)
        host = build_host(settings, JobRunner(client, settings), client)
        port = await host.start()
        stopped = False

        async def stop() -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                await host.stop()
                await client.aclose()

        stops.append(stop)
        return f"127.0.0.1:{port}", stop

    yield start
    for stop in stops:
        await stop()


async def test_slots_follow_reported_capacity_and_full_pool_waits(start_worker):
    first, _ = await start_worker(1)
    second, _ = await start_worker(2)
    pool = WorkerPool([first, second], refresh_s=60)
    await pool.refresh()
    assert pool.stats().capacity == 3 and pool.stats().ready == 2
    held = [pool.slot() for _ in range(3)]
    workers = [await slot.__aenter__() for slot in held]
    assert sorted(w.address for w in workers) == sorted([first, second, second])

    waiter = asyncio.create_task(_take(pool))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    assert pool.stats().queued == 1
    await held[0].__aexit__(None, None, None)
    address = await asyncio.wait_for(waiter, 2)
    assert address == workers[0].address
    for slot in held[1:]:
        await slot.__aexit__(None, None, None)
    assert pool.stats().running == 0
    await pool.close()


async def _take(pool: WorkerPool) -> str:
    async with pool.slot() as worker:
        return worker.address


async def test_a_stopped_worker_gets_no_new_jobs_and_a_name_counts_once(start_worker):
    first, stop_first = await start_worker(4)
    second, _ = await start_worker(4)
    port = second.rsplit(":", 1)[1]
    pool = WorkerPool([first, f"localhost:{port}"], refresh_s=60)
    await pool.refresh()
    assert pool.stats().ready == 2
    await stop_first()
    await pool.refresh()
    assert pool.stats().ready == 1
    for _ in range(3):
        assert await _take(pool) == second
    assert pool.any_ready().address == second
    await pool.close()


async def test_unresolvable_target_is_skipped_not_fatal(start_worker):
    good, _ = await start_worker(1)
    pool = WorkerPool([good, "no-such-host.invalid:50061"], refresh_s=60)
    await pool.refresh()
    assert pool.stats().configured == 1
    await pool.close()
