"""Rates and concurrency per asset and per tenant: what an attempt must get before it calls
the platform.

An attempt takes a concurrent-call place of its tenant and of its asset and one request of
each's requests-per-minute (a moving window) in one step, all or nothing
(:meth:`Store.acquire`: one round trip to Redis, where the places and the rates were four).
It holds the places until its call ends; the rate counts prompts sent, not polls. When a place
or a rate is full it waits in line — counted in the queue-depth metric of the asset and the
tenant — until a place frees or ``wait_until``; then it gives up (:meth:`Quotas.acquire`
answers None) and the chain moves on.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from common.platform_config import AssetConfig, TenantConfig
from section_worker.protection import metrics
from section_worker.protection.holds import Holds
from section_worker.protection.store import Hold, Rate, Slot, Store, rate_key, slot_key

# A waiter asks again at least this often (a rate's window may reopen with no notification).
_RECHECK_S = 0.5


@dataclass(frozen=True)
class Permit:
    """Places held for one call; give them back with :meth:`Quotas.release`."""

    holder: str
    slots: tuple[Slot, ...]
    hold: int  # number in Holds


class Quotas:
    """Hands out places under the rate and concurrency limits of assets and tenants."""

    def __init__(self, store: Store, holds: Holds) -> None:
        self._store = store
        self._holds = holds

    async def try_acquire(
        self, tenant: str, tenant_cfg: TenantConfig, asset: str, asset_cfg: AssetConfig
    ) -> Permit | None:
        """Places for one call now, or None when a limit is reached."""
        holder = uuid.uuid4().hex
        slots = (
            Slot(slot_key("tenant", tenant), tenant_cfg.concurrency),
            Slot(slot_key("asset", asset), asset_cfg.concurrency),
        )
        rates = (
            Rate(rate_key("tenant", tenant), tenant_cfg.rpm),
            Rate(rate_key("asset", asset), asset_cfg.rpm),
        )
        started = time.perf_counter()
        try:
            if not await self._store.acquire(slots, holder, self._holds.ttl_s, rates):
                return None
            return Permit(holder, slots, self._holds.add(Hold(holder, slots)))
        finally:
            metrics.LIMITER_SECONDS.labels(step="acquire").observe(time.perf_counter() - started)

    async def acquire(
        self,
        tenant: str,
        tenant_cfg: TenantConfig,
        asset: str,
        asset_cfg: AssetConfig,
        wait_until: float,
    ) -> Permit | None:
        """Places for one call, waiting in line until ``wait_until`` (monotonic) at most."""
        permit = await self.try_acquire(tenant, tenant_cfg, asset, asset_cfg)
        if permit is not None:
            return permit
        with _queued(tenant, asset):
            while (left := wait_until - time.monotonic()) > 0:
                await self._store.wait_for_change(min(left, _RECHECK_S))
                permit = await self.try_acquire(tenant, tenant_cfg, asset, asset_cfg)
                if permit is not None:
                    return permit
        return None

    async def release(self, permit: Permit) -> None:
        self._holds.remove(permit.hold)
        started = time.perf_counter()
        await self._store.release(permit.slots, permit.holder)
        metrics.LIMITER_SECONDS.labels(step="release").observe(time.perf_counter() - started)


@contextlib.contextmanager
def _queued(tenant: str, asset: str) -> Iterator[None]:
    gauges = (
        metrics.QUEUE_DEPTH.labels(scope="tenant", name=tenant),
        metrics.QUEUE_DEPTH.labels(scope="asset", name=asset),
    )
    for gauge in gauges:
        gauge.inc()
    try:
        yield
    finally:
        for gauge in gauges:
            gauge.dec()
