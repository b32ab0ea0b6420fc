"""The protection's shared state in Redis (``WORKER_LIMITS_URL=redis://host:port/db``): every
worker replica sees the same leases, cool-downs, breaker states, reservations and rates.

Each decision is one round trip, atomic on the server (Lua scripts; Redis runs one at a time),
timed by the server's own clock (``TIME``) so replicas' clocks never disagree on a lease:

- slots: one sorted set per pool, holder → expiry (ms); rates: one sorted set per rate, holder
  → the time (ms) of the request it counted. :data:`_ACQUIRE` prunes the lapsed holders of
  every pool and the requests older than the window of every rate, then takes a place in every
  pool and counts a request in every rate, or does nothing; release is a ``ZREM`` per pool (one
  pipeline); renewal a ``ZADD XX`` per lease (one pipeline per round);
- cool-down and open breaker: a key with a time to live (``PTTL`` reads what is left; both
  flags of an asset in one pipeline); a cool-down keeps the longer of two (:data:`_COOL`);
- budgets: spent per tenant and day, tenant and month, and task (integer micro-dollars,
  ``INCRBY``), the tenant's reservations as a hash (holder → amount and task) with a sorted
  set of their expiries, and running totals reserved per tenant and per task. :data:`_RESERVE`
  prunes lapsed reservations, checks spent + reserved + amount against each limit and reserves,
  all in one step; :data:`_SETTLE` ends a reservation and adds the real cost;
- answer latencies: one list per asset of whole milliseconds (Redis keeps small integers in
  a list in a few bytes each); one pipeline per exchange appends a worker's new ones
  (``RPUSH``), trims the list to the window (``LTRIM``), renews its week-long life
  (``EXPIRE``) and reads every asset's window back (``LRANGE``).

The scripts touch keys derived from their arguments (a task's totals), so they need one Redis
node, not a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis

from section_worker.protection.store import (
    LATENCY_TTL_S,
    PREFIX,
    RATE_WINDOW_S,
    AssetFlags,
    BudgetLimits,
    Hold,
    Overshoot,
    Period,
    Rate,
    Slot,
    breaker_key,
    cooldown_key,
    latency_key,
)

logger = logging.getLogger(__name__)

_DAY_TTL_S = 3 * 86400
_MONTH_TTL_S = 40 * 86400
_TASK_TTL_S = 7 * 86400
# Waiters poll (no pub/sub) at a random interval in this span, so they do not ask in step.
_POLL_MIN_S = 0.1
_POLL_MAX_S = 0.5

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: the pools, then the rates. ARGV: holder, ttl_ms, number of pools, then one limit per
# pool and per rate.
_ACQUIRE = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
local pools = tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 3])
  if i <= pools then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if not redis.call('ZSCORE', key, ARGV[1]) and redis.call('ZCARD', key) >= limit then
      return 0
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - """
    + str(int(RATE_WINDOW_S * 1000))
    + """)
    if redis.call('ZCARD', key) >= limit then
      return 0
    end
  end
end
for i, key in ipairs(KEYS) do
  if i <= pools then
    redis.call('ZADD', key, now + ttl, ARGV[1])
    redis.call('PEXPIRE', key, ttl * 2)
  else
    redis.call('ZADD', key, now, ARGV[1])
    redis.call('PEXPIRE', key, """
    + str(int(RATE_WINDOW_S * 1000))
    + """)
  end
end
return 1
"""
)

# KEYS[1]: the flag. ARGV[1]: ms. Keeps the longer of the one set and the one asked for.
_COOL = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

