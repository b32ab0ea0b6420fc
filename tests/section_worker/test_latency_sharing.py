"""Answer latencies shared between workers through the store (each test on the memory store
and on a real redis-server, several stores on one server standing for several workers): a
worker that starts knows what a peer learned, the window is capped across workers, what a
failed exchange was sending goes with the next one, a failing store is logged once and never
fails a job, and the loop runs only while there is something to do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import cast

import pytest
import redis.asyncio as aioredis

from scripts.redis import RedisServer
from section_worker.jobs import JobRunner, SectionJob, SectionResult
from section_worker.latency_sharing import LatencySharing
from section_worker.polling import Basis, LatencyBook
from section_worker.protection.guard import Protection
from section_worker.protection.redis_store import RedisStore
from section_worker.protection.store import LATENCY_TTL_S, MemoryStore, Store, latency_key
from section_worker.settings import WorkerSettings
from tests.helpers import assert_eventually
from tests.section_worker.conftest import ASSET, MakeClient, Sim, worker_settings
from tests.section_worker.protection.conftest import MakeStore
from tests.section_worker.protection.conftest import make_store as make_store
from tests.section_worker.protection.conftest import redis_server as redis_server
from tests.section_worker.protection.conftest import redis_url as redis_url

A, B = "asset-a", "asset-b"
SETTINGS = WorkerSettings(poll_window=30, poll_min_samples=10, poll_share_s=0.1)


def worker(store: Store, settings: WorkerSettings = SETTINGS) -> tuple[LatencyBook, LatencySharing]:
    book = LatencyBook(settings)
    return book, LatencySharing(book, store, [A, B], settings)


async def test_a_worker_that_starts_knows_what_its_peers_learned(make_store: MakeStore) -> None:
    first, first_sharing = worker(await make_store())
    for latency in range(1, 13):
        first.observe(A, latency - 0.5, float(latency))
    assert await first_sharing.exchange()
    late, late_sharing = worker(await make_store())
    assert late.plan(A).basis == Basis.FRESH
    assert await late_sharing.exchange()
    assert sorted(late.samples(A)) == sorted(first.samples(A))
    assert len(late.samples(A)) == 12
    assert late.plan(A).basis == Basis.LEARNED
    assert late.samples(B) == []


async def test_the_shared_window_keeps_the_last_answers_of_every_worker(
    make_store: MakeStore,
) -> None:
    one, one_sharing = worker(await make_store())
    two, two_sharing = worker(await make_store())
    for i in range(20):
        one.observe(A, 1.0 + i / 100, 1.0 + i / 100)
        two.observe(A, 5.0 + i / 100, 5.0 + i / 100)
    assert await one_sharing.exchange()
    assert await two_sharing.exchange()
    assert await one_sharing.exchange()  # reads back what two added
    for book in (one, two):
        window = book.samples(A)
        assert len(window) == SETTINGS.poll_window
        assert window[-20:] == pytest.approx([5.0 + i / 100 for i in range(20)], abs=1e-3)
        assert window[:10] == pytest.approx([1.1 + i / 100 for i in range(10)], abs=1e-3)


class FlakyStore(MemoryStore):
    """A memory store whose latency exchange fails while ``down`` (a store going away)."""

    down = True
    calls = 0

    async def share_latencies(
        self, new: Mapping[str, Sequence[float]], assets: Collection[str], keep: int
    ) -> dict[str, list[float]]:
        self.calls += 1
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        return await super().share_latencies(new, assets, keep)


async def test_a_failing_store_is_logged_once_and_nothing_measured_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    book, sharing = worker(store)
    book.observe(A, 1.0, 2.0)
    with caplog.at_level(logging.INFO, logger="section_worker.latency_sharing"):
        assert not await sharing.exchange()
        book.observe(A, 3.0, 4.0)
        assert not await sharing.exchange()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "polling on this worker's own" in warnings[0].getMessage()
        assert len(book.samples(A)) == 2  # still polling on what it measured
        store.down = False
        assert await sharing.exchange()
        assert any("again" in r.getMessage() for r in caplog.records)
    peer, peer_sharing = worker(store)
    assert await peer_sharing.exchange()
    assert len(peer.samples(A)) == 2  # both went with the exchange that worked


async def test_a_store_that_cannot_be_reached_fails_the_exchange_not_the_worker() -> None:
    with RedisServer() as server:
        url = server.url
    store = RedisStore(url)  # the server is gone
    try:
        book, sharing = worker(store)
        book.observe(A, 1.0, 2.0)
        assert not await sharing.exchange()
        assert book.samples(A) and book.pending() == 1
    finally:
        await store.close()


async def test_a_runner_starts_knowing_what_its_peers_shared(
    sim: Sim, make_client: MakeClient
) -> None:
    settings = worker_settings(sim, {})
    store = MemoryStore()
    await store.share_latencies({ASSET: [20.0 + i / 10 for i in range(20)]}, [ASSET], 200)
    protection = Protection.on(store, settings.platform_config(), lease_ttl_s=30)
    runner = JobRunner(make_client(), settings, protection)
    try:
        assert runner.latencies.plan(ASSET).basis == Basis.FRESH
        await runner.start()
        assert runner.latencies.plan(ASSET).basis == Basis.LEARNED
        assert runner.latencies.next_poll(ASSET, None) > 19.0
    finally:
        await runner.close()
        await protection.close()


async def test_a_job_succeeds_while_the_store_fails_its_latencies(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    settings = worker_settings(sim, {"poll_share_s": 0.1})
    store = FlakyStore()
    protection = Protection.on(store, settings.platform_config(), lease_ttl_s=30)
    client = make_client()
    runner = JobRunner(client, settings, protection)
    job = SectionJob(
        job_id="t:s",
        task_id="t",
        section="s",
        asset_id=ASSET,
        record_json='{"a": 1}',
        tenant="acme",
        username="alice@example.com",
        access_token=token,
    )
    try:
        events = [event async for event in runner.run(job)]
        result = events[-1]
        assert isinstance(result, SectionResult) and result.success, result
        assert store.calls >= 1  # it tried, it failed, the job did not notice
    finally:
        await runner.close()
        await protection.close()


async def test_the_loop_runs_while_there_is_something_to_share() -> None:
    store = MemoryStore()
    busy = True
    book = LatencyBook(SETTINGS)
    sharing = LatencySharing(book, store, [A], SETTINGS, busy=lambda: busy)

    async def state() -> tuple[int, bool]:
        return book.pending(), sharing.idle()

    try:
        sharing.wake()
        book.observe(A, 1.0, 2.0)
        await assert_eventually(state, lambda s: s == (0, False), what="shared, still busy")
        assert len((await store.share_latencies({}, [A], 30))[A]) == 1
        busy = False
        await assert_eventually(state, lambda s: s == (0, True), what="idle")
        book.observe(A, 3.0, 4.0)
        await asyncio.sleep(0.3)
        assert await state() == (1, True)  # idle: nothing runs until a job wakes it
        sharing.wake()
        await assert_eventually(state, lambda s: s == (0, True), what="shared, idle again")
        assert len((await store.share_latencies({}, [A], 30))[A]) == 2
    finally:
        await sharing.close()


async def test_redis_keeps_a_window_in_a_kilobyte_for_a_week(redis_url: str) -> None:
    store = RedisStore(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        latencies = [5.0 + 40.0 * i / 199 for i in range(200)]  # 5-45 s
        windows = await store.share_latencies({A: latencies}, [A, B], 200)
        assert windows[A] == pytest.approx(latencies, abs=1e-3)
        assert windows[B] == []
        usage = await cast(Awaitable[int], client.memory_usage(latency_key(A)))
        assert usage <= 1100  # bytes: the module's docstring quotes it
        assert 0 < await client.ttl(latency_key(A)) <= LATENCY_TTL_S
        # An entry that is not whole milliseconds (written by something else) is skipped.
        await cast(Awaitable[int], client.rpush(latency_key(A), "not-a-latency"))
        assert (await store.share_latencies({}, [A], 200))[A] == pytest.approx(
            latencies[1:], abs=1e-3
        )
    finally:
        await client.aclose()
        await store.close()
