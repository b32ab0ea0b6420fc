"""Start-up of the protection: memory by default, Redis when reachable, and a clear error
naming the host (never the password) when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.platform_config import load_config
from section_worker.protection.guard import open_protection
from section_worker.protection.redis_store import RedisStore
from section_worker.protection.store import MemoryStore
from tests.helpers import free_port

CONFIG = load_config(Path(__file__).resolve().parents[3] / "config.json")


async def test_memory_is_the_default() -> None:
    protection = await open_protection(CONFIG, limits_url="memory://")
    assert isinstance(protection.store, MemoryStore)
    await protection.close()


async def test_redis_when_it_answers(redis_url: str) -> None:
    protection = await open_protection(CONFIG, limits_url=redis_url, lease_ttl_s=9)
    assert isinstance(protection.store, RedisStore)
    assert protection.holds.ttl_s == 9
    await protection.close()


async def test_an_unreachable_redis_is_named_without_its_password() -> None:
    port = free_port()
    with pytest.raises(ConnectionError) as failed:
        await open_protection(CONFIG, limits_url=f"redis://127.0.0.1:{port}/0", password="hunter2")
    assert f"127.0.0.1:{port}" in str(failed.value)
    assert "hunter2" not in str(failed.value)