# KEYS: 1 reservations hash, 2 their expiries, 3 tenant reserved total, 4 day spent,
# 5 month spent, 6 task spent, 7 task reserved total.
# ARGV: holder, amount, ttl_ms, task_id, day limit, month limit, task limit ('' for none).
_RESERVE = (
    _NOW
    + """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, holder in ipairs(lapsed) do
  local entry = redis.call('HGET', KEYS[1], holder)
  if entry then
    local sep = string.find(entry, '|', 1, true)
    local amount = tonumber(string.sub(entry, 1, sep - 1))
    local task = string.sub(entry, sep + 1)
    redis.call('DECRBY', KEYS[3], amount)
    redis.call('DECRBY', '"""
    + PREFIX
    + """budget:task:' .. task .. ':reserved', amount)
    redis.call('HDEL', KEYS[1], holder)
  end
  redis.call('ZREM', KEYS[2], holder)
end
local amount = tonumber(ARGV[2])
local reserved = tonumber(redis.call('GET', KEYS[3]) or '0')
local task_reserved = tonumber(redis.call('GET', KEYS[7]) or '0')
local checks = {
  {'day', ARGV[5], KEYS[4], reserved},
  {'month', ARGV[6], KEYS[5], reserved},
  {'task', ARGV[7], KEYS[6], task_reserved},
}
for _, check in ipairs(checks) do
  if check[2] ~= '' then
    local spent = tonumber(redis.call('GET', check[3]) or '0')
    if spent + check[4] + amount > tonumber(check[2]) then
      return {check[1], tonumber(check[2]), spent, check[4]}
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[4])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('INCRBY', KEYS[3], amount)
redis.call('INCRBY', KEYS[7], amount)
redis.call('PEXPIRE', KEYS[7], """
    + str(_TASK_TTL_S * 1000)
    + """)
return 0
"""
)

# KEYS: 1 reservations hash, 2 their expiries, 3 tenant reserved total, 4 day spent,
# 5 month spent, 6 task spent, 7 task reserved total. ARGV: holder, cost.
_SETTLE = (
    """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry then
  local sep = string.find(entry, '|', 1, true)
  local amount = tonumber(string.sub(entry, 1, sep - 1))
  redis.call('DECRBY', KEYS[3], amount)
  redis.call('DECRBY', KEYS[7], amount)
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('INCRBY', KEYS[4], cost)
  redis.call('EXPIRE', KEYS[4], """
    + str(_DAY_TTL_S)
    + """)
  redis.call('INCRBY', KEYS[5], cost)
  redis.call('EXPIRE', KEYS[5], """
    + str(_MONTH_TTL_S)
    + """)
  redis.call('INCRBY', KEYS[6], cost)
  redis.call('EXPIRE', KEYS[6], """
    + str(_TASK_TTL_S)
    + """)
end
return 1
"""
)


def _budget_keys(tenant: str, task_id: str, limits: BudgetLimits) -> list[str]:
    base = f"{PREFIX}budget:{tenant}"
    task = f"{PREFIX}budget:task:{task_id}"
    return [
        f"{base}:reservations",
        f"{base}:expiries",
        f"{base}:reserved",
        f"{base}:spent:day:{limits.day_key}",
        f"{base}:spent:month:{limits.month_key}",
        f"{task}:spent",
        f"{task}:reserved",
    ]


def _seconds(window: list[str]) -> list[float]:
    """A latency window as seconds (entries that are not whole milliseconds are skipped)."""
    out = []
    for entry in window:
        with contextlib.suppress(ValueError):
            out.append(int(entry) / 1000)
    return out


def _limit(value: int | None) -> str:
    return "" if value is None else str(value)


