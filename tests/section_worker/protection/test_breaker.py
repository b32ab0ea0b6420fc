"""Every transition of an asset's circuit breaker, on a fake clock, and its publication to
the other replicas through the store."""

from __future__ import annotations

from common.platform_config import BreakerConfig
from section_worker.protection.breaker import Breaker, BreakerBook, State
from section_worker.protection.store import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **cfg: float) -> Breaker:
    values = {"failures": 3, "failure_ratio": 0.5, "window_s": 10, "min_calls": 4, "open_s": 5}
    values.update(cfg)
    return Breaker("a", BreakerConfig.model_validate(values), clock)


def test_n_failures_within_the_window_open_it() -> None:
    clock = Clock()
    b = breaker(clock, failure_ratio=1.0)
    assert not b.failure()
    assert not b.failure()
    assert b.failure()  # the third
    assert b.current() is State.OPEN
    assert not b.allow()


def test_failures_outside_the_window_do_not_count() -> None:
    clock = Clock()
    b = breaker(clock, failure_ratio=1.0)
    b.failure()
    b.failure()
    clock.now += 11
    assert not b.failure()
    assert b.current() is State.CLOSED


def test_a_failure_ratio_opens_it_only_with_min_calls() -> None:
    clock = Clock()
    b = breaker(clock, failures=100, failure_ratio=0.5, min_calls=4)
    assert not b.failure()  # 1 of 1 failed, but fewer than min_calls
    b.success()
    assert not b.failure()  # 2 of 3
    assert b.current() is State.CLOSED
    assert b.failure()  # 3 of 4 >= 0.5
    assert b.current() is State.OPEN


def test_successes_keep_the_ratio_under_the_threshold() -> None:
    clock = Clock()
    b = breaker(clock, failures=100, failure_ratio=0.5, min_calls=4)
    for _ in range(3):
        b.success()
    b.failure()
    assert b.current() is State.CLOSED  # 1 of 4


def test_after_open_s_it_is_half_open_with_a_bounded_number_of_probes() -> None:
    clock = Clock()
    b = breaker(clock, half_open_probes=2, failure_ratio=1.0)
    for _ in range(3):
        b.failure()
    clock.now += 4.9
    assert not b.allow()
    assert 0 < b.seconds_open() <= 0.1 + 1e-9
    clock.now += 0.1
    assert b.current() is State.HALF_OPEN
    assert b.allow() and b.allow()
    assert not b.allow()  # two probes in flight
    b.abandon()  # one never reached the asset
    assert b.allow()


def test_a_probe_success_closes_it_and_a_probe_failure_opens_it_again() -> None:
    clock = Clock()
    b = breaker(clock, failure_ratio=1.0)
    for _ in range(3):
        b.failure()
    clock.now += 5
    assert b.allow()
    assert b.failure()
    assert b.current() is State.OPEN
    assert b.seconds_open() == 5
    clock.now += 5
    assert b.allow()
    assert b.success()
    assert b.current() is State.CLOSED
    assert not b.failure() and not b.failure()  # the old failures were forgotten


def test_an_open_breaker_ignores_late_results() -> None:
    clock = Clock()
    b = breaker(clock, failure_ratio=1.0)
    for _ in range(3):
        b.failure()
    assert not b.failure()  # already open: no second opening
    assert not b.success()
    assert b.current() is State.OPEN


def test_force_open_keeps_the_longer_opening() -> None:
    clock = Clock()
    b = breaker(clock)
    b.force_open(2)
    assert b.current() is State.OPEN and b.seconds_open() == 2
    b.force_open(1)
    assert b.seconds_open() == 2
    b.force_open(7)
    assert b.seconds_open() == 7


async def test_an_opening_is_published_and_another_replica_skips_the_asset() -> None:
    store = MemoryStore()
    cfg = BreakerConfig(failures=2, failure_ratio=1.0, open_s=30)
    here = BreakerBook(store, lambda _: cfg)
    there = BreakerBook(store, lambda _: cfg)
    await here.failure("a")
    await here.failure("a")
    flags = await store.asset_flags("a")
    assert 29 < flags.open_s <= 30

    there.observe_published("a", flags.open_s)
    assert there.breaker("a").current() is State.OPEN
    assert not there.breaker("a").allow()
    there.observe_published("b", 0)
    assert there.breaker("b").allow()


async def test_a_probe_that_closes_the_breaker_clears_the_published_state() -> None:
    store = MemoryStore()
    clock = Clock()
    cfg = BreakerConfig(failures=1, failure_ratio=1.0, open_s=5)
    book = BreakerBook(store, lambda _: cfg, clock)
    await book.failure("a")
    assert (await store.asset_flags("a")).open_s > 0
    clock.now += 5
    assert book.breaker("a").allow()
    await book.success("a")
    assert (await store.asset_flags("a")).open_s == 0
    assert book.breaker("a").current() is State.CLOSED
