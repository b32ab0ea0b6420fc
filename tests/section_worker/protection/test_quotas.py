"""Rates and concurrency per asset and tenant, shared by two workers' quotas on one store
(memory, and a real redis-server as replicas share it), and the queue-depth metric of jobs
waiting in line."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from common.platform_config import AssetConfig, TenantConfig
from section_worker.protection.holds import Holds
from section_worker.protection.quotas import Quotas
from tests.helpers import assert_eventually
from tests.section_worker.protection.conftest import MakeStore

ROOMY = TenantConfig(rpm=1000, concurrency=1000)
ASSET = AssetConfig(rpm=1000, concurrency=2)


async def two_workers(make_store: MakeStore) -> tuple[Quotas, Quotas]:
    first, second = await make_store(), await make_store()
    return Quotas(first, Holds(first, 30)), Quotas(second, Holds(second, 30))


async def test_an_assets_concurrency_holds_across_workers(make_store: MakeStore) -> None:
    one, two = await two_workers(make_store)
    held = [
        await one.try_acquire("t", ROOMY, "a", ASSET),
        await two.try_acquire("u", ROOMY, "a", ASSET),
    ]
    assert all(held)
    assert await one.try_acquire("v", ROOMY, "a", ASSET) is None
    assert await two.try_acquire("v", ROOMY, "b", ASSET) is not None  # another asset
    permit = held[0]
    assert permit is not None
    await one.release(permit)
    assert await two.try_acquire("v", ROOMY, "a", ASSET) is not None


async def test_a_tenants_concurrency_spans_its_assets(make_store: MakeStore) -> None:
    one, two = await two_workers(make_store)
    tenant = TenantConfig(rpm=1000, concurrency=1)
    assert await one.try_acquire("t", tenant, "a", ASSET) is not None
    assert await two.try_acquire("t", tenant, "b", ASSET) is None
    assert await two.try_acquire("u", tenant, "b", ASSET) is not None  # another tenant


async def test_requests_per_minute_hold_across_workers(make_store: MakeStore) -> None:
    one, two = await two_workers(make_store)
    asset = AssetConfig(rpm=3, concurrency=100)
    for quotas in (one, two, one):
        permit = await quotas.try_acquire("t", ROOMY, "a", asset)
        assert permit is not None
        await quotas.release(permit)
    assert await two.try_acquire("t", ROOMY, "a", asset) is None
    tenant = TenantConfig(rpm=2, concurrency=100)
    for quotas in (one, two):
        permit = await quotas.try_acquire("w", tenant, "b", ASSET)
        assert permit is not None
        await quotas.release(permit)
    assert await one.try_acquire("w", tenant, "c", ASSET) is None


async def test_a_waiting_job_gets_the_place_freed_and_is_counted_while_it_waits(
    make_store: MakeStore,
) -> None:
    one, two = await two_workers(make_store)
    asset = AssetConfig(rpm=1000, concurrency=1)
    first = await one.try_acquire("t", ROOMY, "q", asset)
    assert first is not None
    waiting = asyncio.create_task(two.acquire("t", ROOMY, "q", asset, time.monotonic() + 10))

    def depth(scope: str, name: str) -> float | None:
        return REGISTRY.get_sample_value(
            "wealthai_limit_queue_depth", {"scope": scope, "name": name}
        )

    async def queued() -> float | None:
        return depth("asset", "q")

    await assert_eventually(queued, lambda d: d == 1, what="a job in line")
    assert depth("tenant", "t") == 1
    await one.release(first)
    second = await asyncio.wait_for(waiting, 10)
    assert second is not None
    assert depth("asset", "q") == 0


async def test_waiting_ends_at_the_bound(make_store: MakeStore) -> None:
    one, two = await two_workers(make_store)
    asset = AssetConfig(rpm=1000, concurrency=1)
    assert await one.try_acquire("t", ROOMY, "z", asset) is not None
    started = time.monotonic()
    assert await two.acquire("t", ROOMY, "z", asset, started + 0.3) is None
    assert time.monotonic() - started >= 0.3


async def test_leases_of_long_calls_are_renewed(make_store: MakeStore) -> None:
    store = await make_store()
    holds = Holds(store, 1.0)  # renewed every third of a second
    quotas = Quotas(store, holds)
    asset = AssetConfig(rpm=1000, concurrency=1)
    permit = await quotas.try_acquire("t", ROOMY, "long", asset)
    assert permit is not None
    await asyncio.sleep(1.5)  # past the lease, yet renewed meanwhile
    assert await quotas.try_acquire("u", ROOMY, "long", asset) is None
    await quotas.release(permit)
    assert len(holds) == 0
    await holds.close()
