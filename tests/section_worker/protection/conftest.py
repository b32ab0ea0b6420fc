"""Fixtures for the protection's tests: a real redis-server for the session, and a store
factory that yields the memory store or a Redis store on a clean database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from scripts.redis import RedisServer
from section_worker.protection.redis_store import RedisStore
from section_worker.protection.store import MemoryStore, Store


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The session's Redis, emptied before each test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    await client.aclose()
    yield redis_server.url


MakeStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["memory", "redis"])
async def make_store(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[MakeStore]:
    """Factory of stores of one kind (each test runs once per kind); for Redis, several
    stores made in one test share the server, as replicas do."""
    made: list[Store] = []
    shared_memory = MemoryStore()
    if request.param == "redis":
        client = aioredis.Redis.from_url(redis_server.url)
        await client.flushdb()
        await client.aclose()

    async def make() -> Store:
        if request.param == "memory":
            return shared_memory
        store = RedisStore(redis_server.url)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
