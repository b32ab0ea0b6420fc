"""Admission: a principal's submission rate and tasks in flight are bounded, each principal on
its own, a submission in progress holds its place, and a refusal says when to try again."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from common.errors import Overloaded
from common.principals import Principal
from orchestrator.admission import Admission, Throttled

ALICE = Principal(id="alice", tenant="t")
BOB = Principal(id="bob", tenant="t")


async def _submit(admission: Admission, caller: Principal) -> None:
    async with admission.admit(caller):
        pass


async def test_the_rate_is_counted_per_principal() -> None:
    admission = Admission(rate_per_minute=3, max_in_flight=100)
    for _ in range(3):
        await _submit(admission, ALICE)
    with pytest.raises(Throttled) as refused:
        await _submit(admission, ALICE)
    assert isinstance(refused.value, Overloaded)  # 429 through the error table
    assert 1 <= refused.value.retry_after_s <= 60
    assert "3 submissions a minute" in str(refused.value)
    await _submit(admission, BOB)  # another principal is not held back


async def test_tasks_in_flight_are_bounded_until_one_finishes() -> None:
    admission = Admission(rate_per_minute=1000, max_in_flight=2)
    admission.started("alice")
    admission.started("alice")
    with pytest.raises(Throttled, match="2 of your tasks are still running") as refused:
        await _submit(admission, ALICE)
    assert refused.value.retry_after_s > 0
    await _submit(admission, BOB)
    admission.finished("alice")
    await _submit(admission, ALICE)
    assert admission.in_flight("alice") == 1


async def test_submissions_in_progress_hold_their_places() -> None:
    """Concurrent submissions cannot all pass before any of them has started its task."""
    admission = Admission(rate_per_minute=1000, max_in_flight=2)
    async with contextlib.AsyncExitStack() as held:
        await held.enter_async_context(admission.admit(ALICE))
        await held.enter_async_context(admission.admit(ALICE))
        with pytest.raises(Throttled):
            await _submit(admission, ALICE)
    assert admission.in_flight("alice") == 0  # places given back when the submissions end


async def test_counts_of_finished_principals_are_forgotten() -> None:
    admission = Admission(rate_per_minute=10, max_in_flight=10)
    admission.started("alice")
    admission.finished("alice")
    await _submit(admission, ALICE)
    assert admission.in_flight("alice") == 0
    assert admission.principals_in_flight() == 0


async def test_concurrent_submissions_pass_no_further_than_the_places_left() -> None:
    admission = Admission(rate_per_minute=1000, max_in_flight=3)
    entered = asyncio.Event()
    passed = 0

    async def submit() -> None:
        nonlocal passed
        async with admission.admit(ALICE):
            passed += 1
            await entered.wait()  # every admitted submission is still being made

    tries = [asyncio.create_task(submit()) for _ in range(10)]
    await asyncio.sleep(0.05)
    entered.set()
    outcomes = await asyncio.gather(*tries, return_exceptions=True)
    assert passed == 3
    assert sum(isinstance(o, Throttled) for o in outcomes) == 7
    assert admission.in_flight("alice") == 0


async def test_a_submission_over_the_rate_gives_its_place_back() -> None:
    admission = Admission(rate_per_minute=1, max_in_flight=10)
    await _submit(admission, ALICE)
    with pytest.raises(Throttled, match="1 submissions a minute"):
        await _submit(admission, ALICE)
    assert admission.in_flight("alice") == 0
