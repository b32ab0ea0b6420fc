"""One worker's protection, put together: the configuration, the store (memory or Redis) and
the quotas, budgets and breakers that share it. Built once at start-up
(:func:`open_protection`) and shared by every job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.platform_config import PlatformConfig
from section_worker.protection.breaker import BreakerBook
from section_worker.protection.budgets import Budgets
from section_worker.protection.holds import Holds
from section_worker.protection.quotas import Quotas
from section_worker.protection.store import MemoryStore, Store

logger = logging.getLogger(__name__)


@dataclass
class Protection:
    """What every job's chain consults before and after each platform attempt."""

    config: PlatformConfig
    store: Store
    holds: Holds
    quotas: Quotas
    budgets: Budgets
    breakers: BreakerBook

    @classmethod
    def on(cls, store: Store, config: PlatformConfig, *, lease_ttl_s: float) -> Protection:
        holds = Holds(store, lease_ttl_s)
        return cls(
            config=config,
            store=store,
            holds=holds,
            quotas=Quotas(store, holds),
            budgets=Budgets(store, holds),
            breakers=BreakerBook(store, lambda asset: config.asset(asset).breaker),
        )

    async def close(self) -> None:
        await self.holds.close()
        await self.store.close()


async def open_protection(
    config: PlatformConfig,
    *,
    limits_url: str,
    password: str | None = None,
    lease_ttl_s: float = 30.0,
) -> Protection:
    """The protection on ``limits_url`` (``memory://`` or ``redis://…``); a Redis that cannot
    be reached fails here, at start-up (the message names the host, never the password)."""
    store: Store
    if limits_url == "memory://":
        store = MemoryStore()
    else:
        from section_worker.protection.redis_store import RedisStore

        redis_store = RedisStore(limits_url, password=password)
        parts = urlsplit(limits_url)
        try:
            await redis_store.ping()
        except Exception as exc:
            await redis_store.close()
            raise ConnectionError(
                f"cannot reach the limits store at {parts.hostname}:{parts.port or 6379} "
                f"({type(exc).__name__})"
            ) from None
        store = redis_store
        logger.info("limits, budgets and breakers shared through Redis at %s", parts.hostname)
    return Protection.on(store, config, lease_ttl_s=lease_ttl_s)
