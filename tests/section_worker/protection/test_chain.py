"""Every branch of the fallback chain, with a scripted platform call and the real quotas,
budgets and breakers on the memory store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY

from common.platform_config import PlatformConfig
from section_worker.platform_client import (
    PlatformRejected,
    PlatformUnavailable,
    Throttled,
    TokenRejected,
)
from section_worker.protection.breaker import State
from section_worker.protection.chain import (
    Answer,
    AnswerFailed,
    Attempt,
    Chain,
    ChainExhausted,
    ChainJob,
    Outcome,
)
from section_worker.protection.guard import Protection
from section_worker.protection.store import MemoryStore

Step = Answer | Exception


def config(**parts: Any) -> PlatformConfig:
    body: dict[str, Any] = {
        "sections": {"s": {"assets": ["a", "b", "c"], "fields": ["x"]}},
        "assets": {
            "*": {
                "cooldown_s": 60,
                "max_cost": 0.25,
                "breaker": {"failures": 2, "failure_ratio": 1.0, "open_s": 30},
            }
        },
    }
    body.update(parts)
    return PlatformConfig.model_validate(body)


class Platform:
    """A scripted call: per asset, the steps its attempts meet in turn (the last repeats)."""

    def __init__(self, script: dict[str, Sequence[Step]]) -> None:
        self.script = {asset: list(steps) for asset, steps in script.items()}
        self.calls: list[tuple[str, bool]] = []

    async def __call__(self, asset: str, resuming: bool) -> Answer:
        self.calls.append((asset, resuming))
        steps = self.script[asset]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, Exception):
            raise step
        return step

    def assets_called(self) -> list[str]:
        return [asset for asset, _ in self.calls]


OK = Answer("written", 0.1)


def make(cfg: PlatformConfig | None = None, **waits: float) -> tuple[Chain, Protection]:
    protection = Protection.on(MemoryStore(), cfg or config(), lease_ttl_s=30)
    options = {"fallback_wait_max_s": 5.0, "limit_wait_max_s": 0.2, **waits}
    return Chain(protection, **options), protection


def job(assets: Sequence[str] = ("a", "b", "c"), **fields: Any) -> ChainJob:
    values: dict[str, Any] = {
        "job_id": "task_1:s",
        "task_id": "task_1",
        "tenant": "acme",
        "assets": tuple(assets),
        "deadline": time.monotonic() + 30,
    }
    values.update(fields)
    return ChainJob(**values)


def path(attempts: list[Attempt]) -> list[tuple[str, Outcome]]:
    return [(a.asset_id, a.outcome) for a in attempts]


async def run(chain: Chain, platform: Platform, j: ChainJob | None = None) -> list[Attempt]:
    attempts: list[Attempt] = []
    await chain.run(j or job(), platform, attempts)
    return attempts


async def test_the_first_asset_answers_and_its_places_are_given_back() -> None:
    chain, p = make()
    attempts: list[Attempt] = []
    asset, answer = await chain.run(job(), Platform({"a": [OK]}), attempts)
    assert (asset, answer) == ("a", OK)
    assert path(attempts) == [("a", Outcome.ANSWERED)]
    assert attempts[0].cost == 0.1
    assert len(p.holds) == 0  # leases ended with the call


async def test_a_429_cools_the_asset_down_and_the_next_one_answers() -> None:
    chain, p = make()
    platform = Platform({"a": [Throttled("create conversation: 429")], "b": [OK]})
    attempts = await run(chain, platform)
    assert path(attempts) == [("a", Outcome.THROTTLED), ("b", Outcome.ANSWERED)]
    assert "cooling down for 60s" in attempts[0].reason
    assert 59 < (await p.store.asset_flags("a")).cooldown_s <= 60  # its cooldown_s
    assert p.breakers.breaker("a").current() is State.CLOSED  # a 429 is not a failure

    # The next job skips the cooling asset without calling it.
    again = Platform({"a": [OK], "b": [OK]})
    attempts = await run(chain, again)
    assert path(attempts) == [("a", Outcome.COOLING_DOWN), ("b", Outcome.ANSWERED)]
    assert again.assets_called() == ["b"]


async def test_a_429_with_retry_after_cools_down_for_that_long() -> None:
    chain, p = make()
    platform = Platform({"a": [Throttled("429", retry_after=12.0)], "b": [OK]})
    await run(chain, platform)
    assert 11 < (await p.store.asset_flags("a")).cooldown_s <= 12


async def test_a_short_retry_after_is_waited_out_before_moving_on() -> None:
    chain, _ = make(fallback_wait_max_s=5)
    platform = Platform({"a": [Throttled("429", retry_after=0.2)], "b": [OK]})
    started = time.monotonic()
    attempts = await run(chain, platform)
    assert time.monotonic() - started >= 0.2
    assert path(attempts) == [("a", Outcome.THROTTLED), ("b", Outcome.ANSWERED)]


async def test_the_last_asset_is_tried_once_more_after_a_short_retry_after() -> None:
    chain, _ = make()
    platform = Platform({"c": [Throttled("429", retry_after=0.05), OK]})
    attempts = await run(chain, platform, job(["c"]))
    assert path(attempts) == [("c", Outcome.THROTTLED), ("c", Outcome.ANSWERED)]


async def test_the_last_asset_is_not_retried_twice() -> None:
    chain, _ = make()
    platform = Platform({"c": [Throttled("429", retry_after=0.05)]})
    with pytest.raises(ChainExhausted):
        await run(chain, platform, job(["c"]))
    assert platform.assets_called() == ["c", "c"]


async def test_a_short_cool_down_of_the_last_asset_is_waited_out() -> None:
    chain, p = make(fallback_wait_max_s=5)
    await p.store.cool_down("c", 0.2)
    attempts = await run(chain, Platform({"c": [OK]}), job(["c"]))
    assert path(attempts) == [("c", Outcome.ANSWERED)]


async def test_a_long_cool_down_of_the_last_asset_exhausts_the_chain() -> None:
    chain, p = make(fallback_wait_max_s=5)
    await p.store.cool_down("c", 30)
    platform = Platform({"c": [OK]})
    with pytest.raises(ChainExhausted) as exhausted:
        await run(chain, platform, job(["c"]))
    assert platform.calls == []
    assert "c cooling_down: cooling down for" in str(exhausted.value)


async def test_a_cool_down_past_the_deadline_is_not_waited_for() -> None:
    chain, p = make(fallback_wait_max_s=5)
    await p.store.cool_down("c", 2)
    with pytest.raises(ChainExhausted):
        await run(chain, Platform({"c": [OK]}), job(["c"], deadline=time.monotonic() + 1))


async def test_failures_open_the_breaker_and_later_jobs_skip_the_asset() -> None:
    chain, p = make()
    platform = Platform({"a": [PlatformUnavailable("create conversation: 503")], "b": [OK]})
    for _ in range(2):
        attempts = await run(chain, platform)
        assert path(attempts) == [("a", Outcome.FAILED), ("b", Outcome.ANSWERED)]
    assert p.breakers.breaker("a").current() is State.OPEN
    assert (await p.store.asset_flags("a")).open_s > 0  # published

    attempts = await run(chain, platform)
    assert path(attempts) == [("a", Outcome.BREAKER_OPEN), ("b", Outcome.ANSWERED)]
    assert "circuit breaker open for" in attempts[0].reason
    assert platform.assets_called().count("a") == 2


async def test_an_asset_another_replica_published_open_is_skipped() -> None:
    chain, p = make()
    await p.store.publish_open("a", 30)
    platform = Platform({"a": [OK], "b": [OK]})
    attempts = await run(chain, platform)
    assert path(attempts) == [("a", Outcome.BREAKER_OPEN), ("b", Outcome.ANSWERED)]
    assert platform.assets_called() == ["b"]


async def test_a_failed_answer_counts_on_the_breaker() -> None:
    chain, p = make()
    platform = Platform({"a": [AnswerFailed("FAILED")], "b": [OK]})
    await run(chain, platform)
    await run(chain, platform)
    assert p.breakers.breaker("a").current() is State.OPEN


async def test_a_refused_request_moves_on_without_touching_the_breaker() -> None:
    chain, p = make()
    platform = Platform({"a": [PlatformRejected("create conversation: 400")], "b": [OK]})
    for _ in range(3):
        attempts = await run(chain, platform)
        assert path(attempts) == [("a", Outcome.REJECTED), ("b", Outcome.ANSWERED)]
    assert p.breakers.breaker("a").current() is State.CLOSED


async def test_a_rejected_token_stops_the_chain_at_once_and_frees_its_places() -> None:
    chain, p = make()
    platform = Platform({"a": [Throttled("429")], "b": [TokenRejected("401")], "c": [OK]})
    attempts: list[Attempt] = []
    with pytest.raises(TokenRejected):
        await chain.run(job(), platform, attempts)
    assert path(attempts) == [("a", Outcome.THROTTLED)]  # kept for the result
    assert platform.assets_called() == ["a", "b"]
    assert len(p.holds) == 0


async def test_an_exhausted_chain_names_every_attempts_reason() -> None:
    chain, _ = make()
    platform = Platform(
        {
            "a": [Throttled("create conversation: 429")],
            "b": [PlatformUnavailable("send prompt: 503")],
            "c": [AnswerFailed("the platform answered FAILED for asset c: no")],
        }
    )
    with pytest.raises(ChainExhausted) as exhausted:
        await run(chain, platform)
    message = str(exhausted.value)
    assert message.startswith("every asset of the chain failed (a throttled: create conversation")
    assert "b failed: send prompt: 503" in message
    assert "c failed: the platform answered FAILED for asset c: no" in message
    assert path(exhausted.value.attempts) == [
        ("a", Outcome.THROTTLED),
        ("b", Outcome.FAILED),
        ("c", Outcome.FAILED),
    ]


async def test_a_full_asset_is_waited_for_up_to_the_bound_then_skipped() -> None:
    cfg = config(assets={"a": {"concurrency": 1}})
    chain, p = make(cfg, limit_wait_max_s=0.2)
    held = await p.quotas.try_acquire("other", cfg.tenant("other"), "a", cfg.asset("a"))
    assert held is not None
    platform = Platform({"a": [OK], "b": [OK]})
    attempts = await run(chain, platform)
    assert path(attempts) == [("a", Outcome.LIMITED), ("b", Outcome.ANSWERED)]
    assert attempts[0].duration_s >= 0.2
    assert "rate or concurrency limit of asset a or tenant acme" in attempts[0].reason


async def test_the_last_asset_is_waited_for_until_a_place_frees() -> None:
    cfg = config(assets={"c": {"concurrency": 1}})
    chain, p = make(cfg, limit_wait_max_s=0.05)
    held = await p.quotas.try_acquire("other", cfg.tenant("other"), "c", cfg.asset("c"))
    assert held is not None

    async def free_soon() -> None:
        await asyncio.sleep(0.3)
        await p.quotas.release(held)

    freeing = asyncio.create_task(free_soon())
    attempts = await run(chain, Platform({"c": [OK]}), job(["c"]))
    await freeing
    assert path(attempts) == [("c", Outcome.ANSWERED)]


async def test_a_tenants_rate_limit_holds_its_jobs_back() -> None:
    cfg = config(tenants={"acme": {"rpm": 1}})
    chain, _ = make(cfg, limit_wait_max_s=0.05)
    await run(chain, Platform({"a": [OK]}))
    with pytest.raises(ChainExhausted) as exhausted:
        await run(chain, Platform({"a": [OK]}), job(deadline=time.monotonic() + 0.3))
    assert {a.outcome for a in exhausted.value.attempts} == {Outcome.LIMITED}


async def test_a_spent_budget_fails_with_a_clear_message() -> None:
    cfg = config(tenants={"acme": {"budget_day": 5.0}})
    chain, p = make(cfg)
    limits = p.budgets.limits(cfg.tenant("acme"))
    await p.store.settle("acme", "older", "x", 4_980_000, limits)
    with pytest.raises(ChainExhausted) as exhausted:
        await run(chain, Platform({"a": [OK], "b": [OK], "c": [OK]}))
    reason = exhausted.value.attempts[0].reason
    assert reason == "tenant acme's daily budget of $5.00 is spent ($4.98 spent, $0.00 reserved)"
    assert {a.outcome for a in exhausted.value.attempts} == {Outcome.BUDGET}


async def test_a_cheaper_asset_down_the_chain_may_still_fit_the_budget() -> None:
    cfg = config(
        assets={"a": {"max_cost": 0.5}, "b": {"max_cost": 0.05}},
        tenants={"*": {"budget_day": 0.1}},
    )
    chain, _ = make(cfg)
    attempts = await run(chain, Platform({"a": [OK], "b": [Answer("w", 0.04)]}))
    assert path(attempts) == [("a", Outcome.BUDGET), ("b", Outcome.ANSWERED)]


async def test_the_reservation_settles_to_the_real_cost() -> None:
    cfg = config(tenants={"acme": {"budget_day": 10.0, "task_ceiling": 1.0}})
    chain, p = make(cfg)
    await run(chain, Platform({"a": [Answer("w", 0.07)]}))
    limits = p.budgets.limits(cfg.tenant("acme"))
    assert await p.store.spent("acme", "task_1", limits) == {
        "day": 70_000,
        "month": 70_000,
        "task": 70_000,
        "reserved": 0,
    }


async def test_a_failed_attempt_releases_its_reservation_and_costs_nothing() -> None:
    cfg = config(tenants={"acme": {"budget_day": 10.0}})
    chain, p = make(cfg)
    with pytest.raises(ChainExhausted):
        await run(chain, Platform({"a": [PlatformUnavailable("503")]}), job(["a"]))
    limits = p.budgets.limits(cfg.tenant("acme"))
    assert await p.store.spent("acme", "task_1", limits) == {
        "day": 0,
        "month": 0,
        "task": 0,
        "reserved": 0,
    }


async def test_with_on_budget_wait_a_job_waits_for_reservations_to_settle() -> None:
    cfg = config(tenants={"acme": {"budget_day": 0.3, "on_budget": "wait"}})
    chain, p = make(cfg)
    tenant = cfg.tenant("acme")
    other = await p.budgets.reserve("acme", tenant, "task_0", 0.25, time.monotonic())

    async def settle_soon() -> None:
        await asyncio.sleep(0.3)
        await p.budgets.settle(other, 0.02)

    settling = asyncio.create_task(settle_soon())
    attempts = await run(chain, Platform({"a": [OK]}))
    await settling
    assert path(attempts) == [("a", Outcome.ANSWERED)]
    assert attempts[0].duration_s >= 0.25


async def test_with_on_budget_wait_the_wait_ends_at_the_deadline() -> None:
    cfg = config(tenants={"acme": {"budget_day": 0.1, "on_budget": "wait"}})
    chain, _ = make(cfg)
    with pytest.raises(ChainExhausted) as exhausted:
        await run(chain, Platform({"a": [OK]}), job(["a"], deadline=time.monotonic() + 0.3))
    assert "waited for it until the job's timeout" in exhausted.value.attempts[0].reason


async def test_a_resumed_job_polls_its_asset_even_while_it_cools_down() -> None:
    chain, p = make()
    await p.store.cool_down("b", 60)
    await p.store.publish_open("b", 60)
    platform = Platform({"b": [OK]})
    attempts = await run(chain, platform, job(resume_asset="b"))
    assert platform.calls == [("b", True)]
    assert path(attempts) == [("b", Outcome.ANSWERED)]


async def test_a_resumed_attempt_that_fails_goes_on_after_its_asset() -> None:
    chain, _ = make()
    platform = Platform({"a": [OK], "b": [PlatformUnavailable("poll: 503")], "c": [OK]})
    attempts = await run(chain, platform, job(resume_asset="b"))
    assert platform.calls == [("b", True), ("c", False)]
    assert path(attempts) == [("b", Outcome.FAILED), ("c", Outcome.ANSWERED)]


async def test_a_resumed_conversation_on_its_only_asset_is_resumed_again_after_a_429() -> None:
    chain, _ = make()
    platform = Platform({"c": [Throttled("send prompt: 429", retry_after=0.05), OK]})
    attempts = await run(chain, platform, job(["c"], resume_asset="c"))
    # Both times in the conversation the job resumes: never a new one for the same prompt.
    assert platform.calls == [("c", True), ("c", True)]
    assert path(attempts) == [("c", Outcome.THROTTLED), ("c", Outcome.ANSWERED)]


async def test_a_resume_asset_outside_the_chain_is_polled_first() -> None:
    chain, _ = make()
    platform = Platform({"z": [PlatformUnavailable("poll: 503")], "a": [OK]})
    attempts = await run(chain, platform, job(resume_asset="z"))
    assert platform.calls == [("z", True), ("a", False)]
    assert path(attempts) == [("z", Outcome.FAILED), ("a", Outcome.ANSWERED)]


async def test_a_cancelled_call_gives_its_places_and_reservation_back() -> None:
    cfg = config(tenants={"acme": {"budget_day": 10.0}})
    chain, p = make(cfg)
    started = asyncio.Event()

    async def hang(asset: str, resuming: bool) -> Answer:
        started.set()
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    running = asyncio.create_task(chain.run(job(), hang, []))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert len(p.holds) == 0
    limits = p.budgets.limits(cfg.tenant("acme"))
    assert (await p.store.spent("acme", "task_1", limits))["reserved"] == 0
    assert p.breakers.breaker("a").probes == 0


async def test_the_metrics_count_attempts_fallbacks_cool_downs_and_spend() -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "throttled": value("wealthai_platform_requests_total", asset="m-a", outcome="throttled"),
        "answered": value("wealthai_platform_requests_total", asset="m-b", outcome="answered"),
        "fallback": value("wealthai_fallbacks_total", from_asset="m-a", to_asset="m-b"),
        "cooldown": value("wealthai_cooldowns_total", asset="m-a"),
        "spend": value("wealthai_tenant_spend_usd_total", tenant="metered"),
    }
    cfg = config(tenants={"metered": {"budget_day": 100.0}})
    chain, _ = make(cfg)
    platform = Platform({"m-a": [Throttled("429")], "m-b": [Answer("w", 0.25)]})
    await run(chain, platform, job(["m-a", "m-b"], tenant="metered"))

    assert value("wealthai_platform_requests_total", asset="m-a", outcome="throttled") == (
        before["throttled"] + 1
    )
    assert value("wealthai_platform_requests_total", asset="m-b", outcome="answered") == (
        before["answered"] + 1
    )
    assert value("wealthai_fallbacks_total", from_asset="m-a", to_asset="m-b") == (
        before["fallback"] + 1
    )
    assert value("wealthai_cooldowns_total", asset="m-a") == before["cooldown"] + 1
    assert value("wealthai_tenant_spend_usd_total", tenant="metered") == pytest.approx(
        before["spend"] + 0.25
    )
    assert value("wealthai_tenant_reserved_usd", tenant="metered") == pytest.approx(0)
    assert value("wealthai_breaker_state", asset="m-a") == 0