class RedisStore:
    """:class:`~section_worker.protection.store.Store` on one Redis server."""

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, password=password, decode_responses=True
        )
        self._acquire = self._client.register_script(_ACQUIRE)
        self._cool = self._client.register_script(_COOL)
        self._reserve = self._client.register_script(_RESERVE)
        self._settle = self._client.register_script(_SETTLE)

    async def ping(self) -> None:
        """Raises when the server cannot be reached or refuses the password."""
        await cast(Awaitable[bool], self._client.ping())

    async def acquire(
        self, slots: tuple[Slot, ...], holder: str, ttl_s: float, rates: tuple[Rate, ...] = ()
    ) -> bool:
        keys = [s.key for s in slots] + [r.key for r in rates]
        limits = [s.limit for s in slots] + [r.per_minute for r in rates]
        args: list[Any] = [holder, int(ttl_s * 1000), len(slots), *limits]
        return bool(await self._acquire(keys=keys, args=args))

    async def release(self, slots: tuple[Slot, ...], holder: str) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for slot in slots:
                pipe.zrem(slot.key, holder)
            await pipe.execute()

    async def renew(self, holds: list[Hold], ttl_s: float) -> None:
        if not holds:
            return
        ms = int(ttl_s * 1000)
        # Renewed to the server's time plus the lease: read it once for the whole round.
        seconds, micros = await self._client.time()
        expires = seconds * 1000 + micros // 1000 + ms
        async with self._client.pipeline(transaction=False) as pipe:
            for hold in holds:
                for slot in hold.slots:
                    pipe.zadd(slot.key, {hold.holder: expires}, xx=True)
                if hold.tenant:
                    expiries = f"{PREFIX}budget:{hold.tenant}:expiries"
                    pipe.zadd(expiries, {hold.holder: expires}, xx=True)
            await pipe.execute()

    async def asset_flags(self, asset: str) -> AssetFlags:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.pttl(cooldown_key(asset))
            pipe.pttl(breaker_key(asset))
            cooldown_ms, open_ms = await pipe.execute()
        return AssetFlags(max(0, cooldown_ms) / 1000, max(0, open_ms) / 1000)

    async def cool_down(self, asset: str, seconds: float) -> None:
        ms = int(seconds * 1000)
        if ms > 0:
            await self._cool(keys=[cooldown_key(asset)], args=[ms])

    async def publish_open(self, asset: str, seconds: float) -> None:
        await self._client.set(breaker_key(asset), "1", px=max(1, int(seconds * 1000)))

    async def clear_open(self, asset: str) -> None:
        await self._client.delete(breaker_key(asset))

    async def reserve(
        self,
        tenant: str,
        task_id: str,
        holder: str,
        amount: int,
        limits: BudgetLimits,
        ttl_s: float,
    ) -> Overshoot | None:
        answer = await self._reserve(
            keys=_budget_keys(tenant, task_id, limits),
            args=[
                holder,
                amount,
                int(ttl_s * 1000),
                task_id,
                _limit(limits.day),
                _limit(limits.month),
                _limit(limits.task),
            ],
        )
        if answer == 0:
            return None
        period, limit, spent, reserved = answer
        return Overshoot(cast(Period, period), int(limit), int(spent), int(reserved))

    async def settle(
        self, tenant: str, task_id: str, holder: str, cost: int, limits: BudgetLimits
    ) -> None:
        await self._settle(keys=_budget_keys(tenant, task_id, limits), args=[holder, cost])

    async def spent(self, tenant: str, task_id: str, limits: BudgetLimits) -> dict[str, int]:
        keys = _budget_keys(tenant, task_id, limits)
        reserved, day, month, task = await self._client.mget([keys[2], keys[3], keys[4], keys[5]])
        return {
            "day": int(day or 0),
            "month": int(month or 0),
            "task": int(task or 0),
            "reserved": int(reserved or 0),
        }

    async def wait_for_change(self, timeout_s: float) -> None:
        # No notification across replicas: a short sleep, then the caller asks again.
        pause = random.uniform(_POLL_MIN_S, _POLL_MAX_S)
        await asyncio.sleep(max(0.0, min(timeout_s, pause)))

    async def share_latencies(
        self, new: Mapping[str, Sequence[float]], assets: Collection[str], keep: int
    ) -> dict[str, list[float]]:
        asked = sorted({*assets, *new})
        async with self._client.pipeline(transaction=False) as pipe:
            for asset, values in new.items():
                if values:
                    key = latency_key(asset)
                    pipe.rpush(key, *(max(0, round(v * 1000)) for v in values))
                    pipe.ltrim(key, -keep, -1)
                    pipe.expire(key, LATENCY_TTL_S)
            for asset in asked:
                pipe.lrange(latency_key(asset), -keep, -1)
            replies = await pipe.execute()
        windows = replies[len(replies) - len(asked) :]
        return {asset: _seconds(window) for asset, window in zip(asked, windows, strict=True)}

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()
